"""The exam's life on a real Debian VM: the monitor killed (``kill -9``) in the middle of a
run, ``run --resume`` finishing it, ``verify --watch`` recording a repair made during the
watch with its time, and ``restore`` leaving nothing of ours: no squatter, no file, no
binary in the upload folder, no process running a deleted binary.

Network rule: the only addresses used are the VM's 127.0.0.N on this machine.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_support import LabVm, chaosrun, chaosrun_argv, own_lab

from chaosrun.lab import Image

pytestmark = [pytest.mark.lab, pytest.mark.e2e]

SCENARIO = """version: 1
name: lab-lifecycle
monitor: { callback: tunnel }
targets:
  target: { host: 127.0.0.1 }
steps:
  - { id: stop_web, target: target, chaos: stop_service, with: { service: nginx } }
  - { id: squat, target: target, chaos: occupy_port, with: { port: 8081, process_name: httpd-worker } }
  - { id: fill, target: target, chaos: fill_disk, with: { path: /var/tmp/exam-fill.bin, size_mb: 16 } }
  - { id: pause, target: target, probe: command, with: { command: "sleep 6" } }
verify:
  - { id: web, target: target, probe: service_active, with: { service: nginx }, expect: result.active, points: 2 }
"""

#: What of ours a machine could hold: the upload folder's binaries, the fill file, a process
#: on 8081, processes whose executable was deleted (our modules run from a deleted file).
OURS = (
    "ls /tmp | grep -c '^tmp\\.' || true; test -e /var/tmp/exam-fill.bin && echo fill || true; "
    "ss -Hltn 'sport = :8081' | wc -l; "
    "for e in /proc/[0-9]*/exe; do readlink $e; done 2>/dev/null | grep -c '(deleted)' || true"
)


@pytest.fixture(scope="module")
def vm(lab_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabVm]:
    with own_lab(lab_image, tmp_path_factory.mktemp("lifecycle-lab")) as lab:
        yield lab


def _records(path: Path) -> list[dict[str, object]]:
    out = []
    for line in path.read_bytes().split(b"\n"):
        try:
            out.append(json.loads(line))
        except ValueError:
            break
    return out


def test_killed_resumed_watched_and_restored_on_a_real_machine(vm: LabVm, tmp_path: Path) -> None:
    scenario = tmp_path / "lifecycle.yml"
    scenario.write_text(SCENARIO)
    before = vm.ssh(OURS).stdout.split()
    assert vm.ssh("systemctl is-active nginx").stdout.strip() == "active"
    common = ("-i", str(vm.inventory), "--plain", "--audit", "audit")
    env = {k: v for k, v in os.environ.items() if k != "CHAOSRUN_KEY"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")

    # kill -9 while the last step runs on the VM (its deploy record is written before the upload)
    monitor = subprocess.Popen([*chaosrun_argv(), "run", str(scenario), *common], cwd=tmp_path, env=env)
    audit, deadline, log = tmp_path / "audit", time.monotonic() + 300, None
    while log is None:
        assert time.monotonic() < deadline and monitor.poll() is None, "the run ended before the moment to kill it"
        for path in audit.glob("*.jsonl") if audit.exists() else ():
            if any(r.get("event") == "deploy" and r.get("step") == "pause" for r in _records(path)):
                log = path
        time.sleep(0.05)
    time.sleep(2)  # the upload done, its `sleep 6` under way
    os.kill(monitor.pid, signal.SIGKILL)
    monitor.wait()
    assert vm.ssh("systemctl is-active nginx || true").stdout.strip() == "inactive"

    told = chaosrun("audit", "verify", str(log), cwd=tmp_path, config=tmp_path / "config")
    assert told.returncode != 0 and "pause" in told.stdout, told.stdout + told.stderr

    resumed = chaosrun("run", str(scenario), *common, "--resume", str(log), "--format", "json", cwd=tmp_path,
                       config=tmp_path / "config")  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    (renv,) = json.loads(resumed.stdout)["environments"]
    assert [s["status"] for s in renv["steps"]] == ["ok"] * 4, renv["steps"]
    (second,) = set(audit.glob("*.jsonl")) - {log}
    started = [r["step"] for r in _records(second) if r.get("event") == "step_start"]
    assert [s for s in started if not str(s).startswith("guard:")] == ["pause"]  # the others ended before the kill

    # a watch; the candidate starts nginx during it
    watch = subprocess.Popen(
        [*chaosrun_argv(), "verify", str(scenario), *common, "--watch", "5s", "--until", "45s", "--format", "json"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert watch.stderr is not None
    for line in watch.stderr:
        if "watch pass 1:" in line:
            assert "0 of 1 probes pass" in line, line
            break
    repaired = time.time()
    assert vm.ssh("systemctl start nginx").returncode == 0
    out, err = watch.communicate(timeout=300)
    assert watch.returncode == 0, out + err
    report = json.loads(out)
    (step,) = report["environments"][0]["steps"]
    (record,) = [v for k, v in report["watch"]["steps"].items() if k.endswith("/web")]
    assert step["time_to_fix"] is not None and step["time_to_fix"] > 0, step
    assert record["first_passed_at"] is not None and record["passing"] and not record["regressed"], record
    assert report["watch"]["passes"] >= 3

    restored = chaosrun("restore", str(scenario), "-i", str(vm.inventory), "--audit", "audit", "--format", "json",
                        cwd=tmp_path, config=tmp_path / "config")  # fmt: skip
    assert restored.returncode == 0, restored.stdout + restored.stderr
    (machine,) = json.loads(restored.stdout)["machines"]
    assert machine["ok"] and machine["left"] == [], machine
    assert vm.ssh(OURS).stdout.split() == before
    assert vm.ssh("systemctl is-active nginx").stdout.strip() == "active"
    first = dt.datetime.fromisoformat(record["first_passed_at"]).timestamp()
    assert first >= repaired - 1, (first, repaired)  # seen passing after the repair, not before
