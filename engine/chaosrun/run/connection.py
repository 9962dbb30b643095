"""Run stage, the connection seam: the few things the runner needs from a target.

The runner deploys and runs a module through a :class:`Connection` (write a file, start a
process with bytes on its stdin, remove a file, forward a port back to the monitor, the
machine's facts) and gets connections from a :class:`Connector`, chosen in the run options.
SSH is the default connector (``run.ssh``); ``run.local`` runs the same binaries as local
processes on the monitor, for fast tests of the runner itself; a lab VM or any later
transport plugs in here too. Nothing in this module is SSH-specific, and the runner imports
no transport of its own accord: it gets one from ``RunOptions.connector``.

Commands are POSIX shell command lines (the runner quotes its arguments with
``shlex.quote``); how a connector gets them to a shell is its own business.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import ChaosrunError
from ..scenario import TargetSpec

__all__ = [
    "Connection",
    "Connector",
    "DiskSpace",
    "ExecResult",
    "Facts",
    "Forward",
    "Process",
    "TargetError",
    "TargetTimeout",
    "stopped_in_stat",
]


class TargetError(ChaosrunError):
    """An operation on a target failed. ``str(err)`` is ``"<host label>: <reason>"``."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason


class TargetTimeout(TargetError):
    """A command or the connection did not finish in time (the command was stopped)."""


@dataclass(frozen=True)
class ExecResult:
    """How a command ended. ``exit_status`` is None when it died of ``signal``."""

    exit_status: int | None
    signal: str | None
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@dataclass(frozen=True)
class DiskSpace:
    """What a folder's filesystem has room for (``statvfs``)."""

    free_bytes: int  # for an unprivileged writer (f_bavail)
    free_inodes: int | None  # None: the filesystem does not count inodes
    read_only: bool


@dataclass(frozen=True)
class Facts:
    """What the runner knows about a target machine, asked once per connection.

    ``machine`` is ``uname -m`` (``x86_64``, ``aarch64``...): it picks the module build.
    ``boot_id`` is the kernel's random id of the current boot (``/proc/sys/kernel/random/
    boot_id``): a new one proves a reboot happened. None where the target has none.
    """

    machine: str
    boot_id: str | None = None


class Process(Protocol):
    """A command started by :meth:`Connection.start`; the caller waits for it or ends it."""

    async def wait(self) -> ExecResult:
        """Wait for the command to end. Cancelling this stops the command.

        Raises:
            TargetError: the connection broke before the command ended.
        """
        ...

    async def stopped(self) -> bool | None:
        """Whether the command is stopped (SIGSTOP, a tracer) right now; None when it has
        ended or this cannot be told. Read on the target, so a hint, not proof."""
        ...

    async def terminate(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; returns once it is gone.

        Shielded, so it also works as cleanup inside a cancelled scope.
        """
        ...


class Forward(Protocol):
    """A port on the target's 127.0.0.1 whose connections lead back to the monitor."""

    @property
    def port(self) -> int: ...

    async def close(self) -> None:
        """Stop listening on the target (shielded: usable as cleanup)."""
        ...


class Connection(Protocol):
    """One open connection to one target; steps of an environment share it.

    Made by a :class:`Connector`, which owns it and closes it (stopping what still runs).
    """

    @property
    def label(self) -> str:
        """How the target is named in messages, e.g. ``root@10.0.0.5:22``."""
        ...

    @property
    def audit_fields(self) -> Mapping[str, Any]:
        """What the audit log's ``connect`` record says of it (e.g. the host key)."""
        ...

    async def facts(self) -> Facts:
        """The machine's facts (cached by the connection).

        Raises:
            TargetError: they could not be found out.
        """
        ...

    async def write_file(self, path: str, data: bytes, mode: int = 0o700) -> None:
        """Create ``path`` holding ``data`` with permissions ``mode``; never replace anything.

        Raises:
            TargetError: something exists at ``path``, or the write failed (a partly
                written file is removed).
        """
        ...

    async def start(self, command: str, *, input: bytes | None = None) -> Process:
        """Start ``command`` with ``input`` on its stdin (then EOF); don't wait for it.

        Raises:
            TargetError: it could not be started.
        """
        ...

    async def run(self, command: str, *, input: bytes | None = None, timeout: float | None = None) -> ExecResult:
        """Run ``command`` and wait for it; on ``timeout`` it is stopped.

        Raises:
            TargetTimeout: ``timeout`` passed.
            TargetError: it could not be started or the connection broke.
        """
        ...

    async def remove(self, path: str) -> None:
        """Delete the file ``path``; a missing file is fine.

        Raises:
            TargetError: it exists but could not be removed.
        """
        ...

    async def exists(self, path: str) -> bool:
        """Whether anything (a file, a dangling symlink...) is at ``path``.

        Raises:
            TargetError: it could not be found out.
        """
        ...

    async def disk_space(self, path: str) -> DiskSpace:
        """The free space of the filesystem holding the folder ``path``.

        Raises:
            TargetError: it could not be found out (no such folder, no statvfs).
        """
        ...

    async def forward_remote_port(self, dest_host: str, dest_port: int) -> Forward:
        """Listen on the target's loopback; carry each connection made there back to
        ``dest_host:dest_port`` on the monitor. The caller closes the forward.

        Raises:
            TargetError: the target refused.
        """
        ...


class Connector(Protocol):
    """Where connections come from. One connector serves a whole run.

    ``open_shared`` is entered once around the run (SSH: the asyncio loop thread that all
    connections share); ``open_connection`` opens one target's connection inside it.
    """

    name: str  # "ssh", "local": written to the audit log

    def open_shared(self) -> AbstractAsyncContextManager[None]: ...

    def open_connection(
        self, target: TargetSpec, *, connect_timeout: float
    ) -> AbstractAsyncContextManager[Connection]: ...


def stopped_in_stat(stat: str) -> bool | None:
    """Whether a ``/proc/PID/stat`` line says the process is stopped (``T``) or traced (``t``)."""
    _, paren, rest = stat.rpartition(")")
    fields = rest.split()
    if not paren or not fields:
        return None
    return fields[0] in ("T", "t")
