"""Test hosts with addresses of their own: network namespaces on a bridge.

The monitor stays in the root namespace on the bridge's address; each test host is a
namespace with a veth on the bridge and an OpenSSH sshd of its own, so a callback
crosses a real interface and monitor.bind/advertise are used for real. Only addresses
inside the subnet made here are ever dialled; everything is removed at the end.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from chaosrun.testing import LocalSshd, local_sshd


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class ExamHost:
    netns: str
    address: str
    sshd: LocalSshd


@dataclass(frozen=True)
class ExamNetwork:
    bridge: str
    monitor_address: str  # the root namespace's address on the bridge
    hosts: list[ExamHost]
    subnet_prefix: str  # "10.231.N."

    def unused_address(self) -> str:
        """An address in the subnet where no host answers (a machine that is down)."""
        return self.subnet_prefix + "250"


@contextlib.contextmanager
def exam_network(workdir: Path, count: int) -> Iterator[ExamNetwork]:
    tag = secrets.token_hex(2)
    net = secrets.randbelow(200) + 20
    prefix = f"10.231.{net}."
    bridge = f"crb{tag}"
    made: list[str] = []
    try:
        ip("link", "add", bridge, "type", "bridge")
        ip("addr", "add", prefix + "1/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        for i in range(count):
            ns = f"crn{tag}-{i}"
            ip("netns", "add", ns)
            made.append(ns)
            outer, inner = f"cv{tag}{i}", f"ci{tag}{i}"
            ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            ip("link", "set", outer, "master", bridge)
            ip("link", "set", outer, "up")
            ip("link", "set", inner, "netns", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{prefix}{10 + i}/24", "dev", inner)
            ip("-n", ns, "link", "set", inner, "up")
        with contextlib.ExitStack() as stack:
            hosts = []
            for i, ns in enumerate(made):
                address = f"{prefix}{10 + i}"
                server = stack.enter_context(local_sshd(workdir, host=address, netns=ns))
                hosts.append(ExamHost(ns, address, server))
            yield ExamNetwork(bridge, prefix + "1", hosts, prefix)
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
