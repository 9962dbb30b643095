"""Lab: what a lab leaves on disk between commands, and the inventory it hands to the others.

``chaosrun lab up -o lab.yml`` writes the inventory ``lab.yml`` and, beside it, the lab's
folder ``lab.yml.lab/`` (mode 0700): ``state.json`` (each VM's PID, address, forwards,
overlay), the lab's SSH client key, the known_hosts file pinning each VM's host key, and
per VM its overlay, host key, console log and qemu log. ``lab status`` and ``lab down``
find everything from the inventory's path; ``lab down`` removes the folder and the
inventory.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import LabError
from .network import Forward

__all__ = [
    "INVENTORY_MARK",
    "LabState",
    "VmRecord",
    "generate_key",
    "known_hosts_line",
    "lab_dir_for",
    "load_state",
    "save_state",
    "write_inventory",
]

STATE_VERSION = 1
INVENTORY_MARK = "# chaosrun lab inventory"


@dataclass(frozen=True)
class VmRecord:
    """One VM of a lab, as ``state.json`` keeps it."""

    name: str  # "<env>-<role>": the prefix of its files
    env: str
    role: str
    address: str
    ssh_port: int
    forwards: tuple[Forward, ...]
    overlay: str
    console: str
    host_key: str  # "ssh-ed25519 AAAA..." (the public half, pinned in known_hosts)
    pid: int | None = None
    started_at: float | None = None  # time.time() when qemu was started


@dataclass(frozen=True)
class LabState:
    """A lab: where its files are, how its VMs run, and the VMs."""

    inventory: str
    dir: str
    image: str
    accel: str
    accel_reason: str
    memory_mib: int
    cpus: int
    identity: str
    known_hosts: str
    created_at: float
    vms: tuple[VmRecord, ...] = field(default_factory=tuple)

    @property
    def state_file(self) -> Path:
        return Path(self.dir) / "state.json"

    def with_vm(self, vm: VmRecord) -> LabState:
        """This state with ``vm`` added, or replacing the VM of the same name."""
        vms = [vm if v.name == vm.name else v for v in self.vms]
        if vm.name not in {v.name for v in self.vms}:
            vms.append(vm)
        return replace(self, vms=tuple(vms))


def lab_dir_for(inventory: Path) -> Path:
    """The lab folder of an inventory: ``lab.yml`` -> ``lab.yml.lab``."""
    return inventory.with_name(inventory.name + ".lab")


def save_state(state: LabState) -> None:
    """Write ``state.json`` atomically (a crash never leaves half a state)."""
    data = {"version": STATE_VERSION, **asdict(state)}
    tmp = state.state_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, state.state_file)


def _vm(data: dict[str, Any]) -> VmRecord:
    forwards = tuple(Forward(f["proto"], int(f["host_port"]), int(f["guest_port"])) for f in data["forwards"])
    return VmRecord(**{**data, "forwards": forwards})


def load_state(inventory: Path) -> LabState:
    """The state of the lab whose inventory is ``inventory``.

    Raises:
        LabError: there is no lab for it, or its state cannot be read.
    """
    path = lab_dir_for(inventory) / "state.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabError(f"no lab for {inventory}: {path} does not exist (was it made by `chaosrun lab up`?)") from None
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read the lab state {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise LabError(f"{path} is not a lab state this chaosrun can read (version {data.get('version')!r})")
    try:
        data.pop("version")
        vms = tuple(_vm(v) for v in data.pop("vms"))
        return LabState(**data, vms=vms)
    except (KeyError, TypeError, ValueError) as exc:
        raise LabError(f"cannot read the lab state {path}: {exc}") from None


def generate_key(private_path: Path, comment: str) -> str:
    """Write a new Ed25519 private key (OpenSSH format, mode 0600) and its ``.pub``;
    returns the public line ``ssh-ed25519 AAAA... comment``."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    line = f"{public.decode()} {comment}"
    private_path.with_name(private_path.name + ".pub").write_text(line + "\n")
    return line


def known_hosts_line(address: str, port: int, public_line: str) -> str:
    """A known_hosts line as OpenSSH writes it (``[addr]:port`` unless the port is 22)."""
    name = address if port == 22 else f"[{address}]:{port}"
    key_type, key_b64 = public_line.split()[:2]
    return f"{name} {key_type} {key_b64}"


def write_inventory(state: LabState) -> None:
    """Write the lab's inventory: one environment per ``env``, its roles on the VMs' addresses,
    root over SSH with the lab's key, the host keys pinned."""
    environments: dict[str, dict[str, dict[str, Any]]] = {}
    for vm in state.vms:
        environments.setdefault(vm.env, {})[vm.role] = {"host": vm.address, "port": vm.ssh_port}
    data = {
        "defaults": {
            "user": "root",
            "identity": state.identity,
            "known_hosts": state.known_hosts,
            "insecure": False,
            "tmp_dir": "/tmp",
        },
        "environments": environments,
    }
    header = (
        f"{INVENTORY_MARK}: {len(state.vms)} VM(s) of image {state.image} ({state.accel}).\n"
        f"# Its files: {state.dir}. `chaosrun lab down -i {state.inventory}` stops the VMs and removes them.\n"
        "# Callbacks: the guest reaches nothing but SSH (qemu restrict=on), so scenarios run here\n"
        "# need `monitor: {callback: tunnel}`.\n"
    )
    path = Path(state.inventory)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    os.replace(tmp, path)


def is_lab_inventory(path: Path) -> bool:
    """True when ``path`` is an inventory ``chaosrun lab up`` wrote (its first line says so)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().startswith(INVENTORY_MARK)
    except (OSError, UnicodeDecodeError):
        return False
