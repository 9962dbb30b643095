"""Run stage, local connector: every target is this machine, reached without SSH.

The runner deploys and runs the real module binaries exactly as over SSH (random file in
the target's ``tmp_dir``, the same exec wrapper through ``/bin/sh``, the config on stdin,
a real TCP callback to the monitor's listener), but as child processes of the monitor.
That makes the runner's own semantics (needs, when, retries, timeouts, one_of, cleanup on
cancel) testable in milliseconds; the SSH path keeps its own end-to-end tests on a real
sshd. The modules act on the paths their parameters name, so point them at temp folders.

Limits, by design: the target's host, port and user are ignored (everything runs as this
process's user), and tunnel mode needs no tunnel (the binary dials the monitor's port on
127.0.0.1 directly), so ``monitor.bind`` must then be 127.0.0.1 or a wildcard address.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from ..scenario import TargetSpec
from .connection import DiskSpace, ExecResult, Facts, TargetError, TargetTimeout, stopped_in_stat

__all__ = ["LocalConnection", "LocalConnector", "open_local"]

KILL_GRACE = 1.0  # seconds a stopped command gets between SIGTERM and SIGKILL
DRAIN_GRACE = 1.0  # seconds for the rest of a command's output once it has exited
_LOOPBACK_BINDS = frozenset({"127.0.0.1", "0.0.0.0", "::", ""})


class LocalConnector:
    """Targets as local processes (see the module docstring)."""

    name = "local"

    def open_shared(self) -> AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    def open_connection(
        self, target: TargetSpec, *, connect_timeout: float
    ) -> AbstractAsyncContextManager[LocalConnection]:
        return open_local(target)


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name.removeprefix("SIG")
    except ValueError:
        return str(-returncode)


class LocalProcess:
    """A command started by ``LocalConnection.start``: a shell in a session of its own."""

    def __init__(self, conn: LocalConnection, command: str, proc: trio.Process) -> None:
        self._conn = conn
        self._proc = proc
        self.command = command

    async def wait(self) -> ExecResult:
        """Wait for the command to end, collecting its output. Cancelling this stops it."""
        proc = self._proc
        out: list[bytes] = []
        err: list[bytes] = []

        async def drain(stream: trio.abc.ReceiveStream | None, into: list[bytes]) -> None:
            if stream is None:
                return
            async for chunk in stream:
                into.append(bytes(chunk))

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain, proc.stdout, out)
                nursery.start_soon(drain, proc.stderr, err)
                await proc.wait()
                # A child it left behind may hold the pipes open: its output gets a moment.
                nursery.cancel_scope.deadline = trio.current_time() + DRAIN_GRACE
        except BaseException:
            await self.terminate()
            raise
        finally:
            self._conn._running.discard(self)
        code = proc.returncode
        assert code is not None
        return ExecResult(
            exit_status=code if code >= 0 else None,
            signal=_signal_name(code) if code < 0 else None,
            stdout=b"".join(out),
            stderr=b"".join(err),
        )

    async def reap(self) -> None:
        await self._proc.wait()

    def kill(self) -> None:
        """SIGKILL the command's process group at once."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)

    async def stopped(self) -> bool | None:
        if self._proc.returncode is not None:
            return None
        try:
            stat = await trio.to_thread.run_sync(Path(f"/proc/{self._proc.pid}/stat").read_text)
        except OSError:
            return None
        return stopped_in_stat(stat)

    async def terminate(self) -> None:
        """SIGTERM the process group, then SIGKILL after ``KILL_GRACE``; shielded."""
        with trio.CancelScope(shield=True):
            if self._proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._proc.pid, signal.SIGTERM)
                    os.killpg(self._proc.pid, signal.SIGCONT)  # a stopped process acts on TERM only once continued
                with trio.move_on_after(KILL_GRACE):
                    await self._proc.wait()
                if self._proc.returncode is None:
                    self.kill()
                    await self._proc.wait()
            self._conn._running.discard(self)


class LocalForward:
    """Tunnel mode on the monitor itself: the binary dials the listener's own port."""

    def __init__(self, port: int) -> None:
        self._port = port

    @property
    def port(self) -> int:
        return self._port

    async def close(self) -> None:
        return None


class LocalConnection:
    """This machine as a target; made by ``open_local``, which stops what still runs."""

    def __init__(self, target: TargetSpec) -> None:
        self.target = target
        self._running: set[LocalProcess] = set()

    @property
    def label(self) -> str:
        return f"local:{self.target.host}"

    @property
    def audit_fields(self) -> Mapping[str, Any]:
        return {"pid": os.getpid()}

    async def facts(self) -> Facts:
        try:
            boot_id: str | None = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            boot_id = None
        return Facts(machine=platform.machine(), boot_id=boot_id)

    async def write_file(self, path: str, data: bytes, mode: int = 0o700) -> None:
        def write() -> None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, mode)  # the umask may have dropped bits at create time
            except BaseException:
                os.close(fd)
                os.unlink(path)  # we created it (O_EXCL), so it is ours to delete
                raise
            os.close(fd)

        try:
            await trio.to_thread.run_sync(write)
        except FileExistsError:
            raise TargetError(self.label, f"{path} already exists") from None
        except OSError as exc:
            raise TargetError(self.label, f"writing {path}: {exc.strerror or exc}") from None

    async def start(self, command: str, *, input: bytes | None = None) -> LocalProcess:
        try:
            proc = await trio.lowlevel.open_process(
                ["/bin/sh", "-c", command],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, stopped as one
            )
        except OSError as exc:
            raise TargetError(self.label, f"starting {command!r}: {exc.strerror or exc}") from None
        process = LocalProcess(self, command, proc)
        self._running.add(process)
        assert proc.stdin is not None
        try:
            if input:  # a step config is far below the pipe's buffer: this does not block
                await proc.stdin.send_all(input)
        except trio.BrokenResourceError:
            pass  # it exited without reading: its exit status tells
        except BaseException:
            await process.terminate()
            raise
        finally:
            with contextlib.suppress(trio.BrokenResourceError):
                await proc.stdin.aclose()
        return process

    async def run(self, command: str, *, input: bytes | None = None, timeout: float | None = None) -> ExecResult:
        process = await self.start(command, input=input)
        with trio.move_on_after(timeout if timeout is not None else float("inf")):
            return await process.wait()
        raise TargetTimeout(self.label, f"timed out after {timeout}s running {command!r} (stopped it)")

    async def remove(self, path: str) -> None:
        try:
            await trio.to_thread.run_sync(os.unlink, path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise TargetError(self.label, f"removing {path}: {exc.strerror or exc}") from None

    async def exists(self, path: str) -> bool:
        return await trio.to_thread.run_sync(os.path.lexists, path)

    async def disk_space(self, path: str) -> DiskSpace:
        try:
            st = await trio.to_thread.run_sync(os.statvfs, path)
        except OSError as exc:
            raise TargetError(self.label, f"asking the free space of {path}: {exc.strerror or exc}") from None
        free_inodes = st.f_favail if st.f_files else None
        return DiskSpace(st.f_bavail * st.f_frsize, free_inodes, bool(st.f_flag & os.ST_RDONLY))

    async def forward_remote_port(self, dest_host: str, dest_port: int) -> LocalForward:
        if dest_host not in _LOOPBACK_BINDS:
            raise TargetError(self.label, f"tunnel mode needs monitor.bind 127.0.0.1 here, not {dest_host}")
        return LocalForward(dest_port)

    async def kill_all(self) -> None:
        """SIGKILL what still runs and reap it (shielded: connection cleanup)."""
        with trio.CancelScope(shield=True):
            for process in list(self._running):
                process.kill()
                await process.reap()
        self._running.clear()


@asynccontextmanager
async def open_local(target: TargetSpec) -> AsyncIterator[LocalConnection]:
    """A connection to this machine standing for ``target``; on exit, what it started
    and is still running gets SIGKILL (as when an SSH connection closes)."""
    conn = LocalConnection(target)
    try:
        yield conn
    finally:
        await conn.kill_all()
