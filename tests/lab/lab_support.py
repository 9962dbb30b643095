"""Helpers for the lab tests: run the installed ``chaosrun``, and the session's lab VM."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from chaosrun.lab import LabState, VmRecord
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
        self, command: str, *, known_hosts: Path | str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        argv = ssh_command(
            "ssh",
            identity=self.state.identity,
            known_hosts=known_hosts or self.state.known_hosts,
            address=self.vm.address,
            port=self.vm.ssh_port,
            command=command,
        )
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
