"""`chaosrun verify --reboot` on a real lab VM: every target reboots, chaosrun waits for a
new boot id, then grades. A fault that lives only until the next boot (nginx stopped but
still enabled) is gone after it, one that is on disk (nginx disabled) stays; a target that
does not come back in time scores 0 with the reason, and the run does not crash."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path

from lab_support import LabVm, chaosrun

SCENARIO = """version: 1
name: lab-reboot
monitor: {{ callback: tunnel }}
targets:
  target: {{ host: 127.0.0.1 }}
steps:
  - {{ id: break_web, target: target, chaos: stop_service, with: {{ service: nginx, action: {action} }} }}
verify:
  - {{ id: web_up, target: target, probe: service_active, with: {{ service: nginx }}, expect: result.active, points: 3 }}
"""


def _wait_until_back(lab_vm: LabVm, before: str) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            words = lab_vm.ssh(
                "systemctl is-system-running --wait >/dev/null; cat /proc/sys/kernel/random/boot_id", timeout=60
            ).stdout.split()
            if words and words[-1] != before:
                return
    raise AssertionError("the VM did not come back within 600 s")


def _boot_id(lab_vm: LabVm) -> str:
    return lab_vm.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()


def _run(lab_vm: LabVm, tmp_path: Path, scenario: Path, *args: str) -> dict:  # type: ignore[type-arg]
    done = chaosrun(
        *args[:1], str(scenario), "-i", str(lab_vm.inventory), "--plain", "--audit", "audit", "--format", "json",
        *args[1:], cwd=tmp_path, config=tmp_path / "config", timeout=900,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _audit(tmp_path: Path) -> list[dict]:  # type: ignore[type-arg]
    newest = max((tmp_path / "audit").glob("*-verify.jsonl"), key=lambda p: p.stat().st_mtime)
    return [json.loads(line) for line in newest.read_text().splitlines()]


def test_verify_reboot_grades_after_a_real_reboot_a_stop_does_not_survive_a_disable_does(
    lab_vm: LabVm, tmp_path: Path
) -> None:
    try:
        stopped = tmp_path / "stop.yml"
        stopped.write_text(SCENARIO.format(action="stop"))
        assert _run(lab_vm, tmp_path, stopped, "run")["ok"]
        assert _run(lab_vm, tmp_path, stopped, "verify")["points"] == 0, "stopped now"
        before = _boot_id(lab_vm)
        report = _run(lab_vm, tmp_path, stopped, "verify", "--reboot")
        assert report["points"] == 3, "a plain stop does not survive a reboot: nginx is back"
        records = _audit(tmp_path)
        (reboot,) = [r for r in records if r["event"] == "reboot"]
        (back,) = [r for r in records if r["event"] == "rebooted"]
        assert reboot["boot_id"] == before and back["boot_id"] not in ("", before)
        assert _boot_id(lab_vm) == back["boot_id"], "the grading ran after the reboot"

        disabled = tmp_path / "disable.yml"
        disabled.write_text(SCENARIO.format(action="disable"))
        assert _run(lab_vm, tmp_path, disabled, "run")["ok"]
        report = _run(lab_vm, tmp_path, disabled, "verify", "--reboot")
        step = report["environments"][0]["steps"][0]
        assert (report["points"], step["result"]["enabled"]) == (0, "disabled"), "a disable survives it"
    finally:
        lab_vm.ssh("systemctl enable --now nginx")


def test_a_target_that_is_not_back_in_time_scores_zero_with_the_reason(lab_vm: LabVm, tmp_path: Path) -> None:
    scenario = tmp_path / "s.yml"
    scenario.write_text(SCENARIO.format(action="stop"))
    before = _boot_id(lab_vm)
    try:
        report = _run(lab_vm, tmp_path, scenario, "verify", "--reboot", "--boot-timeout", "3s")
        (step,) = report["environments"][0]["steps"]
        assert (step["status"], step["points"]) == ("failed", 0)
        assert step["reason"].endswith(" did not come back after reboot within 3 s"), step
        assert [r["event"] for r in _audit(tmp_path) if r["event"].startswith("reboot")] == ["reboot", "reboot_failed"]
    finally:
        _wait_until_back(lab_vm, before)
