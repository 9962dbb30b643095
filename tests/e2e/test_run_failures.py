"""The runtime against a real sshd when things go wrong: every failure is a clear step
status, is in the audit log, and leaves no binary on the target and no open port (the
``exam`` fixture checks those two after every test). The runner's own semantics (needs,
when, retries, one_of...) are tested without SSH in tests/runtime/test_runner.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from e2e_support import REPO, Exam, free_port, listening_ports

from chaosrun.run.audit import verify_file


def scenario(exam: Exam, steps: str, *, monitor: str = "", name: str = "s.yaml") -> Path:
    path = exam.workdir / name
    path.write_text(
        "version: 1\nname: failures\ntargets:\n  web: {host: 127.0.0.1}\n"
        + (f"monitor:\n{monitor}\n" if monitor else "")
        + "steps:\n"
        + steps
    )
    return path


def test_a_module_that_fails_ends_failed_with_its_reason(exam: Exam) -> None:
    s = scenario(exam, "  - {id: kill_ghost, target: web, chaos: kill_process, with: {name: no-such-proc-xyz}}\n")
    r = exam.chaosrun("run", s, "-i", exam.inventory(["web"]))
    assert r.code == 1
    end = r.step_end("kill_ghost")
    assert end["status"] == "failed"
    assert "no process" in end["reason"]
    assert len(r.events("cleanup")) == 1
    assert verify_file(r.audit_path).ok  # type: ignore[arg-type]


def test_a_step_timeout_stops_the_remote_binary_and_cleans_up(exam: Exam) -> None:
    s = scenario(
        exam,
        "  - {id: slow, target: web, probe: command, timeout: 1500ms, with: {command: 'sleep 30', timeout_ms: 60000}}\n",
    )
    t0 = time.monotonic()
    r = exam.chaosrun("run", s, "-i", exam.inventory(["web"]))
    assert time.monotonic() - t0 < 15
    assert r.code == 1
    end = r.step_end("slow")
    assert end["status"] == "timeout", end
    assert r.events("cleanup")
    assert r.events("run_end")[0]["ok"] is False


def test_a_binary_killed_mid_run_is_a_failed_step(exam: Exam) -> None:
    # The probe's shell kills its parent: the module binary itself.
    s = scenario(exam, "  - {id: crash, target: web, probe: command, with: {command: 'kill -9 $PPID; sleep 5'}}\n")
    r = exam.chaosrun("run", s, "-i", exam.inventory(["web"]))
    end = r.step_end("crash")
    assert end["status"] == "failed"
    assert "signal" in end["reason"] or "without a result" in end["reason"], end


def test_an_unreachable_host_fails_its_steps_quickly_and_names_the_host(exam: Exam) -> None:
    port = free_port()
    s = scenario(exam, "  - {id: one, target: web, probe: command, with: {command: 'true'}}\n")
    r = exam.chaosrun("run", s, "-i", exam.inventory(["web"], port=port))
    end = r.step_end("one")
    assert end["status"] == "failed"
    assert f"127.0.0.1:{port}" in end["reason"]
    assert r.events("connect_failed")
    assert not r.events("deploy")


def test_a_wrong_host_key_is_refused_before_anything_is_deployed(exam: Exam, tmp_path: Path) -> None:
    other = tmp_path / "known_hosts"
    # a well-formed known_hosts line for the right address, but someone else's key
    other.write_text(
        f"[127.0.0.1]:{exam.sshd.port} ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
    )
    s = scenario(exam, "  - {id: one, target: web, probe: command, with: {command: 'true'}}\n")
    r = exam.chaosrun("run", s, "-i", exam.inventory(["web"], known_hosts=str(other)))
    end = r.step_end("one")
    assert end["status"] == "failed"
    assert "host key" in end["reason"].lower()
    assert not r.events("deploy")


def test_insecure_targets_connect_without_host_key_and_say_so_in_the_audit(exam: Exam, tmp_path: Path) -> None:
    s = scenario(exam, "  - {id: one, target: web, probe: command, with: {command: 'true'}}\n")
    r = exam.chaosrun("run", s, "-i", exam.inventory(["web"], known_hosts=str(tmp_path / "none"), insecure=True))
    assert r.code == 0, r.stdout + r.stderr
    assert r.events("connect")[0]["insecure"] is True


def test_a_firewalled_monitor_fails_the_step_with_a_reason_not_a_hang(exam: Exam) -> None:
    # The binary is told to dial a port where nothing listens (advertise differs from bind).
    s = scenario(
        exam,
        "  - {id: one, target: web, probe: command, with: {command: 'true'}}\n",
        monitor="  bind: 127.0.0.1\n  advertise: 127.0.0.9\n  callback_timeout: 5s",
    )
    t0 = time.monotonic()
    r = exam.chaosrun("run", s, "-i", exam.inventory(["web"]))
    assert time.monotonic() - t0 < 20
    end = r.step_end("one")
    assert end["status"] == "failed"
    assert "call back" in end["reason"] or "callback" in end["reason"], end


def test_ctrl_c_mid_run_cleans_every_target_and_closes_the_audit_log(exam: Exam) -> None:
    s = scenario(
        exam,
        "  - {id: long_a, target: web, probe: command, with: {command: 'sleep 60', timeout_ms: 120000}}\n"
        "  - {id: long_b, target: web, probe: command, needs: [], with: {command: 'sleep 60', timeout_ms: 120000}}\n",
    )
    audit = exam.workdir / "audit"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chaosrun",
            "run",
            str(s),
            "-i",
            str(exam.inventory(["web"])),
            "--audit",
            str(audit),
            "--plain",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until both binaries run (their listeners are up)
        logs = list(audit.glob("*.jsonl"))
        if logs and logs[0].read_text().count('"event":"deploy"') == 2:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError("steps never started")
    assert len(listening_ports(proc.pid)) == 2
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode()
    records = [json.loads(x) for x in logs[0].read_text().splitlines()]
    assert records[-1]["event"] == "seal"
    assert records[-2]["event"] == "run_end" and records[-2]["interrupted"] is True
    assert sum(1 for r in records if r["event"] == "cleanup") == 2
    ends = {r["step"]: r for r in records if r["event"] == "step_end"}
    assert {k: (v["status"], v["reason"]) for k, v in ends.items()} == {
        "long_a": ("failed", "interrupted"),
        "long_b": ("failed", "interrupted"),
    }
    assert records[-2]["environments"]["cand-001"]["ok"] is False
    assert verify_file(logs[0]).ok
