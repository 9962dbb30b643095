"""Lab: waiting until VMs are ready: an SSH banner, then a real login with the lab's key and
the VM's pinned host key, and systemd saying it finished booting.

Shared by ``lab up`` (the lab's VMs) and the saved VM (``warm``: the one VM booted to be
saved).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import VmBootError
from .image import Progress
from .login import ssh_command
from .state import LabState, VmRecord
from .vm import console_tail, qemu_alive, ssh_banner

__all__ = ["READY_STATES", "lab_login", "wait_ready"]

READY_STATES = ("running", "degraded")


@dataclass
class _Boot:
    vm: VmRecord
    login: subprocess.Popen[bytes] | None = None
    next_try: float = 0.0


def lab_login(state: LabState, ssh: str, vm: VmRecord, command: str) -> list[str]:
    return ssh_command(
        ssh,
        identity=state.identity,
        known_hosts=state.known_hosts,
        address=vm.address,
        port=vm.ssh_port,
        command=command,
    )


def wait_ready(state: LabState, ssh: str, timeout: float, started: float, progress: Progress) -> None:
    """Wait until every VM sends an SSH banner, then takes a real login with the lab's key
    and its pinned host key and says it finished booting (``systemctl is-system-running --wait``).

    Raises:
        VmBootError: a VM's qemu died, its host key did not match, or it was not ready in
        ``timeout`` seconds; the message ends with its console's last lines.
    """
    pending = {vm.name: _Boot(vm) for vm in state.vms}
    deadline = started + timeout
    try:
        while pending:
            now = time.monotonic()
            for boot in list(pending.values()):
                vm = boot.vm
                where = f"VM {vm.env}/{vm.role} ({vm.address}:{vm.ssh_port})"
                if not qemu_alive(vm.pid, Path(vm.overlay)):
                    raise VmBootError(f"{where}: qemu exited while booting; console: {console_tail(Path(vm.console))}")
                if boot.login is None:
                    if now >= boot.next_try and ssh_banner(vm.address, vm.ssh_port, timeout=1.0):
                        boot.login = subprocess.Popen(
                            lab_login(state, ssh, vm, "systemctl is-system-running --wait"),
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                        )
                    continue
                if boot.login.poll() is None:
                    continue
                out, err = boot.login.communicate()
                boot.login = None
                words = out.decode(errors="replace").split()
                said = words[-1] if words else ""
                if said in READY_STATES:
                    del pending[vm.name]
                    note = "" if said == "running" else f"; failed units: {_failed_units(state, ssh, vm)}"
                    progress(
                        f"lab: {vm.env}/{vm.role} answers SSH on {vm.address}:{vm.ssh_port} "
                        f"after {time.monotonic() - started:.1f} s (systemd: {said}{note})"
                    )
                    continue
                error = err.decode(errors="replace").strip()
                if "host key" in error.lower() or "REMOTE HOST IDENTIFICATION" in error:
                    raise VmBootError(f"{where}: the host key does not match the pinned one: {error.splitlines()[-1]}")
                if said in ("maintenance", "stopping", "offline"):
                    raise VmBootError(f"{where}: systemd is {said}; console: {console_tail(Path(vm.console))}")
                boot.next_try = time.monotonic() + 1.0  # sshd up but not taking logins yet: try again
            if time.monotonic() > deadline:
                late = next(iter(pending.values())).vm
                raise VmBootError(
                    f"VM {late.env}/{late.role} ({late.address}:{late.ssh_port}) did not answer SSH within "
                    f"{timeout:g} s; console ({late.console}): {console_tail(Path(late.console))}"
                )
            time.sleep(0.25)
    finally:
        for boot in pending.values():
            if boot.login is not None and boot.login.poll() is None:
                boot.login.kill()
                boot.login.wait()


def _failed_units(state: LabState, ssh: str, vm: VmRecord) -> str:
    done = subprocess.run(
        lab_login(state, ssh, vm, "systemctl --failed --plain --no-legend"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return ", ".join(line.split()[0] for line in done.stdout.splitlines() if line.strip()) or "none listed"
