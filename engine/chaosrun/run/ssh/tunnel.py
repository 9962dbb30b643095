"""Run stage, SSH transport: the remote port forward of ``monitor.callback: tunnel``."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import asyncssh
import trio

if TYPE_CHECKING:
    from .client import SshConnection


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
