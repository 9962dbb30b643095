"""Test support: the module binary's side of the callback protocol, in Python.

The monitor's side is :func:`chaosrun.run.wire.receive_callback`, the real binary's side the Go
kit (``chaos_go/kit/``). This client is for tests, attack simulations and benchmarks that
need a peer without compiling Go. It speaks the protocol (``docs/protocol.md``, version 2)
through ``chaosrun.run.wire``'s public functions only (``session_keys``,
``transcript_sha256``, ``hello_proof``, ``seal``, ``open_frame``), so it also shows that they
are enough to implement a client.

:func:`open_session` does the handshake and leaves the frames to the caller (attacks need
frames no honest binary sends); :func:`send_callback` plays a whole honest callback.

Nothing here closes the stream it is given: the caller owns it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ..run.wire import (
    C2M,
    CHALLENGE_SIZE,
    M2C,
    MAGIC,
    MAX_BODY,
    MIN_BODY,
    PUBLIC_KEY_SIZE,
    CallbackRejected,
    hello_proof,
    open_frame,
    seal,
    seal_plaintext,
    session_keys,
    transcript_sha256,
)

__all__ = ["ACK_TIMEOUT", "ClientSession", "open_session", "send_callback"]

#: How long the client waits for the ack, like the Go kit.
ACK_TIMEOUT = 5.0

_HEADER_SIZE = 4  # a frame's u32 BE length prefix
_SERVER_HELLO_SIZE = len(MAGIC) + CHALLENGE_SIZE
_QUOTE_MAX = 64  # longest excerpt of the peer's text in a reason, as the monitor's side


@dataclass
class ClientSession:
    """The binary's end of one connection after the handshake.

    Attributes:
        stream: the connection.
        challenge: the monitor's challenge.
        monitor_key: the monitor's public key the session was made with.
        binary_key: this end's ephemeral public key, as sent.
        c2m_key: the session key of binary-to-monitor frames.
        m2c_key: the session key of monitor-to-binary frames.
        seq: the sequence number of the next c2m frame :meth:`frame` makes.
    """

    stream: trio.abc.Stream
    challenge: bytes
    monitor_key: bytes
    binary_key: bytes
    c2m_key: bytes
    m2c_key: bytes
    seq: int = 0

    def proof(self, token: str, run_id: str, step_id: str) -> str:
        """The hello's ``proof`` of ``token`` for this connection."""
        return hello_proof(token, transcript_sha256(self.challenge, self.monitor_key, self.binary_key, run_id, step_id))

    def frame(self, message: Mapping[str, Any], compress: bool = True) -> bytes:
        """The next c2m frame carrying ``message``."""
        data = seal(self.c2m_key, self.challenge, C2M, self.seq, message, compress)
        self.seq += 1
        return data

    def frame_plaintext(self, plaintext: bytes) -> bytes:
        """The next c2m frame carrying an arbitrary plaintext (flag byte included)."""
        data = seal_plaintext(self.c2m_key, self.challenge, C2M, self.seq, plaintext)
        self.seq += 1
        return data

    async def send(self, data: bytes) -> None:
        await _send(self.stream, data)

    async def receive_ack(self, timeout: float = ACK_TIMEOUT) -> dict[str, Any]:
        """Wait for the monitor's ack frame.

        Raises:
            CallbackRejected: no ack within ``timeout``, a bad frame, or the connection ended.
        """
        ack: dict[str, Any] | None = None
        with trio.move_on_after(timeout):
            ack = open_frame(self.m2c_key, self.challenge, M2C, 0, await _receive_frame(self.stream, "ack"))
        if ack is None:
            raise CallbackRejected("ack timeout")
        if ack["t"] != "ack":
            raise CallbackRejected(f"expected ack, got {_quote(ack['t'])} (frame 0)")
        return ack


async def open_session(
    stream: trio.abc.Stream, monitor_key: bytes, *, private_key: X25519PrivateKey | None = None
) -> ClientSession:
    """Read the server hello, send this end's ephemeral public key, derive the keys.

    Args:
        stream: a connection to the monitor's listener.
        monitor_key: the 32-byte public key of the step config's ``monitor_key``.
        private_key: this end's key (default: a fresh one, as the kit makes).

    Raises:
        ValueError: ``monitor_key`` is not an X25519 public key.
        CallbackRejected: bad server hello, or the connection ended.
    """
    if len(monitor_key) != PUBLIC_KEY_SIZE:
        raise ValueError(f"the monitor key must be {PUBLIC_KEY_SIZE} bytes, not {len(monitor_key)}")
    server_hello = await _receive_up_to(stream, _SERVER_HELLO_SIZE)
    if len(server_hello) < _SERVER_HELLO_SIZE:
        _closed_before("server hello", server_hello, _SERVER_HELLO_SIZE, "server hello")
    if server_hello[: len(MAGIC)] != MAGIC:
        raise CallbackRejected("bad magic")
    challenge = server_hello[len(MAGIC) :]
    private_key = private_key or X25519PrivateKey.generate()
    binary_key = private_key.public_key().public_bytes_raw()
    await _send(stream, binary_key)
    shared = private_key.exchange(X25519PublicKey.from_public_bytes(monitor_key))
    c2m_key, m2c_key = session_keys(shared, challenge, monitor_key, binary_key)
    return ClientSession(stream, challenge, monitor_key, binary_key, c2m_key, m2c_key)


async def send_callback(
    stream: trio.abc.Stream,
    *,
    monitor_key: bytes,
    token: str,
    run_id: str,
    step_id: str,
    config_sha256: str,
    exe_sha256: str,
    logs: Sequence[Mapping[str, Any]],
    result: Mapping[str, Any],
    compress: bool = True,
    ack_timeout: float = ACK_TIMEOUT,
) -> dict[str, Any]:
    """Play the binary's side of one callback connection, up to and including the ack.

    Does the handshake, sends the hello, the logs and the result frames, and waits for
    the ack.

    Args:
        stream: a connection to the monitor's listener.
        monitor_key: the step config's ``monitor_key`` (32 bytes, decoded).
        token: the token the hello proves (a wrong one, to test the monitor).
        run_id: the run the hello names.
        step_id: the step the hello and the result name.
        config_sha256: the config digest the hello and the result report.
        exe_sha256: the executable's digest the hello reports.
        logs: log messages; ``"t": "log"`` is added to each.
        result: the result message's fields (``ok``, ``error``, ``result``, ``changes``);
            ``"t": "result"``, ``"step": step_id`` and ``config_sha256`` are added unless
            ``result`` sets them itself (so a test can send a result for another step).
        compress: whether to zlib-compress the frames.
        ack_timeout: seconds to wait for the ack once the result is sent.

    Returns:
        The ack message.

    Raises:
        ValueError: a bad monitor key, or a message larger than a frame may be.
        CallbackRejected: bad server hello, connection lost, a bad ack or no ack within
            ``ack_timeout`` seconds.
    """
    session = await open_session(stream, monitor_key)
    hello = {
        "t": "hello",
        "run": run_id,
        "step": step_id,
        "proof": session.proof(token, run_id, step_id),
        "config_sha256": config_sha256,
        "exe_sha256": exe_sha256,
    }
    messages: list[Mapping[str, Any]] = [hello]
    messages += [{"t": "log", **log} for log in logs]
    messages.append({"t": "result", "step": step_id, "config_sha256": config_sha256, **result})
    for message in messages:
        await session.send(session.frame(message, compress))
    return await session.receive_ack(ack_timeout)


async def _receive_up_to(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    """``size`` bytes, or fewer if the stream ends first. Never reads past ``size``, so the
    monitor's next frame stays in the stream for the next read."""
    data = bytearray()
    while len(data) < size:
        try:
            chunk = await stream.receive_some(size - len(data))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise CallbackRejected(f"connection broken ({type(exc).__name__})") from None
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def _receive_frame(stream: trio.abc.ReceiveStream, what: str) -> bytes:
    """The next frame's body (length prefix stripped), its length checked before the body is read."""
    header = await _receive_up_to(stream, _HEADER_SIZE)
    if len(header) < _HEADER_SIZE:
        _closed_before(what, header, _HEADER_SIZE, "frame header")
    length = int.from_bytes(header, "big")
    if length > MAX_BODY:
        raise CallbackRejected(f"frame too large ({length} bytes)")
    if length < MIN_BODY:
        raise CallbackRejected(f"frame too small ({length} bytes)")
    body = await _receive_up_to(stream, length)
    if len(body) < length:
        raise CallbackRejected(f"truncated frame ({len(body)} of {length} bytes)")
    return body


def _closed_before(what: str, got: bytes, size: int, part: str) -> NoReturn:
    if not got:
        raise CallbackRejected(f"connection closed before {what}")
    raise CallbackRejected(f"truncated {part} ({len(got)} of {size} bytes)")


async def _send(stream: trio.abc.SendStream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise CallbackRejected(f"connection broken ({type(exc).__name__})") from None


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTE_MAX else text[: _QUOTE_MAX - 3] + "..."
