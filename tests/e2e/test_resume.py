"""A monitor killed mid-run (``kill -9``), against the test sshd: the unsealed log says where
it stopped, ``run --resume`` finishes the run without running an ended step again (the step
in flight is applied again and finds its fault in place), and ``restore`` puts the machine
back from both logs, the in-flight step included: nothing of ours is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from e2e_support import Exam, free_port
from test_restore import _lay_out, _our_processes, _port_taken, snapshot

SCENARIO = """\
version: 1
name: resume
targets:
  web: {host: 127.0.0.1}
vars:
  root: "%(root)s"
  port: %(port)d
steps:
  - {id: perms, target: web, chaos: chmod, with: {path: "${vars.root}/www/index.html", mode: "0000"}}
  - {id: conf, target: web, chaos: write_file, with: {path: "${vars.root}/etc/app.conf", content: "broken\\n"}}
  - {id: squat, target: web, chaos: occupy_port, with: {port: "${vars.port}", address: 127.0.0.1, process_name: "httpd"}}
  - {id: inodes, target: web, chaos: exhaust_inodes, with: {dir: "${vars.root}/spool/sess", count: 150000}}
  - {id: disk, target: web, chaos: fill_disk, with: {path: "${vars.root}/var/big.bin", size_mb: 2}}
  - id: lock
    target: web
    chaos: lock_user
    with: {user: alice, action: lock, shadow_file: "${vars.root}/etc/shadow", passwd_file: "${vars.root}/etc/passwd"}
"""


def _records(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_bytes().split(b"\n"):
        try:
            out.append(json.loads(line))
        except ValueError:
            break
    return out


def _kill_when(proc: subprocess.Popen[bytes], audit: Path, seen: Any, timeout: float = 120) -> Path:
    """SIGKILL ``proc`` as soon as its audit log has a record ``seen`` accepts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in audit.glob("*.jsonl"):
            if any(seen(r) for r in _records(path)):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return path
        assert proc.poll() is None, "the run ended before the moment to kill it"
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    raise AssertionError("the moment to kill never came")


def test_a_run_killed_mid_step_is_resumed_and_then_restored_leaving_nothing_of_ours(exam: Exam) -> None:
    root = exam.sandbox
    _lay_out(root)
    before = snapshot(root)
    port = free_port()
    scenario = exam.workdir / "resume.yml"
    scenario.write_text(SCENARIO % {"root": root, "port": port})
    inventory = exam.inventory(["web"])
    audit = exam.workdir / "audit"
    monitor = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chaosrun",
            "run",
            str(scenario),
            "-i",
            str(inventory),
            "--plain",
            "--audit",
            str(audit),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    exam.processes.append(monitor)
    # killed while exhaust_inodes fills its folder: its change is streamed, its result not yet in
    log = _kill_when(monitor, audit, lambda r: r.get("event") == "change" and r.get("step") == "inodes")
    records = _records(log)
    assert not any(r.get("event") == "result" and r.get("step") == "inodes" for r in records)
    assert _port_taken(port), "the squatter outlives the monitor"

    said = exam.chaosrun("audit", "verify", log)
    assert said.code == 1
    assert (
        "log ends without its signed seal record" in said.stdout and "steps in flight: cand-001/inodes" in said.stdout
    )

    resumed = exam.chaosrun("run", scenario, "-i", inventory, "--plain", "--resume", log)
    assert resumed.code == 0, resumed.stdout + resumed.stderr
    assert f"resuming run {log.stem} from {log}: 3 step(s) that ended there are not run again" in resumed.stderr
    assert resumed.audit_path == audit / f"{log.stem}-resume.jsonl"
    assert resumed.audit[0]["resumes"] == log.stem and resumed.audit[0]["seed"] == records[0]["seed"]
    for step in ("perms", "conf", "squat"):
        assert resumed.step_end(step)["done_in"] == log.stem and resumed.step_end(step)["status"] == "ok"
    assert {r["step"] for r in resumed.events("deploy")} == {"inodes", "disk", "lock"}, "an ended step ran again"
    (inodes,) = [r for r in resumed.events("result") if r["step"] == "inodes"]
    assert inodes["ok"] is True
    assert len(list((root / "spool/sess").iterdir())) == 150000, "the fault was not doubled"
    assert exam.chaosrun("audit", "verify", resumed.audit_path).code == 0

    binaries = {r["sha256"] for r in [*records, *resumed.audit] if r.get("event") == "deploy"}
    done = exam.chaosrun("restore", scenario, "-i", inventory, "--audit", audit, "--format", "json")
    assert done.code == 0, done.stdout + done.stderr
    (machine,) = json.loads(done.stdout)["machines"]
    assert machine["left"] == [] and machine["stopped"] >= 1, machine
    assert snapshot(root) == before
    assert not _port_taken(port) and _our_processes(binaries) == []
    assert exam.leftovers() == []


def test_resume_refuses_a_finished_run_another_scenario_and_another_seed(exam: Exam) -> None:
    root = exam.sandbox
    _lay_out(root)
    scenario = exam.workdir / "resume.yml"
    text = SCENARIO.replace("count: 150000", "count: 10") % {"root": root, "port": free_port()}
    scenario.write_text(text)
    inventory = exam.inventory(["web"])
    run = exam.chaosrun("run", scenario, "-i", inventory, "--plain")
    assert run.code == 0 and run.audit_path is not None
    finished = exam.chaosrun("run", scenario, "-i", inventory, "--resume", run.audit_path)
    assert finished.code == 2
    assert "ended" in finished.stderr and "nothing to resume; --limit @failed" in finished.stderr

    # cut short: the log as a killed monitor leaves it, up to the third step's end
    lines = run.audit_path.read_text().splitlines(keepends=True)
    third = next(i for i, line in enumerate(lines) if '"step_end"' in line and '"squat"' in line)
    cut = exam.workdir / "audit" / "cut.jsonl"
    cut.write_text("".join(lines[: third + 1]) + lines[third + 1][:40])  # and a torn line
    assert exam.chaosrun("run", scenario, "-i", inventory, "--seed", "7", "--resume", cut).code == 2
    scenario.write_text(text.replace("size_mb: 2", "size_mb: 3"))
    changed = exam.chaosrun("run", scenario, "-i", inventory, "--resume", cut)
    assert changed.code == 2 and "changed since run cut" in changed.stderr
    scenario.write_text(text)
    assert exam.chaosrun("restore", scenario, "-i", inventory, "--from", run.audit_path).code == 0


AGAIN = """\
version: 1
name: again
targets:
  web: {host: 127.0.0.1}
vars:
  root: "%(root)s"
steps:
  - {id: squat, target: web, chaos: occupy_port, with: {port: %(squat)d, address: 127.0.0.1, process_name: "%(name)s"}}
  - id: rogue
    target: web
    chaos: rogue_process
    with: {action: listen, port: %(rogue)d, address: 127.0.0.1, process_name: "%(name)s-r"}
  - {id: load, target: web, chaos: cpu_stress, with: {workers: 1, duration: 120, process_name: "%(name)s-c"}}
  - {id: held, target: web, chaos: deleted_open_file, with: {path: "${vars.root}/var/app.log", size_mb: 1, process_name: "%(name)s-d"}}
  - {id: disk, target: web, chaos: fill_disk, with: {path: "${vars.root}/var/big.bin", size_mb: 2}}
  - {id: inodes, target: web, chaos: exhaust_inodes, with: {dir: "${vars.root}/spool/sess", count: 400}}
"""


def test_a_step_applied_again_finds_its_own_fault_in_place_and_says_so(exam: Exam) -> None:
    root = exam.sandbox
    _lay_out(root)
    before = snapshot(root)
    squat, rogue = free_port(), free_port()
    name = f"w{os.getpid() % 10000}"
    scenario = exam.workdir / "again.yml"
    scenario.write_text(AGAIN % {"root": root, "squat": squat, "rogue": rogue, "name": name})
    inventory = exam.inventory(["web"])
    # a candidate's process under the load process's name: not ours, it runs another program
    decoy = exam.sleeper(f"{name}-c")

    first = exam.chaosrun("run", scenario, "-i", inventory, "--plain")
    assert first.code == 0, first.stdout + first.stderr
    again = exam.chaosrun("run", scenario, "-i", inventory, "--plain")
    assert again.code == 0, again.stdout + again.stderr
    results = {r["step"]: r["result"] for r in again.events("result")}
    for step in ("squat", "rogue", "load", "held", "disk", "inodes"):
        assert results[step].get("already_in_place") is True, (step, results[step])
        assert again.step_end(step)["status"] == "ok"
    firsts = {r["step"]: r["result"] for r in first.events("result")}
    for step in ("squat", "rogue", "load", "held"):
        assert results[step]["pid"] == firsts[step]["pid"], f"{step}: a second process started"
    assert results["load"]["pid"] != decoy.pid
    assert (root / "var/big.bin").stat().st_size == 2 << 20, "the disk filler was not doubled"
    assert len(list((root / "spool/sess").iterdir())) == 400, "the files were not doubled"
    assert "already in place: " in "".join(str(r.get("msg", "")) for r in again.events("log"))

    binaries = {r["sha256"] for r in [*first.audit, *again.audit] if r.get("event") == "deploy"}
    done = exam.chaosrun("restore", scenario, "-i", inventory, "--audit", exam.workdir / "audit")
    assert done.code == 0, done.stdout + done.stderr
    # the second run found the folder of sess files there: the first run's restore removes it
    assert {p for p in set(snapshot(root)) ^ set(before)} == {"spool/sess"}
    assert first.audit_path is not None
    done = exam.chaosrun("restore", scenario, "-i", inventory, "--from", first.audit_path)
    assert done.code == 0, done.stdout + done.stderr
    assert snapshot(root) == before
    assert not _port_taken(squat) and not _port_taken(rogue) and _our_processes(binaries) == []
    assert decoy.poll() is None, "the candidate's own process of the same name is left alone"
    assert exam.leftovers() == []
