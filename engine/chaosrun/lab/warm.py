"""Lab: the saved VM, so that a lab's VMs start in seconds instead of booting.

Booting a VM under software emulation takes 20-40 s, nearly all of it the kernel and
systemd. So the first ``lab up`` on a machine (for one image, VM size and qemu) boots one
VM until it answers SSH, saves its disk and its memory (qemu's migration into a file:
~1.5 s, ~200 MB) into the cache, and stops it. Every VM after that is a new overlay over
the saved disk, restored from the saved memory (``-incoming``), and answers SSH about 3 s
after qemu starts. It is then made a machine of its own over SSH, logged in with the saved
VM's key: the chaosrun-lab-keys unit runs again and installs, from this VM's fw_cfg, the
lab's client key, the VM's own host key and its host name (as at a boot); the saved VM's
key is removed; the clock is set; sshd reloads. From there on it is the lab's VM like one
that booted, and a reboot boots it for real.

What restored VMs share: the machine id, and the boot id until their first reboot. Their
kernels' random number generators do not stay alike: qemu's ``vmgenid`` device tells each
restored kernel it is a new machine, and it reseeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .accel import Accel
from .errors import ResourceError, VmBootError
from .image import Image, Progress, build_lock, cache_dir
from .login import ssh_command
from .network import allocate_addresses, check_forwards, forwards_for
from .ready import wait_ready
from .recipe import USER
from .state import LabState, VmRecord, generate_key, known_hosts_line
from .vm import (
    KERNEL_CMDLINE,
    TCG_TB_SIZE_MIB,
    VmFiles,
    console_tail,
    create_overlay,
    find_qemu,
    qemu_alive,
    qemu_command,
    ssh_banner,
    start_qemu,
    stop_qemu,
)

__all__ = ["RestoreError", "Warm", "ensure_warm", "forget_warm", "make_own", "personalize_command", "warm_path"]

#: Bump when what a saved VM holds changes in a way the inputs of its id do not show.
WARM_FORMAT = 1
WARM_COMMENT = "chaosrun-lab-saved-vm"
SAVE_TIMEOUT = 120.0  # seconds for qemu to write the memory file
QMP_TIMEOUT = 10.0
#: A restored VM answers SSH in 5-9 s under TCG; one that has not in this long is taken for
#: a restore gone wrong (the lab then boots cold), not for a slow machine.
RESTORE_TIMEOUT = 120.0
#: What a guest kernel prints when it crashed (an oops, a panic): a restored VM that prints
#: one of these is not waited for. Warnings, soft lockups and RCU stalls (a slow host, a clock
#: that jumped) are not here.
_CRASHED = re.compile(
    rb"Kernel panic|\bOops\b|BUG: unable to handle|BUG: kernel NULL pointer|general protection fault"
    rb"|invalid opcode: |exited with irqs disabled"
)


class RestoreError(VmBootError):
    """A VM restored from the saved VM did not come up (qemu exited, its kernel crashed, it
    sent no SSH banner within ``RESTORE_TIMEOUT``, or the login that makes it its own machine
    failed). ``lab up`` then forgets the saved VM and boots cold."""


@dataclass(frozen=True)
class Warm:
    """A saved VM in the cache: its disk (a qcow2 over the image) and its memory."""

    id: str
    dir: Path

    @property
    def files(self) -> VmFiles:
        return VmFiles(self.dir, "saved")

    @property
    def disk(self) -> Path:
        return self.files.overlay

    @property
    def memory(self) -> Path:
        return self.dir / "saved.memory"

    @property
    def identity(self) -> Path:
        """The client key the saved VM accepts (removed from each VM restored from it)."""
        return self.dir / "id_ed25519"

    @property
    def host_public(self) -> str:
        """The saved VM's host key (``ssh-ed25519 AAAA...``), until a restored VM has its own."""
        return self.files.host_key_pub.read_text().strip()

    @property
    def info(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.dir / "warm.json").read_text())
        return data


def qemu_version(qemu: str) -> str:
    """The first line of ``qemu --version`` (a saved VM restores only under the same qemu)."""
    done = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0].strip() if done.stdout else "unknown"


def warm_path(image: Image, accel: Accel, qemu: str, memory_mib: int, cpus: int, cache: Path | None = None) -> Path:
    """Where the saved VM for this image, accelerator, qemu and VM size lives in the cache:
    named after everything the guest can see, so a change of any of them saves a new one."""
    key = {
        "format": WARM_FORMAT,
        "image": image.id,
        "accel": list(accel.args),
        "tb_size": TCG_TB_SIZE_MIB,
        "qemu": qemu_version(qemu),
        "memory_mib": memory_mib,
        "cpus": cpus,
        "cmdline": KERNEL_CMDLINE,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return (cache or cache_dir()) / "saved" / digest


def _complete(path: Path) -> bool:
    return (path / "warm.json").is_file()


def ensure_warm(
    image: Image,
    accel: Accel,
    qemu: str,
    qemu_img: str,
    ssh: str,
    *,
    memory_mib: int,
    cpus: int,
    boot_timeout: float,
    progress: Progress,
    cache: Path | None = None,
) -> Warm:
    """The saved VM for this image and VM size, booted and saved first if the cache lacks it.

    Raises:
        ResourceError: too little free disk in the cache for the memory file.
        VmBootError: the VM to be saved did not boot (its console's tail), or qemu could not
            save it; nothing is left running or half-written then.
    """
    final = warm_path(image, accel, qemu, memory_mib, cpus, cache)
    if _complete(final):
        return Warm(final.name, final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(final, "the saved VM", progress):
        if _complete(final):
            return Warm(final.name, final)
        for stale in final.parent.glob(f".save-{final.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a save that was killed; the lock is ours
        needed = (memory_mib + 512) * 1024**2
        free = shutil.disk_usage(final.parent).free
        if free < needed:
            raise ResourceError(
                f"not enough free disk in {final.parent} to save a VM for fast starts: "
                f"{free / 1024**2:.0f} MiB free, {needed / 1024**2:.0f} MiB needed (or use --cold)"
            )
        work = final.parent / f".save-{final.name}-{os.getpid()}"
        work.mkdir(mode=0o700)
        try:
            _save(image, accel, qemu, qemu_img, ssh, work, memory_mib, cpus, boot_timeout, progress)
            os.rename(work, final)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return Warm(final.name, final)


def _save(
    image: Image,
    accel: Accel,
    qemu: str,
    qemu_img: str,
    ssh: str,
    work: Path,
    memory_mib: int,
    cpus: int,
    boot_timeout: float,
    progress: Progress,
) -> None:
    warm = Warm(work.name, work)
    files = warm.files
    generate_key(warm.identity, WARM_COMMENT)
    host_public = generate_key(files.host_key, WARM_COMMENT)
    files.hostname.write_text("lab\n")
    forwards = forwards_for((), 22)
    (address,) = allocate_addresses(1, 22)
    check_forwards(address, forwards)
    known_hosts = work / "known_hosts"
    known_hosts.write_text(known_hosts_line(address, 22, host_public) + "\n")
    create_overlay(qemu_img, image, files.overlay)
    # a Unix socket's path has at most 107 bytes: the control socket lives in a short temp folder
    with tempfile.TemporaryDirectory(prefix="chaosrun-qmp-") as short:
        qmp = Path(short) / "qmp"
        command = qemu_command(
            qemu,
            image,
            accel,
            files,
            address=address,
            forwards=forwards,
            authorized_keys=warm.identity.with_name(warm.identity.name + ".pub"),
            memory_mib=memory_mib,
            cpus=cpus,
            qmp=qmp,
        )
        progress(f"lab: booting a VM to save for fast starts (once per machine and VM size, {accel.name})")
        started = time.monotonic()
        pid: int | None = None
        try:
            pid = start_qemu(command, files, address)
            vm = VmRecord(
                name=files.name,
                env="saved",
                role="saved",
                address=address,
                ssh_port=22,
                forwards=forwards,
                overlay=str(files.overlay),
                console=str(files.console),
                host_key=" ".join(host_public.split()[:2]),
                pid=pid,
            )
            state = LabState(
                inventory=str(work / "none.yml"),
                dir=str(work),
                image=image.id,
                accel=accel.name,
                accel_reason=accel.reason,
                memory_mib=memory_mib,
                cpus=cpus,
                identity=str(warm.identity),
                known_hosts=str(known_hosts),
                created_at=time.time(),
                vms=(vm,),
            )
            wait_ready(state, ssh, boot_timeout, started, lambda _line: None)
            booted = time.monotonic() - started
            saving = time.monotonic()
            _migrate_to_file(qmp, warm.memory, pid, files.overlay)
            saved = time.monotonic() - saving
        finally:
            # a Ctrl-C during the start itself: find the daemonized qemu by its overlay
            stop_qemu(pid if qemu_alive(pid, files.overlay) else find_qemu(files.overlay), files.overlay)
    for path in (files.overlay, warm.memory):
        path.chmod(0o444)  # the restored VMs' overlays lie over these: never written again
    size = warm.memory.stat().st_size
    info = {
        "format": WARM_FORMAT,
        "image": image.id,
        "accel": accel.name,
        "qemu": qemu_version(qemu),
        "memory_mib": memory_mib,
        "cpus": cpus,
        "boot_seconds": round(booted, 1),
        "save_seconds": round(saved, 1),
        "memory_bytes": size,
        "saved_at": time.time(),
    }
    (work / "warm.json").write_text(json.dumps(info, indent=2) + "\n")
    progress(f"lab: saved the VM in {saved:.1f} s ({size / 1024**2:.0f} MB, booted in {booted:.1f} s)")


def _migrate_to_file(qmp: Path, memory: Path, pid: int, overlay: Path) -> None:
    """Have qemu write the VM's state into ``memory`` (it ends paused), then quit.

    Raises:
        VmBootError: qemu refused or failed to save, or took longer than SAVE_TIMEOUT.
    """
    partial = memory.with_name(memory.name + ".partial")
    with _Qmp(qmp) as control:
        control.call("migrate", uri=f"exec:cat > {shlex.quote(str(partial))}")
        deadline = time.monotonic() + SAVE_TIMEOUT
        while True:
            status = control.call("query-migrate")
            state = status.get("status")
            if state == "completed":
                break
            if state in ("failed", "cancelled"):
                raise VmBootError(f"qemu could not save the VM: {status.get('error-desc', state)}")
            if time.monotonic() > deadline or not qemu_alive(pid, overlay):
                raise VmBootError(f"qemu did not save the VM within {SAVE_TIMEOUT:g} s")
            time.sleep(0.1)
        with contextlib.suppress(OSError):  # qemu closes the socket as it quits
            control.call("quit")
    os.rename(partial, memory)


class _Qmp:
    """A minimal client of qemu's machine protocol: JSON lines over a Unix socket."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._file: Any = None

    def __enter__(self) -> _Qmp:
        self._sock.settimeout(QMP_TIMEOUT)
        self._sock.connect(str(self._path))
        self._file = self._sock.makefile("rw", encoding="utf-8")
        self._file.readline()  # the greeting
        self.call("qmp_capabilities")
        return self

    def __exit__(self, *_exc: object) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        self._sock.close()

    def call(self, command: str, **arguments: Any) -> dict[str, Any]:
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self._file.write(json.dumps(message) + "\n")
        self._file.flush()
        while True:
            line = self._file.readline()
            if not line:
                raise OSError(f"qemu closed its control socket during {command}")
            reply = json.loads(line)
            if "error" in reply:
                raise VmBootError(f"qemu refused {command}: {reply['error'].get('desc', reply['error'])}")
            if "return" in reply:
                result: dict[str, Any] = reply["return"] if isinstance(reply["return"], dict) else {}
                return result
            # an asynchronous event: not the answer


def forget_warm(warm: Warm) -> None:
    """Remove a saved VM (one that did not restore); the next ``lab up`` saves a new one."""
    with contextlib.suppress(OSError):
        for path in (warm.disk, warm.memory):
            path.chmod(0o644)
    shutil.rmtree(warm.dir, ignore_errors=True)


def crash_line(console: Path) -> str:
    """The first line of a VM's console log that says its kernel crashed (an oops, a panic),
    on one line; "" when there is none (or no log yet)."""
    try:
        text = console.read_bytes()
    except OSError:
        return ""
    for line in text.replace(b"\r", b"\n").split(b"\n"):
        if _CRASHED.search(line):
            return " ".join(line.decode("utf-8", "replace").split())
    return ""


def personalize_command(warm: Warm, now: float) -> str:
    """The shell run in a just-restored VM (as root, with the saved VM's key) that makes it
    the lab's own machine: the fw_cfg driver reloaded and the keys unit again (this VM's
    fw_cfg: its host key and name, the lab's client key), the saved VM's key out of every
    authorized_keys, the clock set to ``now``, sshd reloaded so new logins see the new
    host key."""
    kind, key = (Path(str(warm.identity) + ".pub").read_text().split() + ["", ""])[:2]
    line = shlex.quote(f"\\#^{kind} {key}#d")
    files = " ".join(shlex.quote(p) for p in ("/root/.ssh/authorized_keys", f"/home/{USER}/.ssh/authorized_keys"))
    return (
        # the fw_cfg driver sized its files when it loaded, in the saved VM: load it anew
        "set -e; rmmod qemu_fw_cfg; modprobe qemu_fw_cfg; /usr/local/sbin/chaosrun-lab-keys; "
        f'for f in {files}; do [ ! -f "$f" ] || sed -i {line} "$f"; done; '
        f"date -s @{now:.3f} >/dev/null; systemctl reload ssh"
    )


def make_own(state: LabState, warm: Warm, ssh: str, timeout: float, started: float) -> None:
    """Log in to each just-restored VM with the saved VM's key and host key and make it the
    lab's own machine (``personalize_command``), all VMs at once.

    Raises:
        RestoreError: a VM's qemu exited, its kernel crashed, it sent no SSH banner within
            ``RESTORE_TIMEOUT`` seconds (or ``timeout``, when shorter), or the login or the
            command failed.
    """
    known = Path(state.dir) / "saved_known_hosts"
    known.write_text("".join(known_hosts_line(vm.address, vm.ssh_port, warm.host_public) + "\n" for vm in state.vms))
    pending = {vm.name: vm for vm in state.vms}
    running: dict[str, subprocess.Popen[bytes]] = {}
    wait = min(timeout, RESTORE_TIMEOUT)
    deadline = started + wait
    try:
        while pending:
            for name, vm in list(pending.items()):
                where = f"VM {vm.env}/{vm.role} ({vm.address}:{vm.ssh_port})"
                if not qemu_alive(vm.pid, Path(vm.overlay)):
                    raise RestoreError(
                        f"{where}: qemu exited while restoring the saved VM; console: {console_tail(Path(vm.console))}"
                    )
                crash = crash_line(Path(vm.console))
                if crash:
                    raise RestoreError(f"{where}: the guest kernel crashed after the restore: {crash}")
                login = running.get(name)
                if login is None:
                    if ssh_banner(vm.address, vm.ssh_port, timeout=1.0):
                        argv = ssh_command(
                            ssh,
                            identity=warm.identity,
                            known_hosts=known,
                            address=vm.address,
                            port=vm.ssh_port,
                            command=personalize_command(warm, time.time()),
                        )
                        running[name] = subprocess.Popen(
                            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                        )
                    continue
                if login.poll() is None:
                    continue
                _, err = login.communicate()
                del running[name]
                if login.returncode != 0:
                    said = err.decode(errors="replace").strip().splitlines()
                    raise RestoreError(
                        f"{where}: could not make the restored VM its own machine "
                        f"(exit {login.returncode}): {said[-1] if said else 'no message'}"
                    )
                del pending[name]
            if pending and time.monotonic() > deadline:
                late = next(iter(pending.values()))
                raise RestoreError(
                    f"VM {late.env}/{late.role} ({late.address}:{late.ssh_port}) restored from the saved VM "
                    f"did not answer SSH within {wait:g} s; "
                    f"console ({late.console}): {console_tail(Path(late.console))}"
                )
            time.sleep(0.1)
    finally:
        for login in running.values():
            if login.poll() is None:
                login.kill()
                login.wait()
        known.unlink(missing_ok=True)
