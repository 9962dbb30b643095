"""Lab: ``chaosrun lab up``, ``lab status`` and ``lab down``.

``lab_up`` checks everything it can before it starts anything (tools, memory, the image,
free disk, addresses and ports), then starts one VM per role and environment, waits until
each one answers SSH and has finished booting, and writes the inventory. If anything fails
on the way, or Ctrl-C (or SIGTERM) arrives, every VM it started is stopped by PID and the
lab's folder, overlays included, is removed before the error goes up: nothing is left.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .._signals import sigterm_as_interrupt
from ..scenario import Scenario
from .accel import Accel, choose_accel
from .errors import LabError, PortTakenError, ResourceError, VmBootError
from .image import Image, Progress, ensure_image, find_tool
from .network import (
    DEFAULT_SERVICE_PORTS,
    Forward,
    allocate_addresses,
    check_forwards,
    forwards_for,
    ports_from_scenario,
)
from .ready import wait_ready
from .state import (
    LabState,
    VmRecord,
    generate_key,
    is_lab_inventory,
    known_hosts_line,
    lab_dir_for,
    load_state,
    save_state,
    write_inventory,
)
from .vm import (
    VmFiles,
    create_overlay,
    find_qemu,
    process_uptime,
    qemu_alive,
    qemu_command,
    ssh_banner,
    start_qemu,
    stop_qemu,
)
from .warm import RestoreError, Warm, ensure_warm, forget_warm, make_own

__all__ = ["UpOptions", "VmStatus", "for_lab", "format_status", "lab_down", "lab_status", "lab_up", "scenario_lab"]

DEFAULT_ROLE = "target"
QEMU_OVERHEAD_MIB = 320  # per VM beyond its RAM: qemu itself and TCG's translation buffer
OVERLAY_DISK_BYTES = 512 * 1024**2  # per VM: what a boot and a few exercises write
ADDRESS_TRIES = 3  # lab up tries again with other addresses when one is taken under its feet


@dataclass(frozen=True)
class UpOptions:
    """What ``chaosrun lab up`` was asked for."""

    inventory: Path
    roles: tuple[str, ...] = (DEFAULT_ROLE,)
    service_ports: tuple[int, ...] = DEFAULT_SERVICE_PORTS
    envs: int = 1
    memory_mib: int = 1024
    cpus: int = 2
    ssh_port: int = 22
    accel: str | None = None
    boot_timeout: float = 300.0
    cold: bool = False  # boot every VM instead of restoring the saved one


@dataclass(frozen=True)
class VmStatus:
    """What ``lab status`` says of one VM."""

    name: str
    env: str
    role: str
    address: str
    ssh_port: int
    pid: int | None
    running: bool
    uptime: float | None
    ssh: bool
    accel: str

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "env": self.env,
            "role": self.role,
            "address": self.address,
            "ssh_port": self.ssh_port,
            "pid": self.pid,
            "running": self.running,
            "uptime": None if self.uptime is None else round(self.uptime, 1),
            "ssh": self.ssh,
            "accel": self.accel,
        }


def for_lab(scenario: Scenario) -> Scenario:
    """The scenario with its callbacks through the SSH tunnel: a lab VM reaches nothing
    outside (qemu ``restrict=on``), so it cannot dial the monitor's listener."""
    if scenario.monitor.callback == "tunnel":
        return scenario
    return replace(scenario, monitor=replace(scenario.monitor, callback="tunnel"))


def scenario_lab(scenario: Scenario) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The roles a scenario needs a VM for and the ports its probes name."""
    roles = set(scenario.targets) | {s.target for s in scenario.all_steps() if s.target}
    return tuple(sorted(roles)) or (DEFAULT_ROLE,), ports_from_scenario(scenario)


def _mem_available_mib() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return None


def _check_options(options: UpOptions) -> None:
    if options.envs < 1:
        raise LabError(f"--envs must be at least 1, not {options.envs}")
    if options.memory_mib < 256:
        raise LabError(f"--memory must be at least 256 MiB, not {options.memory_mib}")
    if options.cpus < 1:
        raise LabError(f"--cpus must be at least 1, not {options.cpus}")
    if not options.roles:
        raise LabError("a lab needs at least one role")


def _check_memory(count: int, memory_mib: int) -> None:
    available = _mem_available_mib()
    needed = count * (memory_mib + QEMU_OVERHEAD_MIB)
    if available is not None and available < needed:
        raise ResourceError(
            f"not enough memory for {count} VM(s) of {memory_mib} MiB: {available} MiB available "
            f"(MemAvailable), about {needed} MiB needed; use --memory or fewer --envs"
        )


def _check_disk(folder: Path, count: int) -> None:
    free = shutil.disk_usage(folder).free
    needed = count * OVERLAY_DISK_BYTES
    if free < needed:
        raise ResourceError(
            f"not enough free disk in {folder} for {count} VM overlay(s): "
            f"{free / 1024**2:.0f} MiB free, {needed / 1024**2:.0f} MiB needed"
        )


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """Cleanup is short and bounded: a second Ctrl-C must not cut it half way."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def lab_up(options: UpOptions, progress: Progress) -> LabState:
    """Start a lab and write its inventory.

    Args:
        options: roles, environments, VM size, ports, the inventory to write.
        progress: called with one line of text per thing worth saying.

    Returns:
        The lab's state, every VM answering SSH.

    Raises:
        LabError: (or a subclass) anything that stops the lab from coming up; nothing is
        left running or on disk then.
    """
    with sigterm_as_interrupt():  # from the start: an image build cleans up on SIGTERM too
        return _up(options, progress)


def _up(options: UpOptions, progress: Progress) -> LabState:
    _check_options(options)
    inventory = options.inventory.resolve()
    lab_dir = lab_dir_for(inventory)
    if (lab_dir / "state.json").exists():
        state = load_state(inventory)
        if any(qemu_alive(vm.pid, Path(vm.overlay)) for vm in state.vms):
            raise LabError(f"a lab is already up for {inventory}: `chaosrun lab down -i {inventory}` first")
        _remove_lab_files(state)  # a lab whose VMs are all gone (a reboot of this machine)
    if inventory.exists() and not is_lab_inventory(inventory):
        raise LabError(f"{inventory} exists and was not written by `chaosrun lab up`; choose another -o")
    qemu = find_tool("qemu-system-x86_64", "qemu-system-x86")
    qemu_img = find_tool("qemu-img", "qemu-utils")
    ssh = find_tool("ssh", "openssh-client")
    count = options.envs * len(options.roles)
    _check_memory(count, options.memory_mib)
    image = ensure_image(progress)
    inventory.parent.mkdir(parents=True, exist_ok=True)
    _check_disk(inventory.parent, count)
    accel = choose_accel(options.accel)
    progress(f"lab: {accel.name} ({accel.reason})")
    warm = None
    if not options.cold:
        warm = ensure_warm(
            image,
            accel,
            qemu,
            qemu_img,
            ssh,
            memory_mib=options.memory_mib,
            cpus=options.cpus,
            boot_timeout=options.boot_timeout,
            progress=progress,
        )
    tools = _Tools(qemu, qemu_img, ssh)
    for tries_left in reversed(range(ADDRESS_TRIES)):
        try:
            return _attempt(options, inventory, image, accel, warm, tools, progress)
        except RestoreError as exc:
            if warm is None:
                raise
            progress(f"lab: {exc}; forgetting the saved VM and booting cold")
            forget_warm(warm)
            warm = None
        except _AddressRace as exc:
            if not tries_left:
                raise
            progress(f"lab: {exc} since it was checked (another lab starting?); trying other addresses")
    raise AssertionError("unreachable")


class _AddressRace(PortTakenError):
    """qemu could not bind a port that was free when the lab checked it: another program
    (another lab starting at the same time) took it in between."""


@dataclass(frozen=True)
class _Tools:
    qemu: str
    qemu_img: str
    ssh: str


def _attempt(
    options: UpOptions,
    inventory: Path,
    image: Image,
    accel: Accel,
    warm: Warm | None,
    tools: _Tools,
    progress: Progress,
) -> LabState:
    """Start the lab's VMs (restored from ``warm``, or booted) and write the inventory; on
    any failure, stop what started and remove the lab's files."""
    lab_dir = lab_dir_for(inventory)
    count = options.envs * len(options.roles)
    forwards = forwards_for(options.service_ports, options.ssh_port)
    addresses = allocate_addresses(count, options.ssh_port)
    for address in addresses:
        check_forwards(address, forwards)
    try:
        lab_dir.mkdir(mode=0o700)
    except FileExistsError:
        raise LabError(f"{lab_dir} is in the way (not a lab's folder?); remove it or choose another -o") from None
    state = LabState(
        inventory=str(inventory),
        dir=str(lab_dir),
        image=image.id,
        accel=accel.name,
        accel_reason=accel.reason,
        memory_mib=options.memory_mib,
        cpus=options.cpus,
        identity=str(lab_dir / "id_ed25519"),
        known_hosts=str(lab_dir / "known_hosts"),
        created_at=time.time(),
    )
    try:
        state = _start_all(state, options, image, accel, warm, tools, forwards, addresses, progress)
        write_inventory(state)
    except BaseException:
        with _no_interrupts():
            # state.json is saved before each qemu starts: it knows every VM there may be
            with contextlib.suppress(LabError):
                state = load_state(inventory)
            _teardown(state, progress)
        raise
    return state


def _start_all(
    state: LabState,
    options: UpOptions,
    image: Image,
    accel: Accel,
    warm: Warm | None,
    tools: _Tools,
    forwards: Sequence[Forward],
    addresses: Sequence[str],
    progress: Progress,
) -> LabState:
    lab_dir = Path(state.dir)
    lab_id = secrets.token_hex(4)
    generate_key(Path(state.identity), f"chaosrun-lab-{lab_id}")
    authorized = Path(state.identity + ".pub")
    known: list[str] = []
    slots = [(f"lab-{i}", role) for i in range(1, options.envs + 1) for role in options.roles]
    for (env, role), address in zip(slots, addresses, strict=True):
        files = VmFiles(lab_dir, f"{env}-{role}")
        host_public = generate_key(files.host_key, f"chaosrun-lab-{lab_id}-{files.name}")
        files.hostname.write_text(role if options.envs == 1 else f"{role}-{env.removeprefix('lab-')}")
        known.append(known_hosts_line(address, options.ssh_port, host_public))
        vm = VmRecord(
            name=files.name,
            env=env,
            role=role,
            address=address,
            ssh_port=options.ssh_port,
            forwards=tuple(forwards),
            overlay=str(files.overlay),
            console=str(files.console),
            host_key=" ".join(host_public.split()[:2]),
        )
        state = state.with_vm(vm)
    Path(state.known_hosts).write_text("\n".join(known) + "\n")
    save_state(state)
    started = time.monotonic()
    for vm in state.vms:
        files = VmFiles(lab_dir, vm.name)
        create_overlay(tools.qemu_img, image, files.overlay, over=warm.disk if warm else None)
        command = qemu_command(
            tools.qemu,
            image,
            accel,
            files,
            address=vm.address,
            forwards=vm.forwards,
            authorized_keys=authorized,
            memory_mib=options.memory_mib,
            cpus=options.cpus,
            incoming=warm.memory if warm else None,
        )
        # the state names the overlay before qemu runs, so a lab killed right now can still be taken down
        try:
            pid = start_qemu(command, files, vm.address)
        except PortTakenError as exc:
            raise _AddressRace(str(exc)) from None
        except VmBootError as exc:
            if warm is None:
                raise
            # a saved memory qemu cannot load: its qemu may even exit (and remove its PID file)
            # before start_qemu reads it
            raise RestoreError(f"the saved VM did not restore ({exc})") from None
        state = state.with_vm(replace(vm, pid=pid, started_at=time.time()))
        save_state(state)
        how = "restoring the saved VM" if warm else "booting"
        progress(f"lab: started {vm.env}/{vm.role} on {vm.address} (qemu pid {pid}, {accel.name}, {how})")
    if warm is not None:
        make_own(state, warm, tools.ssh, options.boot_timeout, started)
    wait_ready(state, tools.ssh, options.boot_timeout, started, progress)
    return state


def _teardown(state: LabState, progress: Progress) -> int:
    """Stop every VM of ``state`` by PID (or find the qemu of an overlay whose PID never got
    written) and remove the lab's files. Returns how many VMs were running."""
    stopped = 0
    for vm in state.vms:
        overlay = Path(vm.overlay)
        pid = vm.pid if qemu_alive(vm.pid, overlay) else find_qemu(overlay)
        if pid is not None:
            t0 = time.monotonic()
            if stop_qemu(pid, overlay):
                stopped += 1
                progress(f"lab: stopped {vm.env}/{vm.role} (qemu pid {pid}) in {time.monotonic() - t0:.1f} s")
    _remove_lab_files(state)
    return stopped


def _remove_lab_files(state: LabState) -> None:
    shutil.rmtree(state.dir, ignore_errors=True)
    inventory = Path(state.inventory)
    if is_lab_inventory(inventory):
        inventory.unlink(missing_ok=True)


def lab_down(inventory: Path, progress: Progress) -> int:
    """Stop the lab's VMs (SIGTERM, SIGKILL after a grace), remove its overlays, files and
    inventory. Returns how many VMs were running.

    Raises:
        LabError: there is no lab for ``inventory``.
    """
    state = load_state(inventory.resolve())
    with _no_interrupts():
        return _teardown(state, progress)


def lab_status(inventory: Path, probe_ssh: Callable[[str, int], bool] | None = None) -> list[VmStatus]:
    """Each VM of the lab: running or not, PID, address, accelerator, uptime, SSH answering.

    Raises:
        LabError: there is no lab for ``inventory``.
    """
    state = load_state(inventory.resolve())
    probe = probe_ssh or (lambda address, port: ssh_banner(address, port, timeout=2.0))
    out = []
    for vm in state.vms:
        running = qemu_alive(vm.pid, Path(vm.overlay))
        out.append(
            VmStatus(
                name=vm.name,
                env=vm.env,
                role=vm.role,
                address=vm.address,
                ssh_port=vm.ssh_port,
                pid=vm.pid,
                running=running,
                uptime=process_uptime(vm.pid) if running and vm.pid else None,
                ssh=running and probe(vm.address, vm.ssh_port),
                accel=state.accel,
            )
        )
    return out


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_status(statuses: Sequence[VmStatus]) -> str:
    """A table, one VM per line."""
    rows = [("VM", "ADDRESS", "PID", "STATE", "ACCEL", "UPTIME", "SSH")]
    for s in statuses:
        rows.append(
            (
                f"{s.env}/{s.role}",
                f"{s.address}:{s.ssh_port}",
                str(s.pid or "-"),
                "running" if s.running else "stopped",
                s.accel,
                _duration(s.uptime),
                "answers" if s.ssh else "no answer",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
