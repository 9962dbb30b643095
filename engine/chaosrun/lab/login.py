"""Lab: SSH into a lab VM with the OpenSSH client, the lab's key and its pinned host keys.

The lab is synchronous; it does not use the runtime's asyncssh connector (only ``run/``
may). OpenSSH is told to read no user or system configuration, to offer only the lab's
key, and to refuse any host key but the pinned one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["ssh_command"]


def ssh_command(
    ssh: str,
    *,
    identity: Path | str,
    known_hosts: Path | str,
    address: str,
    port: int,
    command: Sequence[str] | str,
    user: str = "root",
    connect_timeout: int = 10,
) -> list[str]:
    """The argv of ``ssh`` running ``command`` on ``user@address:port`` (host key checked)."""
    remote = command if isinstance(command, str) else " ".join(command)
    return [
        ssh,
        "-F",
        "/dev/null",
        "-i",
        str(identity),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "UpdateHostKeys=no",
        "-o",
        f"ConnectTimeout={connect_timeout}",
        "-o",
        "LogLevel=ERROR",
        "-p",
        str(port),
        f"{user}@{address}",
        remote,
    ]
