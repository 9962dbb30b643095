"""Lab: one qemu VM: its overlay, its command line, starting it, seeing it, stopping it.

A VM runs the base image's own kernel and initrd (no bootloader) on a copy-on-write qcow2
overlay, so the base image is never written. qemu runs daemonized (``-daemonize
-pidfile``): it detaches once its devices are set up, so a host forward that cannot bind
fails the start itself, with qemu's exit status, and a VM outlives the ``chaosrun lab up``
that started it. It is stopped by the PID it wrote, after checking that this PID still is
that qemu (its command line names the VM's own overlay), never by a name.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .accel import Accel
from .errors import LabError, PortTakenError, VmBootError
from .image import Image
from .network import Forward
from .recipe import FW_CFG_PREFIX

__all__ = [
    "KERNEL_CMDLINE",
    "VmFiles",
    "console_tail",
    "create_overlay",
    "process_uptime",
    "qemu_alive",
    "qemu_command",
    "ssh_banner",
    "start_qemu",
    "stop_qemu",
]

#: The kernel command line for the image's own kernel: root on the virtio disk, the console
#: on the serial port (logged to a file per VM), eth0 as the interface's name.
KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0 biosdevname=0"
#: TCG keeps translated code in a buffer that grows to 1 GiB by default; a quarter of that
#: is plenty for one exam machine and keeps a VM's memory near what was asked for.
TCG_TB_SIZE_MIB = 256
#: qemu's words when a host forward cannot bind: "Could not set up host forwarding rule 'tcp:127.0.0.2:80-:80'"
_HOSTFWD_REFUSED = re.compile(r"host forwarding rule '(tcp|udp):([0-9.]*):([0-9]+)-")
START_TIMEOUT = 60.0  # seconds for `qemu -daemonize` to set the VM up and detach
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


@dataclass(frozen=True)
class VmFiles:
    """A VM's files in the lab folder, all named after the VM."""

    dir: Path
    name: str

    def _path(self, suffix: str) -> Path:
        return self.dir / f"{self.name}{suffix}"

    @property
    def overlay(self) -> Path:
        return self._path(".qcow2")

    @property
    def console(self) -> Path:
        return self._path(".console.log")

    @property
    def qemu_log(self) -> Path:
        return self._path(".qemu.log")

    @property
    def pidfile(self) -> Path:
        return self._path(".pid")

    @property
    def host_key(self) -> Path:
        return self._path(".host_key")

    @property
    def host_key_pub(self) -> Path:
        return self._path(".host_key.pub")

    @property
    def hostname(self) -> Path:
        return self._path(".hostname")


def create_overlay(qemu_img: str, image: Image, overlay: Path, *, over: Path | None = None) -> None:
    """A new qcow2 overlay over the image's raw disk (or over ``over``, the saved VM's own
    qcow2 disk, itself an overlay of the image); what it lies over is never written.

    Raises:
        LabError: qemu-img failed.
    """
    backing = ["-F", "qcow2", "-b", str(over)] if over is not None else ["-F", "raw", "-b", str(image.disk)]
    done = subprocess.run(
        [qemu_img, "create", "-q", "-f", "qcow2", *backing, str(overlay)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise LabError(f"qemu-img could not create {overlay}: {_last_line(done.stderr)}")


def qemu_command(
    qemu: str,
    image: Image,
    accel: Accel,
    files: VmFiles,
    *,
    address: str,
    forwards: Sequence[Forward],
    authorized_keys: Path,
    memory_mib: int,
    cpus: int,
    qmp: Path | None = None,
    incoming: Path | None = None,
) -> list[str]:
    """The qemu command line for one VM (daemonized, no display, console to a file).

    ``qmp`` puts qemu's machine protocol on that Unix socket (the VM that gets saved needs
    it); ``incoming`` restores the VM from a saved one's memory file instead of booting it.
    Everything the guest can see is the same for every VM of one size, so a VM saved with
    one command line restores under another one's: only the host side differs (addresses,
    the files fw_cfg hands over, the overlay). ``vmgenid`` tells a restored guest kernel
    that it is a new machine, so it reseeds its random number generator and no two VMs
    restored from one memory file draw the same random numbers.
    """
    accel_args = list(accel.args)
    if accel.name == "tcg":
        accel_args[1] += f",tb-size={TCG_TB_SIZE_MIB}"
    netdev = ",".join(["user", "id=net0", "restrict=on", *(f.hostfwd(address) for f in forwards)])
    return [
        qemu,
        "-name",
        f"chaosrun-lab-{files.name},process=chaosrun-lab",
        "-machine",
        "q35",
        *accel_args,
        "-smp",
        str(cpus),
        "-m",
        str(memory_mib),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(image.initrd),
        "-append",
        KERNEL_CMDLINE,
        "-drive",
        f"file={files.overlay},format=qcow2,if=virtio,cache=unsafe,discard=unmap",
        "-device",
        "virtio-rng-pci",
        "-netdev",
        netdev,
        "-device",
        "virtio-net-pci,netdev=net0",
        "-fw_cfg",
        f"name={FW_CFG_PREFIX}/host_key,file={files.host_key}",
        "-fw_cfg",
        f"name={FW_CFG_PREFIX}/host_key.pub,file={files.host_key_pub}",
        "-fw_cfg",
        f"name={FW_CFG_PREFIX}/authorized_keys,file={authorized_keys}",
        "-fw_cfg",
        f"name={FW_CFG_PREFIX}/hostname,file={files.hostname}",
        "-chardev",
        f"file,id=console,path={files.console}",
        "-serial",
        "chardev:console",
        "-device",
        "vmgenid,guid=auto",
        "-monitor",
        "none",
        *(["-qmp", f"unix:{qmp},server=on,wait=off"] if qmp is not None else []),
        *(["-incoming", f"exec:cat {shlex.quote(str(incoming))}"] if incoming is not None else []),
        "-daemonize",
        "-pidfile",
        str(files.pidfile),
    ]


def start_qemu(command: Sequence[str], files: VmFiles, address: str) -> int:
    """Start a daemonized qemu; returns the PID it wrote.

    Raises:
        PortTakenError: a host forward could not bind (taken since it was checked).
        VmBootError: qemu refused to start; the message has its last line of output.
    """
    with open(files.qemu_log, "wb") as log:
        try:
            code = subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=START_TIMEOUT
            ).returncode
        except subprocess.TimeoutExpired:
            code = -1
    output = files.qemu_log.read_text(errors="replace")
    if code != 0:
        refused = _HOSTFWD_REFUSED.search(output)
        if refused:
            proto, host, port = refused.groups()
            where = f"{host or address}:{port}" + ("/udp" if proto == "udp" else "")
            raise PortTakenError(f"port {where} is already taken (a VM of this lab would forward it)")
        raise VmBootError(f"qemu did not start VM {files.name}: {_last_line(output) or f'exit status {code}'}")
    try:
        return int(files.pidfile.read_text().strip())
    except (OSError, ValueError):
        raise VmBootError(f"qemu started VM {files.name} but wrote no PID to {files.pidfile}") from None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()  # after "pid (comm) ": state is field 0


def qemu_alive(pid: int | None, overlay: Path) -> bool:
    """True when ``pid`` is a live (not zombie) process whose command line names ``overlay``.

    The overlay's path is unique to one VM, so a PID reused by another program is never
    mistaken for the VM (and never signalled).
    """
    if not pid or pid <= 0:
        return False
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return f"file={overlay},".encode() in cmdline


def process_uptime(pid: int) -> float | None:
    """Seconds since ``pid`` started (None when it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    try:
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - started)


def find_qemu(overlay: Path) -> int | None:
    """The PID of a qemu running on ``overlay`` (a start interrupted before its PID file)."""
    needle = f"file={overlay},".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes() and qemu_alive(int(entry.name), overlay):
                    return int(entry.name)
    return None


def stop_qemu(pid: int | None, overlay: Path, grace: float = STOP_GRACE) -> bool:
    """Stop the VM's qemu: SIGTERM (qemu exits at once; the overlay is thrown away, so the
    guest needs no clean shutdown), SIGKILL after ``grace`` seconds. Returns whether one ran.
    """
    if not qemu_alive(pid, overlay):
        return False
    assert pid is not None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while qemu_alive(pid, overlay) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not qemu_alive(pid, overlay):
            break
    return True


def ssh_banner(address: str, port: int, timeout: float = 2.0) -> bool:
    """True when ``address:port`` sends an ``SSH-`` banner (qemu accepts a forwarded
    connection before the guest does, so a connect alone proves nothing)."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def console_tail(path: Path, lines: int = 5) -> str:
    """The last non-empty lines of a console log, on one line (`` | `` between them)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no console log)"
    kept = [" ".join(line.split()) for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "(the console stayed empty)"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
