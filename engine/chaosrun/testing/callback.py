"""Test support: the module binary's side of the callback protocol, in Python.

The monitor's side is :func:`chaosrun.run.wire.receive_callback`, the real binary's side the Go
kit (``chaos_go/kit/``). This client is for tests, attack simulations and benchmarks that
need a peer without compiling Go. It speaks the protocol (``docs/protocol.md``) through
``chaosrun.run.wire``'s public frame functions only (``seal``, ``open_frame``), so it also
shows that they are enough to implement a client.

Nothing here closes the stream it is given: the caller owns it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import trio

from ..run.wire import C2M, CHALLENGE_SIZE, KEY_SIZE, M2C, MAGIC, MAX_BODY, MIN_BODY, CallbackRejected, open_frame, seal

__all__ = ["ACK_TIMEOUT", "send_callback"]

#: How long the client waits for the ack, like the Go kit.
ACK_TIMEOUT = 5.0

_HEADER_SIZE = 4  # a frame's u32 BE length prefix
_SERVER_HELLO_SIZE = len(MAGIC) + CHALLENGE_SIZE
_QUOTE_MAX = 64  # longest excerpt of the peer's text in a reason, as the monitor's side


async def send_callback(
    stream: trio.abc.Stream,
    *,
    key: bytes,
    token: str,
    run_id: str,
    step_id: str,
    logs: Sequence[Mapping[str, Any]],
    result: Mapping[str, Any],
    compress: bool = True,
    ack_timeout: float = ACK_TIMEOUT,
) -> dict[str, Any]:
    """Play the binary's side of one callback connection, up to and including the ack.

    Reads the server hello, sends the hello, the logs and the result frames, and waits for
    the ack.

    Args:
        stream: a connection to the monitor's listener.
        key: the step's 32-byte AES-256-GCM key.
        token: the token to present in the hello (a wrong one, to test the monitor).
        run_id: the run the hello names.
        step_id: the step the hello and the result name.
        logs: log messages; ``"t": "log"`` is added to each.
        result: the result message's fields (``ok``, ``error``, ``result``, ``changes``);
            ``"t": "result"`` and ``"step": step_id`` are added unless ``result`` sets
            them itself (so a test can send a result for another step).
        compress: whether to zlib-compress the frames.
        ack_timeout: seconds to wait for the ack once the result is sent.

    Returns:
        The ack message.

    Raises:
        ValueError: the key is not 32 bytes, or a message is larger than a frame may be.
        CallbackRejected: bad server hello, connection lost, a bad ack or no ack within
            ``ack_timeout`` seconds.
    """
    if len(key) != KEY_SIZE:
        raise ValueError(f"the key must be {KEY_SIZE} bytes (AES-256), not {len(key)}")
    server_hello = await _receive_up_to(stream, _SERVER_HELLO_SIZE)
    if len(server_hello) < _SERVER_HELLO_SIZE:
        _closed_before("server hello", server_hello, _SERVER_HELLO_SIZE, "server hello")
    if server_hello[: len(MAGIC)] != MAGIC:
        raise CallbackRejected("bad magic")
    challenge = server_hello[len(MAGIC) :]

    messages: list[Mapping[str, Any]] = [{"t": "hello", "token": token, "run": run_id, "step": step_id}]
    messages += [{"t": "log", **log} for log in logs]
    messages.append({"t": "result", "step": step_id, **result})
    for seq, message in enumerate(messages):
        await _send(stream, seal(key, challenge, C2M, seq, message, compress))

    ack: dict[str, Any] | None = None
    with trio.move_on_after(ack_timeout):
        ack = open_frame(key, challenge, M2C, 0, await _receive_frame(stream, "ack"))
    if ack is None:
        raise CallbackRejected("ack timeout")
    if ack["t"] != "ack":
        raise CallbackRejected(f"expected ack, got {_quote(ack['t'])} (frame 0)")
    return ack


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
