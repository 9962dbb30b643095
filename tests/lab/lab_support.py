"""Helpers for the lab tests: run the installed ``chaosrun``, and the session's lab VM."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chaosrun.lab import Image, LabState, VmRecord, load_state
from chaosrun.lab.login import ssh_command

BOOT_TIMEOUT = "600s"  # generous: the 2 cores of a CI machine are shared with other tests


def chaosrun_argv() -> list[str]:
    script = Path(sys.executable).with_name("chaosrun")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "chaosrun"]


def chaosrun(
    *argv: str, cwd: Path, timeout: float = 900, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``chaosrun`` (the operator's monitor key kept out of reach)."""
    env = {k: v for k, v in os.environ.items() if k != "CHAOSRUN_KEY"}
    env["COLUMNS"] = "200"
    if config is not None:
        env["XDG_CONFIG_HOME"] = str(config)
    return subprocess.run([*chaosrun_argv(), *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@dataclass
class LabVm:
    """The session's lab: its inventory, its state, and a way to run commands in the VM."""

    inventory: Path
    state: LabState
    up_seconds: float
    up_stderr: str
    base_mtime_ns: int  # the base image's, before the VM ran

    @property
    def vm(self) -> VmRecord:
        return self.state.vms[0]

    def ssh(
        self, command: str, *, known_hosts: Path | str | None = None, timeout: float = 120, user: str = "root"
    ) -> subprocess.CompletedProcess[str]:
        argv = ssh_command(
            "ssh",
            identity=self.state.identity,
            known_hosts=known_hosts or self.state.known_hosts,
            address=self.vm.address,
            port=self.vm.ssh_port,
            command=command,
            user=user,
        )
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@contextlib.contextmanager
def own_lab(image: Image, folder: Path, *up_args: str) -> Iterator[LabVm]:
    """A lab of the caller's own (``chaosrun lab up -o folder/lab.yml up_args...``), for a
    test that breaks or reboots its machine; taken down afterwards, whatever happened."""
    inventory = folder / "lab.yml"
    started = time.monotonic()
    done = chaosrun("lab", "up", "-o", str(inventory), *up_args, "--boot-timeout", BOOT_TIMEOUT, cwd=folder)
    seconds = time.monotonic() - started
    try:
        if done.returncode != 0:
            pytest.fail(f"chaosrun lab up failed ({done.returncode}):\n{done.stderr}", pytrace=False)
        print(f"lab up: {seconds:.1f} s")
        yield LabVm(inventory, load_state(inventory), seconds, done.stderr, image.disk.stat().st_mtime_ns)
    finally:
        chaosrun("lab", "down", "-i", str(inventory), cwd=folder)
