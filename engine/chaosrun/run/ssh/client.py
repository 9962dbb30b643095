"""Run stage, SSH transport: ``SshConnection`` (the connection seam over SSH), ``open_ssh``,
the ``SshConnector``, and ``try_login`` for the monitor's ``ssh_login`` probe."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ParamSpec, TypeVar

import asyncssh
import trio

from ...scenario import TargetSpec
from ..bridge import call_in_loop, loop_for_connection, open_bridge
from ..connection import DiskSpace, ExecResult, Facts, stopped_in_stat
from .core import (
    _ST_RDONLY,
    CLOSE_TIMEOUT,
    KILL_GRACE,
    HostSpec,
    RemoteFileExists,
    SshError,
    SshTimeout,
    _aio_close,
    _aio_connect,
    _aio_exists,
    _aio_remove,
    _aio_run,
    _aio_start,
    _aio_wait,
    _aio_write_file,
    _check_identity,
    _mapped_errors,
    _raise_mapped,
    _resolve_known_hosts,
    _Session,
)
from .tunnel import RemoteForward, _TunnelSession

_P = ParamSpec("_P")
_T = TypeVar("_T")


class Process:
    """A remote command started by ``SshConnection.start``, still running or finished."""

    def __init__(self, conn: SshConnection, command: str, session: _Session) -> None:
        self._conn = conn
        self._session = session
        self._finished = False
        self.command = command

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._conn._forget(self._session)
            self._conn._slots.release()

    async def wait(self) -> ExecResult:
        """Wait for the command to end. Cancelling this stops the remote command.

        Raises:
            SshError: the connection broke before the command ended.
        """
        try:
            result = await self._conn._call(_aio_wait, self._session)
        finally:
            self._finish()
        self._conn._check_session(self._session, f"running {self.command!r}")
        return result

    async def stopped(self) -> bool | None:
        """Read the command's state from ``/proc`` on the target (its process group leader)."""
        pgid = self._session.pgid
        if pgid is None or self._session.done.is_set():
            return None
        with trio.move_on_after(KILL_GRACE):
            try:
                result = await self._conn.run(f"cat /proc/{pgid}/stat")
            except SshError:
                return None
            return stopped_in_stat(result.stdout.decode("ascii", "replace")) if result.ok else None
        return None

    async def terminate(self) -> None:
        """SIGTERM, then SIGKILL after ``KILL_GRACE`` seconds; returns once it is gone.

        Runs shielded, so it also works as cleanup inside a cancelled scope.
        """
        try:
            with trio.CancelScope(shield=True):
                await self._conn._call(self._session.stop)
        finally:
            self._finish()


class SshConnection:
    """One authenticated SSH connection; many concurrent commands may share it.

    Made by ``open_ssh``, which owns it and closes it on exit. sshd caps the channels of one
    connection (``MaxSessions``, 10 by default) and refuses the next one outright, so commands
    beyond ``max_sessions - 2`` wait their turn here; the two spare channels are for the SFTP
    session and for killing a cancelled command.
    """

    def __init__(
        self,
        spec: HostSpec,
        conn: asyncssh.SSHClientConnection,
        loop: Any,
        host_key_fingerprint: str,
        max_sessions: int,
    ) -> None:
        self.spec = spec
        self.host_key_fingerprint = host_key_fingerprint
        self._conn = conn
        self._loop = loop
        self._sessions: set[_Session] = set()
        self._sftp: asyncssh.SFTPClient | None = None
        self._sftp_lock = trio.Lock()
        self._facts: Facts | None = None
        self._slots = trio.Semaphore(max(1, max_sessions - 2))

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def audit_fields(self) -> Mapping[str, Any]:
        return {"host_key": self.host_key_fingerprint}

    async def _call(self, fn: Callable[_P, Awaitable[_T]], *args: _P.args, **kw: _P.kwargs) -> _T:
        return await call_in_loop(self._loop, fn, *args, **kw)

    def _forget(self, session: _Session) -> None:
        self._sessions.discard(session)

    def _check_session(self, session: _Session, doing: str) -> None:
        if session.error is not None:
            _raise_mapped(self.spec.label, session.error, doing)

    async def start(self, command: str, *, input: bytes | None = None) -> Process:
        """Start ``command`` with ``input`` on its stdin (then EOF); don't wait for it.

        The caller owns the returned Process: ``wait()`` it or ``terminate()`` it. A process
        still running when the connection closes is sent SIGKILL.

        Raises:
            SshError: the session could not be opened.
        """
        await self._slots.acquire()
        try:
            with _mapped_errors(self.spec.label, f"starting {command!r}"):
                session = await self._call(_aio_start, self._conn, command, input)
        except BaseException:
            self._slots.release()
            raise
        self._sessions.add(session)
        return Process(self, command, session)

    async def run(self, command: str, *, input: bytes | None = None, timeout: float | None = None) -> ExecResult:
        """Run ``command`` through the remote user's shell and wait for it to end.

        Args:
            command: a shell command line; quote arguments with ``shlex.quote``.
            input: bytes for the command's stdin; EOF follows (also when None).
            timeout: seconds; on expiry the command is stopped (TERM, then KILL).

        Returns:
            Exit status or signal, and all of stdout and stderr.

        Raises:
            SshTimeout: ``timeout`` passed.
            SshError: the session could not be opened or the connection broke.
        """
        doing = f"running {command!r}"
        with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
            async with self._slots:
                with _mapped_errors(self.spec.label, doing):
                    session, result = await self._call(_aio_run, self._conn, command, input)
            self._check_session(session, doing)
            return result
        assert scope.cancelled_caught
        raise SshTimeout(self.spec.label, f"timed out after {timeout}s {doing} (stopped it)")

    async def forward_remote_port(self, dest_host: str, dest_port: int) -> RemoteForward:
        """Listen on the target's loopback (a port the server picks); every connection
        made there is carried over this SSH connection to ``dest_host:dest_port`` here.

        The caller owns the forward and closes it (``await fwd.close()``).

        Raises:
            SshError: the server refused (e.g. ``AllowTcpForwarding no``).
        """
        loop = self._loop

        def session_factory(_orig_host: str, _orig_port: int) -> _TunnelSession:
            return _TunnelSession(loop, dest_host, dest_port)

        with _mapped_errors(self.spec.label, "opening a remote port forward"):
            listener = await self._call(self._conn.create_server, session_factory, "127.0.0.1", 0)
        return RemoteForward(self, listener)

    async def _sftp_client(self) -> asyncssh.SFTPClient:
        async with self._sftp_lock:
            if self._sftp is None:
                with _mapped_errors(self.spec.label, "starting sftp"):
                    self._sftp = await self._call(self._conn.start_sftp_client)
            return self._sftp

    async def write_file(self, path: str, data: bytes, mode: int = 0o700) -> None:
        """Create ``path`` holding ``data`` with permissions ``mode``, over SFTP.

        The create is exclusive (``O_CREAT|O_EXCL``): an existing file, directory or symlink
        at ``path`` is never replaced. A partly written file is removed on failure.

        Raises:
            RemoteFileExists: something already exists at ``path``.
            SshError: any other failure (no such directory, permission, connection).
        """
        sftp = await self._sftp_client()
        try:
            await self._call(_aio_write_file, sftp, path, data, mode)
        except asyncssh.SFTPError as exc:
            # SFTP v3 has no "already exists" status (OpenSSH answers a plain "Failure").
            with _mapped_errors(self.spec.label, f"writing {path}"):
                exists = await self._call(_aio_exists, sftp, path)
            if exists:
                raise RemoteFileExists(self.spec.label, f"{path} already exists") from exc
            _raise_mapped(self.spec.label, exc, f"writing {path}")
        except (asyncssh.Error, OSError) as exc:
            _raise_mapped(self.spec.label, exc, f"writing {path}")

    async def remove(self, path: str) -> None:
        """Delete the file ``path``; a missing file is fine.

        Raises:
            SshError: the file exists but could not be removed.
        """
        sftp = await self._sftp_client()
        with _mapped_errors(self.spec.label, f"removing {path}"):
            await self._call(_aio_remove, sftp, path)

    async def exists(self, path: str) -> bool:
        """Whether anything is at ``path`` (``lstat`` over SFTP)."""
        sftp = await self._sftp_client()
        with _mapped_errors(self.spec.label, f"looking at {path}"):
            return await self._call(_aio_exists, sftp, path)

    async def disk_space(self, path: str) -> DiskSpace:
        """``statvfs`` of ``path`` over SFTP (OpenSSH's statvfs@openssh.com extension)."""
        sftp = await self._sftp_client()
        with _mapped_errors(self.spec.label, f"asking the free space of {path}"):
            attrs = await self._call(sftp.statvfs, path)
        return DiskSpace(
            free_bytes=attrs.bavail * (attrs.frsize or attrs.bsize),
            free_inodes=attrs.favail if attrs.files else None,
            read_only=bool(attrs.flags & _ST_RDONLY),
        )

    async def facts(self) -> Facts:
        """The host's facts (``uname -m``, the boot id), asked once per connection."""
        if self._facts is None:
            result = await self.run("uname -m; cat /proc/sys/kernel/random/boot_id 2>/dev/null")
            lines = result.stdout.decode(errors="replace").split()
            if not lines or (not result.ok and len(lines) < 2):
                err = result.stderr.decode(errors="replace").strip()
                raise SshError(self.spec.label, f"uname -m failed: {err}")
            self._facts = Facts(machine=lines[0], boot_id=lines[1] if len(lines) > 1 else None)
        return self._facts


@asynccontextmanager
async def open_ssh(
    spec: HostSpec, *, connect_timeout: float = 10.0, max_sessions: int = 10
) -> AsyncIterator[SshConnection]:
    """Connect and authenticate; close the connection (and stop its commands) on exit.

    Host keys are checked against ``spec.known_hosts`` (or ``~/.ssh/known_hosts``) unless
    ``spec.insecure``. ``~/.ssh/config`` and the SSH agent are not used.

    Args:
        spec: where and as whom.
        connect_timeout: seconds for TCP connect, key exchange and authentication together.
        max_sessions: the server's ``MaxSessions`` (OpenSSH default 10); see SshConnection.

    Raises:
        SshError: unreachable, refused, host key mismatch, authentication failure.
        SshTimeout: ``connect_timeout`` passed.
    """
    known_hosts = _resolve_known_hosts(spec)
    _check_identity(spec)
    async with loop_for_connection() as loop:
        with trio.move_on_after(connect_timeout) as scope:
            with _mapped_errors(spec.label, "connecting"):
                conn = await call_in_loop(loop, _aio_connect, spec, known_hosts, None)
        if scope.cancelled_caught:
            raise SshTimeout(spec.label, f"connect timed out after {connect_timeout}s")
        key = conn.get_server_host_key()
        fingerprint = key.get_fingerprint("sha256") if key else ""
        ssh = SshConnection(spec, conn, loop, fingerprint, max_sessions)
        try:
            yield ssh
        finally:
            with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                await ssh._call(_aio_close, conn, ssh._sessions)


class SshConnector:
    """The default connector: each target over SSH, all connections on one asyncio loop
    thread for the run (``open_bridge``)."""

    name = "ssh"

    def open_shared(self) -> AbstractAsyncContextManager[None]:
        return open_bridge()

    def open_connection(
        self, target: TargetSpec, *, connect_timeout: float
    ) -> AbstractAsyncContextManager[SshConnection]:
        return open_ssh(HostSpec.for_target(target), connect_timeout=connect_timeout)


async def _aio_login(spec: HostSpec, known_hosts: str | None, password: str | None) -> ExecResult:
    async with await _aio_connect(spec, known_hosts, password) as conn:
        done = await conn.run("id -un", encoding=None)
    out, err = (b if isinstance(b, bytes) else b"" for b in (done.stdout, done.stderr))
    return ExecResult(done.exit_status, None, out, err)


async def try_login(spec: HostSpec, *, password: str | None = None, timeout: float = 10.0) -> ExecResult:
    """Log in with ``spec.identity`` and/or ``password`` (host key as in ``open_ssh``), run
    ``id -un``, log out: for the ssh_login probe, which grades the login itself.

    Raises:
        SshError: the login failed (``reason`` says why). SshTimeout: ``timeout`` passed.
    """
    known_hosts = _resolve_known_hosts(spec)
    _check_identity(spec)
    async with loop_for_connection() as loop:
        with trio.move_on_after(timeout), _mapped_errors(spec.label, "logging in"):
            return await call_in_loop(loop, _aio_login, spec, known_hosts, password)
    raise SshTimeout(spec.label, f"login timed out after {timeout:g}s")
