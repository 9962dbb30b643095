"""Run stage, SSH transport: the default connector, a trio-native SSH client over asyncssh.

This is the one module of the runtime that imports asyncssh. asyncssh runs on the asyncio
loop thread of ``run.bridge``; nothing asyncio-flavoured leaves this module: callers get
plain data (``ExecResult``, ``str``, ``bytes``) or this module's classes, which implement
the connection seam (``run.connection``): ``SshConnector`` opens an ``SshConnection`` per
target.

Remote processes and cancellation: closing an SSH channel does not stop the command behind
it (OpenSSH leaves a process without a pty running, and refuses the SSH ``signal`` request
for root logins). So every command runs as ``echo $$; COMMAND`` (the remote shell is a
session leader, so ``$$`` is its process group id; the line is stripped from stdout), and on
cancel/timeout a second channel runs ``kill -s TERM -- -PGID``, waits up to ``KILL_GRACE``,
then sends ``KILL`` and closes the channel. Cancellation therefore returns within about
``KILL_GRACE`` even if the remote command ignores SIGTERM. Commands that detach into their
own session (``setsid``, daemons) are not followed.

Typical use::

    async with open_bridge():                      # once, around a whole run
        async with open_ssh(HostSpec("10.0.0.5", known_hosts=kh)) as conn:
            result = await conn.run("uname -m")
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import asyncssh
import trio

from ..scenario import TargetSpec
from .bridge import call_in_loop, loop_for_connection, open_bridge
from .connection import DiskSpace, ExecResult, Facts, TargetError, TargetTimeout, stopped_in_stat

__all__ = [
    "ExecResult",
    "HostSpec",
    "Process",
    "RemoteFileExists",
    "SshConnection",
    "SshConnector",
    "SshError",
    "SshTimeout",
    "open_bridge",
    "open_ssh",
    "try_login",
]

_ST_RDONLY = 1  # statvfs f_flag: mounted read-only
KILL_GRACE = 1.0  # seconds a cancelled remote command gets between SIGTERM and SIGKILL
CLOSE_TIMEOUT = 5.0  # seconds the connection close may take on exit (shielded)

_P = ParamSpec("_P")
_T = TypeVar("_T")


# -- public data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HostSpec:
    """Where and how to connect.

    ``known_hosts`` is an OpenSSH known_hosts file; ``None`` means ``~/.ssh/known_hosts``.
    ``insecure=True`` skips host key verification altogether (labs only).
    ``identity`` is a private key file; ``None`` means asyncssh's default keys in ``~/.ssh``.
    """

    host: str
    port: int = 22
    user: str = "root"
    identity: Path | None = None
    known_hosts: Path | None = None
    insecure: bool = False

    @classmethod
    def for_target(cls, target: TargetSpec) -> HostSpec:
        """The connection settings of a scenario's (or inventory's) target."""
        return cls(
            host=target.host,
            port=target.port,
            user=target.user,
            identity=Path(target.identity) if target.identity else None,
            known_hosts=Path(target.known_hosts) if target.known_hosts else None,
            insecure=target.insecure,
        )

    @property
    def label(self) -> str:
        """``user@host:port``, as it appears in error messages."""
        return f"{self.user}@{self.host}:{self.port}"


class SshError(TargetError):
    """An SSH operation failed. ``str(err)`` is ``"root@10.0.0.5:22: <reason>"``."""


class SshTimeout(SshError, TargetTimeout):
    """A command or the connection did not finish in time (the remote command was stopped)."""


class RemoteFileExists(SshError):
    """``write_file`` refused to replace an existing path (exclusive create)."""


# -- asyncio side: everything below until "trio side" runs as asyncio tasks ----------------


class _Session(asyncssh.SSHClientSession[bytes]):
    """One remote command: collects its output; ``done`` is set when the channel has closed.

    The command runs as ``echo $$; COMMAND``: sshd makes the remote shell a session leader,
    so the first stdout line is the command's process group id (stripped from stdout), which
    ``stop`` kills from a second channel. The SSH ``signal`` request is no substitute:
    OpenSSH refuses it for root logins ("session signalling requires privilege separation").
    """

    def __init__(self, conn: asyncssh.SSHClientConnection) -> None:
        self.conn = conn
        self.chan: asyncssh.SSHClientChannel[bytes] | None = None
        self.pgid: int | None = None
        self.stdout: list[bytes] = []
        self.stderr: list[bytes] = []
        self.error: Exception | None = None
        self.done = asyncio.Event()
        self.pgid_known = asyncio.Event()  # the pgid line was parsed (or will never come)
        self._head: bytes | None = b""  # stdout until the pgid line; None once parsed
        self._stopping: asyncio.Future[None] | None = None

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self.stderr.append(data)
        elif self._head is None:
            self.stdout.append(data)
        else:
            self._head += data
            line, newline, rest = self._head.partition(b"\n")
            if newline or len(self._head) > _PGID_LINE_MAX:
                self._head = None
                self.pgid_known.set()
                if newline and line.isdigit():
                    self.pgid = int(line)
                    data = rest
                else:  # not a POSIX shell? keep its output untouched
                    data = line + newline + rest
                if data:
                    self.stdout.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.error = exc
        self.done.set()
        self.pgid_known.set()

    def result(self) -> ExecResult:
        assert self.chan is not None
        if self._head:  # the command ended before the pgid line was complete
            self.stdout.insert(0, self._head)
            self._head = None
        exit_signal = self.chan.get_exit_signal()
        status = self.chan.get_exit_status()
        return ExecResult(
            exit_status=None if exit_signal is not None or status is None else status,
            signal=exit_signal[0] if exit_signal is not None else None,
            stdout=b"".join(self.stdout),
            stderr=b"".join(self.stderr),
        )

    async def _kill(self, signame: str) -> None:
        if self.done.is_set():
            return
        if self.pgid is not None and self.pgid > 1:  # never `kill -- -1`
            command = f"kill -s {signame} -- -{self.pgid} 2>/dev/null"
            if signame == "TERM":  # a stopped process acts on TERM only once continued
                command += f"; kill -s CONT -- -{self.pgid} 2>/dev/null"
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.run(command), KILL_GRACE)
        elif self.chan is not None:
            with contextlib.suppress(OSError):  # works for non-root users only
                self.chan.send_signal(signame)

    async def stop(self) -> None:
        """SIGTERM the command's process group, wait up to KILL_GRACE, then SIGKILL it.

        Concurrent and repeated calls share one attempt (e.g. ``Process.terminate`` in a
        cleanup while a cancelled ``wait`` stops the same command).
        """
        if self.done.is_set() or self.chan is None:
            return
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        assert self.chan is not None
        with contextlib.suppress(TimeoutError):  # cancelled right after the start
            await asyncio.wait_for(self.pgid_known.wait(), KILL_GRACE)
        await self._kill("TERM")
        try:
            await asyncio.wait_for(self.done.wait(), KILL_GRACE)
        except TimeoutError:
            await self._kill("KILL")
            self.chan.close()

    async def kill(self) -> None:
        """SIGKILL the command's process group at once (connection shutdown)."""
        await self._kill("KILL")


_PGID_LINE_MAX = 32

# asyncssh's first choice, chacha20-poly1305, builds several cipher contexts per packet;
# AES-GCM is one call (and AES-NI). Measured on loopback: ~0.4 ms less client CPU per run().
# The rest of asyncssh's default list follows, for servers without GCM.
_ENCRYPTION_ALGS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
]


async def _aio_connect(spec: HostSpec, known_hosts: str | None, password: str | None) -> asyncssh.SSHClientConnection:
    return await asyncssh.connect(
        spec.host,
        spec.port,
        username=spec.user,
        known_hosts=known_hosts,
        client_keys=[str(spec.identity)] if spec.identity is not None else (),
        password=password,  # only try_login gives one
        config=None,  # never read ~/.ssh/config: the scenario says where to go
        agent_path=None,
        agent_forwarding=False,
        preferred_auth="publickey" if password is None else "publickey,keyboard-interactive,password",
        x509_trusted_certs=None,
        x509_trusted_cert_paths=None,
        encryption_algs=_ENCRYPTION_ALGS,
    )


async def _aio_close(conn: asyncssh.SSHClientConnection, sessions: set[_Session]) -> None:
    # sshd leaves a command running when its connection goes: kill what is still running.
    if sessions:
        await asyncio.gather(*(session.kill() for session in sessions), return_exceptions=True)
    conn.close()
    await conn.wait_closed()


async def _aio_open_session(conn: asyncssh.SSHClientConnection, command: str) -> _Session:
    _, session = await conn.create_session(functools.partial(_Session, conn), f"echo $$; {command}", encoding=None)
    assert isinstance(session, _Session)
    return session


async def _aio_start(conn: asyncssh.SSHClientConnection, command: str, input: bytes | None) -> _Session:
    opening = asyncio.ensure_future(_aio_open_session(conn, command))
    try:
        session = await asyncio.shield(opening)
    except asyncio.CancelledError:
        # The exec request may already be on the wire: let the open finish, stop what it
        # started, then report the cancellation.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            late = await asyncio.wait_for(opening, KILL_GRACE)
            await late.stop()
        raise
    assert session.chan is not None
    if input:
        session.chan.write(input)
    session.chan.write_eof()  # a command reading stdin must not wait for us
    return session


async def _aio_wait(session: _Session) -> ExecResult:
    try:
        await session.done.wait()
    except asyncio.CancelledError:
        await session.stop()
        raise
    return session.result()


async def _aio_run(
    conn: asyncssh.SSHClientConnection, command: str, input: bytes | None
) -> tuple[_Session, ExecResult]:
    session = await _aio_start(conn, command, input)
    return session, await _aio_wait(session)


# SFTP write requests in flight per upload. asyncssh's default (up to 128) sends a whole
# 2.8 MB module at once: every connection then holds copies of it in request and channel
# buffers. Four 255 KB requests keep loopback saturated; measured for 100 hosts x 1 step on
# 2 cores: peak RSS 168 -> 102 MiB and 9.7 s -> 6.5 s; 1 host x 10 steps unchanged.
_SFTP_WRITES_IN_FLIGHT = 4


async def _aio_write_file(sftp: asyncssh.SFTPClient, path: str, data: bytes, mode: int) -> None:
    flags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL
    f = await sftp.open(
        path, flags, asyncssh.SFTPAttrs(permissions=mode), encoding=None, max_requests=_SFTP_WRITES_IN_FLIGHT
    )
    try:
        await f.write(data, 0)
        if mode & 0o022:
            # the server's umask may have dropped group/other write bits at create time
            await f.chmod(mode)
    except BaseException:
        with contextlib.suppress(Exception):
            await f.close()
        with contextlib.suppress(Exception):
            await sftp.remove(path)  # we created it (O_EXCL), so it is ours to delete
        raise
    await f.close()


async def _aio_remove(sftp: asyncssh.SFTPClient, path: str) -> None:
    with contextlib.suppress(asyncssh.SFTPNoSuchFile):
        await sftp.remove(path)


async def _aio_exists(sftp: asyncssh.SFTPClient, path: str) -> bool:
    try:
        await sftp.lstat(path)
    except asyncssh.SFTPNoSuchFile:
        return False
    return True


# -- trio side ------------------------------------------------------------------------------


def _raise_mapped(label: str, exc: BaseException, doing: str) -> NoReturn:
    """Turn an asyncssh/OS exception into a one-line SshError naming the host."""
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        raise SshError(label, f"host key verification failed: {exc.reason}") from exc
    if isinstance(exc, asyncssh.PermissionDenied):
        raise SshError(label, "permission denied (publickey): the server accepted none of our keys") from exc
    if isinstance(exc, asyncssh.ConnectionLost):
        raise SshError(label, f"connection lost while {doing}: {exc.reason}") from exc
    if isinstance(exc, asyncssh.DisconnectError):
        raise SshError(label, f"disconnected while {doing}: {exc.reason}") from exc
    if isinstance(exc, asyncssh.ChannelOpenError):
        raise SshError(label, f"server refused a channel while {doing}: {exc.reason}") from exc
    if isinstance(exc, asyncssh.SFTPError):
        raise SshError(label, f"sftp error while {doing}: {exc.reason}") from exc
    if isinstance(exc, asyncssh.KeyImportError):
        raise SshError(label, f"cannot load identity: {exc}") from exc
    if isinstance(exc, ConnectionRefusedError):
        raise SshError(label, "connection refused") from exc
    if isinstance(exc, TimeoutError):
        raise SshTimeout(label, f"timed out while {doing}") from exc
    if isinstance(exc, OSError):
        raise SshError(label, f"{doing}: {exc.strerror or exc}") from exc
    raise exc


@contextlib.contextmanager
def _mapped_errors(label: str, doing: str) -> Iterator[None]:
    try:
        yield
    except (asyncssh.Error, asyncssh.KeyImportError, OSError) as exc:
        _raise_mapped(label, exc, doing)


def _resolve_known_hosts(spec: HostSpec) -> str | None:
    if spec.insecure:
        return None
    path = spec.known_hosts or Path("~/.ssh/known_hosts").expanduser()
    if not path.is_file():
        raise SshError(
            spec.label,
            f"known_hosts file {path} not found (give one, or set insecure to skip host keys)",
        )
    return str(path)


def _check_identity(spec: HostSpec) -> None:
    if spec.identity is not None and not spec.identity.is_file():
        raise SshError(spec.label, f"identity file {spec.identity} not found")


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


class _TunnelDest(asyncio.Protocol):
    """Our side of one tunnelled connection: bytes from the local listener go to the channel."""

    def __init__(self, session: _TunnelSession) -> None:
        self._session = session

    def data_received(self, data: bytes) -> None:
        self._session.chan_write(data)

    def eof_received(self) -> bool:
        self._session.chan_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._session.chan_close()


class _TunnelSession(asyncssh.SSHTCPSession[bytes]):
    """The target's side of one tunnelled connection.

    asyncssh's own forwarder can drop bytes that the local end sends before the SSH
    channel is fully open (our monitor speaks first), so we connect to the local listener
    only once the channel is open, and buffer what the binary sends until then.
    """

    def __init__(self, loop: Any, host: str, port: int) -> None:
        self._loop = loop
        self._host, self._port = host, port
        self._chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._dest: asyncio.Transport | None = None
        self._pending = b""
        self._eof = False
        self._task: Any = None

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self._chan = chan
        self._task = self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            transport, _ = await self._loop.create_connection(lambda: _TunnelDest(self), self._host, self._port)
        except OSError:
            self.chan_close()
            return
        self._dest = transport
        if self._pending:
            transport.write(self._pending)
            self._pending = b""
        if self._eof:
            transport.write_eof()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._dest is not None:
            self._dest.write(data)
        else:
            self._pending += data

    def eof_received(self) -> bool:
        if self._dest is not None:
            self._dest.write_eof()
        else:
            self._eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._dest is not None:
            self._dest.close()

    def chan_write(self, data: bytes) -> None:
        if self._chan is not None:
            self._chan.write(data)

    def chan_eof(self) -> None:
        if self._chan is not None:
            with contextlib.suppress(Exception):
                self._chan.write_eof()

    def chan_close(self) -> None:
        if self._chan is not None:
            self._chan.close()


class RemoteForward:
    """A port on the target's 127.0.0.1 that leads back to us over SSH."""

    def __init__(self, conn: SshConnection, listener: Any) -> None:
        self._conn = conn
        self._listener = listener
        self.port: int = int(listener.get_port())

    async def close(self) -> None:
        """Stop listening on the target (shielded: usable as cleanup)."""

        async def _close() -> None:
            self._listener.close()
            await self._listener.wait_closed()

        with trio.CancelScope(shield=True), contextlib.suppress(Exception):
            await self._conn._call(_close)


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
