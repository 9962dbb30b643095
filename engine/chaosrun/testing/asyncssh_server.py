"""Test support: an in-process SSH server on 127.0.0.1, for machines without OpenSSH or root.

``chaosrun demo`` and the test suite normally run a real OpenSSH ``sshd``
(:func:`chaosrun.testing.local_sshd`), which needs ``openssh-server`` and, for its
privilege separation, root. Where either is missing, :func:`local_asyncssh_server` stands
in: an asyncssh server that runs each exec request as ``/bin/sh -c COMMAND`` as the current
user and serves SFTP, which is all chaosrun's client (``chaosrun.run.ssh``) uses.

The server runs in a thread of its own with its own asyncio event loop, apart from the
runtime's trio loop and the SSH client's loop thread, so a blocked runtime cannot stall the
server (and the reverse).

Like sshd, each command gets its own session (``setsid``), so ``$$`` of the remote shell is
its process group id, which the client uses to stop a cancelled command. Unlike sshd, a
command is also killed (its whole process group: SIGTERM, then SIGKILL) when the client
closes its channel, and an SSH ``signal`` request is delivered to the command's process
group whoever the user is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

with warnings.catch_warnings():  # DSA in asyncssh's annotations (chaosrun.run.ssh says why)
    warnings.filterwarnings("ignore", message="DSA is deprecated")
    import asyncssh
    from asyncssh.channel import SSHChannel
    from asyncssh.sftp import MIN_SFTP_VERSION

from .sshd import LocalSshd, LocalSshdError, write_known_hosts

__all__ = ["LocalAsyncsshServer", "local_asyncssh_server"]

HOST = "127.0.0.1"
SHELL = "/bin/sh"
START_TIMEOUT = 10.0  # seconds for the server thread to start listening
STOP_TIMEOUT = 10.0  # seconds for the server thread to wind down
KILL_GRACE = 1.0  # seconds between SIGTERM and SIGKILL of a command's process group
CHUNK = 65536


@dataclass(frozen=True)
class LocalAsyncsshServer(LocalSshd):
    """A running in-process SSH server: a :class:`~chaosrun.testing.LocalSshd` whose
    ``pid`` is this process and whose ``stop()`` ends the server thread (not the process)."""

    _stop: Callable[[], None] = field(repr=False, compare=False)

    def stop(self) -> None:
        """Stop the server, close its connections, end the commands still running. Idempotent."""
        self._stop()


@contextlib.contextmanager
def local_asyncssh_server(workdir: Path) -> Iterator[LocalSshd]:
    """Run an in-process SSH server on a free port of 127.0.0.1 for the duration of the block.

    Only the generated client key, for the current user, may log in. Exec requests run as
    ``/bin/sh -c COMMAND`` in the user's home folder; ``sftp`` is served; shells, ptys and
    forwarding other than to/from the loopback are refused.

    Args:
        workdir: an existing folder; a fresh subfolder of it holds the keys, known_hosts and log.

    Yields:
        The server's coordinates and credentials (``pid`` is this process's pid).

    Raises:
        LocalSshdError: the server did not start (the message says why).
    """
    root = Path(tempfile.mkdtemp(prefix="asyncsshd-", dir=workdir))
    user = pwd.getpwuid(os.getuid()).pw_name

    host_key = asyncssh.generate_private_key("ssh-ed25519")
    host_key.write_private_key(str(root / "ssh_host_ed25519_key"))
    host_public = host_key.export_public_key().decode("ascii").strip()
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    identity = root / "id_ed25519"
    fd = os.open(identity, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(client_key.export_private_key("openssh"))
    client_public = client_key.export_public_key().decode("ascii").strip()
    (root / "id_ed25519.pub").write_text(client_public + "\n")

    log = root / "server.log"
    server = _ServerThread(host_key, client_key.convert_to_public(), user, log)
    port = server.start()
    try:
        known_hosts = root / "known_hosts"
        write_known_hosts(known_hosts, HOST, port, host_public)
        yield LocalAsyncsshServer(
            host=HOST,
            port=port,
            user=user,
            identity=identity,
            known_hosts=known_hosts,
            root=root,
            pid=os.getpid(),
            log=log,
            host_public_key=host_public,
            client_public_key=client_public,
            _stop=server.stop,
        )
    finally:
        server.stop()


# -- the server thread -------------------------------------------------------------------------


class _ServerThread:
    """Owns the thread, its event loop, the listener, the connections and the commands."""

    def __init__(self, host_key: asyncssh.SSHKey, client_key: asyncssh.SSHKey, user: str, log: Path) -> None:
        self._host_key = host_key
        self._client_key = client_key
        self._user = user
        self._home = pwd.getpwnam(user).pw_dir
        self._log_path = log
        self._log: IO[str] | None = None
        self._ready: Future[int] = Future()
        self._thread = threading.Thread(target=self._main, name="chaosrun-local-sshd", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._commands: set[asyncio.subprocess.Process] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._stopped = False
        self._lock = threading.Lock()

    # main thread

    def start(self) -> int:
        """Start the thread; return the port once it listens."""
        self._thread.start()
        try:
            return self._ready.result(timeout=START_TIMEOUT)
        except BaseException as exc:
            self.stop()
            if isinstance(exc, LocalSshdError):
                raise
            if isinstance(exc, TimeoutError):
                raise LocalSshdError(f"the in-process SSH server did not start within {START_TIMEOUT}s") from None
            if isinstance(exc, Exception):
                raise LocalSshdError(f"the in-process SSH server did not start: {exc}") from exc
            raise

    def stop(self) -> None:
        """Ask the loop to shut down and wait for the thread. Safe to call more than once."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already closed
                loop.call_soon_threadsafe(stopping.set)
        if self._thread.is_alive():
            self._thread.join(STOP_TIMEOUT)

    # server thread

    def _main(self) -> None:
        # asyncio.new_event_loop() would ask the loop policy, which an embedding program may
        # have replaced; a plain selector loop is what a thread of its own needs.
        with (
            open(self._log_path, "a", buffering=1, encoding="utf-8") as log,
            asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner,
        ):
            self._log = log
            try:
                runner.run(self._serve())
            except BaseException as exc:
                if not self._ready.done():
                    self._ready.set_exception(exc)
                self._say(f"server failed: {exc!r}")
            finally:
                self._say("server stopped")

    def _say(self, text: str) -> None:
        if self._log is not None:
            with contextlib.suppress(ValueError, OSError):
                self._log.write(f"{time.strftime('%H:%M:%S')} {text}\n")

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._stopped:  # stop() came before the loop existed
            return
        acceptor = await asyncssh.create_server(
            self._new_connection,
            HOST,
            0,
            server_host_keys=[self._host_key],
            encoding=None,
            x11_forwarding=False,
            agent_forwarding=False,
            login_timeout=30,
        )
        try:
            port: int = acceptor.sockets[0].getsockname()[1]
            self._say(f"listening on {HOST}:{port}")
            self._ready.set_result(port)
            await self._stopping.wait()
        finally:
            acceptor.close()
            await acceptor.wait_closed()
            for conn in list(self._connections):
                conn.close()
            for conn in list(self._connections):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.wait_closed(), KILL_GRACE)
            # Closed channels make each handler end its command (TERM, then KILL after
            # KILL_GRACE); give them that long, then end whatever is left here.
            if self._handlers:
                await asyncio.wait(list(self._handlers), timeout=3 * KILL_GRACE)
            await asyncio.gather(*(self._end(proc) for proc in list(self._commands)), return_exceptions=True)
            for handler in list(self._handlers):
                handler.cancel()
            if self._handlers:
                await asyncio.wait(list(self._handlers), timeout=3 * KILL_GRACE)

    def _new_connection(self) -> asyncssh.SSHServer:
        return _Server(self)

    async def _run_command(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        """One exec request: ``/bin/sh -c COMMAND`` with stdin/stdout/stderr relayed."""
        assert isinstance(process, _Session)
        command = process.command
        if command is None:
            process.stderr.write(b"this server runs commands only (no shell, no pty)\n")
            process.exit(1)
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._run_shell(process, command)
        finally:
            self._handlers.discard(task)

    async def _run_shell(self, process: _Session, command: str) -> None:
        peer = process.get_extra_info("peername")
        self._say(f"exec from {peer[0]}:{peer[1]}: {command!r}" if peer else f"exec: {command!r}")
        spawn = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                SHELL,
                "-c",
                command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self._home if os.path.isdir(self._home) else "/",
                start_new_session=True,  # like sshd: $$ is the process group id
            )
        )
        try:
            proc = await asyncio.shield(spawn)
        except OSError as exc:
            process.stderr.write(f"cannot start {SHELL}: {exc}\n".encode())
            process.exit(127)
            return
        except asyncio.CancelledError:
            # The fork may have happened already: never leave that command behind.
            with contextlib.suppress(Exception):
                await self._end(await spawn)
            raise
        self._commands.add(proc)
        self._say(f"pid {proc.pid}: {command!r}")
        process.started(proc)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        helpers = [
            asyncio.ensure_future(self._relay_stdin(process, proc)),
            asyncio.ensure_future(self._watch_channel(process, proc)),
        ]
        outputs = asyncio.gather(
            _relay_output(proc.stdout, process.stdout),
            _relay_output(proc.stderr, process.stderr),
        )
        try:
            returncode = await proc.wait()
            await outputs  # like sshd: the channel closes once the command's output is all sent
        except asyncio.CancelledError:
            outputs.cancel()
            await self._end(proc)
            raise
        finally:
            for helper in helpers:
                helper.cancel()
            self._commands.discard(proc)
        self._say(f"pid {proc.pid} exit {returncode}")
        with contextlib.suppress(Exception):  # the client may have gone already
            if returncode < 0:
                process.exit_with_signal(_signal_name(-returncode))
            else:
                process.exit(returncode)

    async def _relay_stdin(self, process: asyncssh.SSHServerProcess[bytes], proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None
        writable = True
        while True:
            try:
                data = await process.stdin.read(CHUNK)
            except (asyncssh.BreakReceived, asyncssh.TerminalSizeChanged, asyncssh.SignalReceived):
                continue
            except (asyncssh.Error, OSError):
                break
            if not data:
                break
            if writable:
                try:
                    proc.stdin.write(data)
                    await proc.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    writable = False  # the command closed its stdin: drop the rest
        with contextlib.suppress(OSError):
            proc.stdin.close()

    async def _watch_channel(self, process: asyncssh.SSHServerProcess[bytes], proc: asyncio.subprocess.Process) -> None:
        """The client closed the channel (or the connection went) while the command ran: end it."""
        await process.channel.wait_closed()
        if proc.returncode is None:
            self._say(f"channel closed: ending pid {proc.pid}")
            await self._end(proc)

    async def _end(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM the command's process group, wait up to KILL_GRACE, then SIGKILL it."""
        if proc.returncode is not None:
            return
        _kill_group(proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE)
        except TimeoutError:
            _kill_group(proc, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE)


class _Session(asyncssh.SSHServerProcess[bytes]):
    """One session channel. An SSH ``signal`` request goes straight to the command's process
    group: asyncssh would queue it behind stdin, which nobody reads after the client's EOF."""

    def __init__(self, owner: _ServerThread) -> None:
        super().__init__(owner._run_command, _sftp_server, MIN_SFTP_VERSION, False)
        self._owner = owner
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: list[int] = []  # signals that came before the command started

    def started(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        for sig in self._pending:
            _kill_group(proc, sig)
        self._pending.clear()

    def pty_requested(
        self, term_type: str, term_size: tuple[int, int, int, int], term_modes: Mapping[int, int]
    ) -> bool:
        return False

    def shell_requested(self) -> bool:
        return False

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == "sftp" and super().subsystem_requested(subsystem)

    def signal_received(self, signal: str) -> None:
        number = _signal_number(signal)
        if self._proc is None:
            self._owner._say(f"signal {signal} before the command started")
            self._pending.append(number)
            return
        self._owner._say(f"signal {signal} for pid {self._proc.pid}")
        _kill_group(self._proc, number)


class _Server(asyncssh.SSHServer):
    """Per-connection policy: public key auth for one user and one key; loopback forwarding only."""

    def __init__(self, owner: _ServerThread) -> None:
        self._owner = owner
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._owner._connections.add(conn)
        peer = conn.get_extra_info("peername")
        self._owner._say(f"connection from {peer[0]}:{peer[1]}" if peer else "connection")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._owner._connections.discard(self._conn)
        self._owner._say(f"connection closed{f': {exc}' if exc else ''}")

    def session_requested(self) -> asyncssh.SSHServerSession[bytes]:
        return _Session(self._owner)

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        ok = username == self._owner._user and key.public_data == self._owner._client_key.public_data
        self._owner._say(f"{'accepted' if ok else 'refused'} public key for {username!r}")
        return ok

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        # Remote forwarding (a tunnel back to the monitor) on the loopback only.
        return listen_host in ("127.0.0.1", "localhost", "::1")

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        return dest_host in ("127.0.0.1", "localhost", "::1")


def _sftp_server(chan: SSHChannel[bytes]) -> asyncssh.SFTPServer:
    """Serve the whole filesystem, as the current user, relative paths from the home folder."""
    return asyncssh.SFTPServer(cast("asyncssh.SSHServerChannel[bytes]", chan))


async def _relay_output(source: asyncio.StreamReader, sink: asyncssh.SSHWriter[bytes]) -> None:
    """Copy a command's stdout or stderr to the channel until EOF; drop it if the client left."""
    connected = True
    while True:
        data = await source.read(CHUNK)
        if not data:
            return
        if connected:
            try:
                sink.write(data)
                await sink.drain()
            except (asyncssh.Error, BrokenPipeError, ConnectionError):
                connected = False  # keep draining the pipe so the command is not blocked


def _kill_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    # The shell is a session leader (start_new_session), so its pid is its group's id. It has
    # not been reaped (returncode is None), so that id cannot belong to anyone else yet.
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def _signal_number(name: str) -> int:
    """SSH signal name (``TERM``) to number; unknown names become SIGTERM."""
    found = getattr(signal, "SIG" + name.upper().removeprefix("SIG"), None)
    return int(found) if isinstance(found, int) else int(signal.SIGTERM)


def _signal_name(number: int) -> str:
    """Signal number to its SSH name (``KILL``)."""
    try:
        return signal.Signals(number).name.removeprefix("SIG")
    except ValueError:
        return str(number)
