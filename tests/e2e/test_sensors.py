"""Tamper sensors against a real sshd: a candidate who is root hooks the shell, traces the
binary, watches its stdin pipe or fakes a tool on one machine, and the environment is
flagged suspect with the signal that says so (docs/security.md, "Signals")."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import servers_inventory

from chaosrun.cli import main
from chaosrun.testing import LocalSshd, local_sshd

SCENARIO = "version: 1\nname: sensors\ntargets:\n  web: {host: 127.0.0.1}\nsteps:\n"
SLEEP = "{command: 'sleep 2; echo done', timeout_ms: 20000}"


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CHAOSRUN_KEY", str(tmp_path / "keys" / "monitor_ed25519"))
    return tmp_path


@contextlib.contextmanager
def sshds(work: Path, *configs: tuple[str, ...]) -> Iterator[list[LocalSshd]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(local_sshd(work, extra_config=c)) for c in configs]


def run(
    work: Path, servers: list[LocalSshd], steps: str
) -> tuple[int, dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Run ``steps`` with one environment per server; return the exit code, each
    environment's signals and the audit records."""
    inventory = servers_inventory(servers, work)
    scenario = work / "sensors.yaml"
    scenario.write_text(SCENARIO + steps)
    audit = work / "audit"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["run", str(scenario), "-i", str(inventory), "--plain", "--audit", str(audit)])
    records = [json.loads(line) for line in sorted(audit.glob("*.jsonl"))[-1].read_text().splitlines()]
    end = next(r for r in records if r["event"] == "run_end")
    return code, {name: e["signals"] for name, e in end["environments"].items()}, records


def signal_names(signals: list[dict[str, Any]]) -> set[str]:
    return {s["signal"] for s in signals}


def step_binary(folder: Path, timeout: float = 20) -> int:
    """The PID of the module binary running from ``folder`` (its exe is the unlinked upload)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid_dir in Path("/proc").iterdir():
            if pid_dir.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(pid_dir / "exe").startswith(str(folder) + "/"):
                        return int(pid_dir.name)
        time.sleep(0.01)
    raise AssertionError(f"no binary from {folder} ran")


def attack(body: Callable[[int], None], folder: Path) -> threading.Thread:
    errors: list[BaseException] = []

    def go() -> None:
        try:
            body(step_binary(folder))
        except BaseException as exc:  # surfaced by the test through join()
            errors.append(exc)

    thread = threading.Thread(target=go, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def test_a_clean_target_reports_sensors_and_raises_no_signal(work: Path) -> None:
    with sshds(work, ()) as servers:
        code, signals, records = run(
            work, servers, f"  - {{id: look, target: web, probe: file_exists, with: {{path: '{work}'}}}}\n"
        )
    assert code == 0 and signals == {"cand-0": []}
    (baseline,) = [r for r in records if r["event"] == "sensor_baseline"]
    assert baseline["step"] == "look" and "program:sh" in baseline["baseline"]
    assert all(len(v) < 300 for v in baseline["baseline"].values())  # hashes, not contents


def test_an_sshd_that_sets_bash_env_makes_the_environment_suspect_with_shell_hook(work: Path) -> None:
    hook = work / "hook.sh"
    hook.write_text(f"echo ran >> {work}/hooked\n")
    with sshds(work, (f"SetEnv BASH_ENV={hook}",)) as servers:
        _, signals, _ = run(
            work, servers, f"  - {{id: look, target: web, probe: file_exists, with: {{path: '{work}'}}}}\n"
        )
    assert (work / "hooked").exists(), "the hook never ran: the attack did not happen"
    found = [s for s in signals["cand-0"] if s["signal"] == "shell_hook"]
    assert found and f"BASH_ENV={hook}" in found[0]["detail"]


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (scripts/install)")
def test_a_binary_traced_while_it_runs_is_flagged_traced(work: Path) -> None:
    tracers: list[subprocess.Popen[bytes]] = []

    def trace(pid: int) -> None:
        tracers.append(subprocess.Popen(["strace", "-f", "-o", os.devnull, "-p", str(pid)], stderr=subprocess.DEVNULL))

    with sshds(work, ()) as servers:
        thread = attack(trace, work / "remote-tmp-0")
        _, signals, _ = run(work, servers, f"  - {{id: slow, target: web, probe: command, with: {SLEEP}}}\n")
        thread.join(10)
    for t in tracers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            t.wait(5)
        t.kill()
    assert not thread.errors, thread.errors  # type: ignore[attr-defined]
    assert tracers, "the tracer never started"
    found = [s for s in signals["cand-0"] if s["signal"] == "traced"]
    assert found and f"process {tracers[0].pid} ptraces" in found[0]["detail"]


def test_a_process_holding_the_binarys_stdin_pipe_is_flagged_pipe_watched(work: Path) -> None:
    held: list[int] = []

    def watch(pid: int) -> None:
        held.append(os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK))  # never read

    with sshds(work, ()) as servers:
        thread = attack(watch, work / "remote-tmp-0")
        _, signals, _ = run(work, servers, f"  - {{id: slow, target: web, probe: command, with: {SLEEP}}}\n")
        thread.join(10)
    for fd in held:
        os.close(fd)
    assert not thread.errors, thread.errors  # type: ignore[attr-defined]
    found = [s for s in signals["cand-0"] if s["signal"] == "pipe_watched"]
    assert found and str(os.getpid()) in found[0]["detail"]


def test_a_fake_systemctl_on_one_of_three_machines_is_flagged_program_differs(work: Path) -> None:
    fake = work / "fakebin"
    fake.mkdir()
    (fake / "systemctl").write_text("#!/bin/sh\necho active\n")
    (fake / "systemctl").chmod(0o755)
    step = "  - {id: svc, target: web, probe: service_active, with: {service: ssh}}\n"
    with sshds(work, (), (f"SetEnv PATH={fake}:/usr/bin:/bin",), ()) as servers:
        _, signals, _ = run(work, servers, step)
    assert signal_names(signals["cand-0"]) == set() and signal_names(signals["cand-2"]) == set()
    found = [s for s in signals["cand-1"] if s["signal"] == "program_differs"]
    assert found and found[0]["step"] == "svc" and f"{fake}/systemctl" in found[0]["detail"]
