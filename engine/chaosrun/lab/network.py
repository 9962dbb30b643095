"""Lab: each VM's loopback address and the ports forwarded to it.

A VM lives on its own address 127.0.0.N (N from 2 up: 127.0.0.1 is the monitor's own), and
qemu's user-mode network forwards that address's SSH port and the service ports a
scenario grades (``from: monitor`` probes dial the VM's address like any host's) into the
guest. ``restrict=on`` cuts the guest off from everything else, this machine included.

An address is free when its SSH port is: that is where another lab VM (or anything else)
would sit. A service port taken on a free address is an error, never a silent move to the
next address, so a VM's address does not depend on what else happens to be listening.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ChaosrunError
from ..expr.templates import render_static
from ..scenario import Scenario, StepKind
from .errors import LabError, PortTakenError

__all__ = [
    "DEFAULT_SERVICE_PORTS",
    "Forward",
    "allocate_addresses",
    "check_forwards",
    "forwards_for",
    "ports_from_scenario",
]

#: Forwarded when no scenario says otherwise: web, TLS, DNS.
DEFAULT_SERVICE_PORTS = (80, 443, 53)
GUEST_SSH_PORT = 22
FIRST_HOST = 2
LAST_HOST = 254


@dataclass(frozen=True, order=True)
class Forward:
    """qemu ``hostfwd``: ``proto`` ``host_port`` on the VM's address to ``guest_port`` in the guest."""

    proto: str  # tcp or udp
    host_port: int
    guest_port: int

    def hostfwd(self, address: str) -> str:
        return f"hostfwd={self.proto}:{address}:{self.host_port}-:{self.guest_port}"


def ports_from_scenario(scenario: Scenario) -> tuple[int, ...]:
    """The ports the scenario's probes name (``with: {port: N}``, ``${vars...}`` resolved).

    A port only known at run time (from another step's result) cannot be forwarded ahead
    and is left out.
    """
    scope: dict[str, Any] = {"vars": dict(scenario.vars)}
    found: set[int] = set()
    for step in scenario.all_steps():
        if step.kind is not StepKind.PROBE or "port" not in step.params:
            continue
        try:
            value = render_static(step.params["port"], scope)
        except ChaosrunError:
            continue
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
            found.add(value)
    return tuple(sorted(found))


def forwards_for(service_ports: Iterable[int], ssh_port: int = GUEST_SSH_PORT) -> tuple[Forward, ...]:
    """SSH (``ssh_port`` on the host to the guest's 22), each service port to itself over
    TCP, and DNS (53) over UDP too."""
    out = {Forward("tcp", ssh_port, GUEST_SSH_PORT)}
    for port in service_ports:
        if port == GUEST_SSH_PORT and ssh_port == GUEST_SSH_PORT:
            continue
        out.add(Forward("tcp", port, port))
        if port == 53:
            out.add(Forward("udp", port, port))
    return tuple(sorted(out, key=lambda f: (f.host_port, f.proto)))


def _bind_error(address: str, proto: str, port: int) -> OSError | None:
    """None when ``address:port`` can be bound now (as qemu will, with SO_REUSEADDR)."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
            if proto == "tcp":
                sock.listen(1)
        except OSError as exc:
            return exc
    return None


def _raise_for(address: str, forward: Forward, exc: OSError) -> None:
    where = f"{address}:{forward.host_port}" + ("/udp" if forward.proto == "udp" else "")
    if exc.errno == errno.EADDRINUSE:
        raise PortTakenError(f"port {where} is already taken (a VM of this lab would forward it)")
    if exc.errno == errno.EACCES:
        raise LabError(
            f"cannot bind {where}: permission denied (ports below 1024 need root, "
            "or sysctl net.ipv4.ip_unprivileged_port_start)"
        )
    raise LabError(f"cannot bind {where}: {exc.strerror or exc}")


def check_forwards(address: str, forwards: Sequence[Forward]) -> None:
    """Check that every forwarded port of ``address`` is free.

    Raises:
        PortTakenError: one is taken (``port 127.0.0.2:80 is already taken``).
        LabError: one cannot be bound for another reason (a port below 1024 as non-root).
    """
    for forward in forwards:
        exc = _bind_error(address, forward.proto, forward.host_port)
        if exc is not None:
            _raise_for(address, forward, exc)


def allocate_addresses(count: int, ssh_port: int = GUEST_SSH_PORT, exclude: Iterable[str] = ()) -> list[str]:
    """The first ``count`` addresses 127.0.0.N (N >= 2) whose SSH port is free.

    Raises:
        LabError: fewer than ``count`` such addresses (or SSH's port cannot be bound at all).
    """
    skip = set(exclude)
    found: list[str] = []
    for n in range(FIRST_HOST, LAST_HOST + 1):
        address = f"127.0.0.{n}"
        if address in skip:
            continue
        exc = _bind_error(address, "tcp", ssh_port)
        if exc is None:
            found.append(address)
            if len(found) == count:
                return found
        elif exc.errno != errno.EADDRINUSE:
            _raise_for(address, Forward("tcp", ssh_port, GUEST_SSH_PORT), exc)
    raise LabError(
        f"only {len(found)} of the {count} loopback addresses needed have port {ssh_port} free "
        f"(127.0.0.{FIRST_HOST}-127.0.0.{LAST_HOST}): take labs down (`chaosrun lab down`), "
        "or forward SSH from another port (--ssh-port) if a server listens on all addresses"
    )
