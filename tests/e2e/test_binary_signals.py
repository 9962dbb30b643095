"""The module binary stopped or killed mid-step on a real sshd: never just "timed out" or
"failed", always an integrity signal that makes the environment suspect."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_support import Exam

from chaosrun.run.audit import verify_file


def scenario(exam: Exam, step: str, callback: str) -> Path:
    path = exam.workdir / f"s-{callback}.yaml"
    path.write_text(
        f"version: 1\nname: signals\ntargets:\n  web: {{host: 127.0.0.1}}\nmonitor: {{callback: {callback}}}\n"
        f"steps:\n  - {step}\n"
    )
    return path


@pytest.mark.parametrize("callback", ["direct", "tunnel"])
def test_a_binary_stopped_mid_step_is_flagged_and_terminated(exam: Exam, callback: str) -> None:
    step = "{id: held, target: web, probe: command, timeout: 2s, with: {command: 'kill -STOP $PPID; sleep 30'}}"
    r = exam.chaosrun("run", scenario(exam, step, callback), "-i", exam.inventory(["web"]), "--plain")
    end = r.step_end("held")
    assert end["status"] == "timeout"
    assert [(s["step"], s["signal"]) for s in r.events("signal")] == [("held", "binary_stopped")]
    (exec_record,) = r.events("exec")
    assert exec_record["ended"] == "terminated by the monitor"
    assert r.events("run_end")[0]["environments"]["cand-001"]["integrity"] == "suspect"
    assert verify_file(r.audit_path).ok  # type: ignore[arg-type]


@pytest.mark.parametrize("callback", ["direct", "tunnel"])
def test_a_binary_killed_mid_step_is_flagged(exam: Exam, callback: str) -> None:
    step = "{id: crash, target: web, probe: command, with: {command: 'kill -KILL $PPID; sleep 5'}}"
    r = exam.chaosrun("run", scenario(exam, step, callback), "-i", exam.inventory(["web"]), "--plain")
    assert r.step_end("crash")["status"] == "failed"
    assert ("crash", "binary_killed") in [(s["step"], s["signal"]) for s in r.events("signal")]
    (exec_record,) = r.events("exec")
    assert exec_record["signal"] == "KILL"
