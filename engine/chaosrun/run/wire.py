"""Run stage, wire level: the monitor's side of the callback protocol (version 1).

A chaos binary dials the monitor's ephemeral port, proves its one-time token and streams
its logs and result; this module checks every byte of that conversation. The protocol is
specified in ``docs/protocol.md`` and implemented a second time, in Go, in
``chaos_go/kit/``; ``tests/runtime/test_wire_go.py`` runs one against the other.

In short::

    monitor -> binary   "CRN1" || challenge (16 random bytes), in clear
    frames, both ways   u32 BE L || nonce (12) || AES-256-GCM(ciphertext || tag)
                        AAD = direction (b"c2m" | b"m2c") || challenge || u32 BE seq
                        plaintext = flag (0 raw | 1 zlib) || UTF-8 JSON object
    binary -> monitor   hello (frame 0, within the hello timeout), log*, result
    monitor -> binary   ack, after a valid result

Memory stays bounded whatever the peer sends: a frame's length is checked before its body
is read, decompression stops at ``MAX_FRAME`` bytes, and the kept logs are capped.

Nothing here closes the stream it is given: the caller owns it (and usually the listener
and the nursery around it).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ChaosrunError

__all__ = [
    "C2M",
    "CHALLENGE_SIZE",
    "HELLO_TIMEOUT",
    "KEY_SIZE",
    "M2C",
    "MAGIC",
    "MAX_BODY",
    "MAX_FRAME",
    "MIN_BODY",
    "NONCE_SIZE",
    "PROTOCOL_VERSION",
    "Callback",
    "CallbackRejected",
    "OneTimeToken",
    "StepSecret",
    "open_frame",
    "receive_callback",
    "seal",
    "seal_plaintext",
    "step_config",
]

PROTOCOL_VERSION = 1
MAGIC = b"CRN1"
CHALLENGE_SIZE = 16
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
#: Largest plaintext (flag byte + JSON) of one frame, and largest decompressed JSON body.
MAX_FRAME = 1 << 20
#: Smallest and largest legal value of a frame's length prefix (nonce + ciphertext + tag).
MIN_BODY = NONCE_SIZE + TAG_SIZE
MAX_BODY = MAX_FRAME + MIN_BODY
HELLO_TIMEOUT = 5.0

C2M = b"c2m"
M2C = b"m2c"

FLAG_RAW = 0
FLAG_ZLIB = 1

_HEADER_SIZE = 4
# Read-ahead of the frame reader: many small log frames cost one receive, yet the buffer
# never holds more than one frame plus this much.
_READ_AHEAD = 64 * 1024
# Longest excerpt of peer-controlled text quoted in a rejection reason (reasons go to the
# audit log; a hostile peer must not be able to fill it).
_QUOTE_MAX = 64


class CallbackRejected(ChaosrunError):
    """A callback connection was dropped; ``reason`` says why, in a few words.

    Reasons are stable strings meant for the audit log, e.g. ``"bad magic"``,
    ``"frame too large (1195725856 bytes)"``, ``"authentication failed (frame 0)"``,
    ``"wrong token"``, ``"hello timeout"``, ``"token already used"``,
    ``"result for another step 'x'"``, ``"connection closed before result"``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reject(reason: str) -> NoReturn:
    raise CallbackRejected(reason)


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTE_MAX else text[: _QUOTE_MAX - 3] + "..."


# --- secrets and the step config ------------------------------------------------------


@dataclass(frozen=True, repr=False)
class StepSecret:
    """One step's one-time token and AES-256 key. Never printed: its repr hides both."""

    token: str
    key: bytes

    @classmethod
    def new(cls) -> StepSecret:
        """A fresh token (``secrets.token_urlsafe(32)``) and key (32 random bytes)."""
        return cls(token=secrets.token_urlsafe(32), key=os.urandom(KEY_SIZE))

    @property
    def token_id(self) -> str:
        """A short, non-reversible id of the token: what the audit log records."""
        return hashlib.sha256(self.token.encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"StepSecret(token_id={self.token_id!r})"

    __str__ = __repr__


def step_config(
    *,
    monitor: str,
    secret: StepSecret,
    run_id: str,
    step_id: str,
    module: str,
    params: Mapping[str, Any],
    timeout: float,
    compress: bool = True,
) -> bytes:
    """The one JSON line a module binary reads from its stdin (protocol section 1).

    Args:
        monitor: ``"host:port"`` the binary dials back to.
        secret: the step's token and key.
        run_id: the run's id; the binary repeats it in its hello.
        step_id: the step's id; repeated in the hello and the result.
        module: the module's name.
        params: the step's resolved parameters (the ``with:`` mapping).
        timeout: seconds the module may run; sent as whole milliseconds.
        compress: whether the binary should zlib-compress its frames.

    Returns:
        UTF-8 JSON ending in ``b"\\n"`` (JSON escapes any newline inside strings).
    """
    if len(secret.key) != KEY_SIZE:
        raise ValueError(f"the key must be {KEY_SIZE} bytes, not {len(secret.key)}")
    config = {
        "v": PROTOCOL_VERSION,
        "monitor": monitor,
        "token": secret.token,
        "key": base64.b64encode(secret.key).decode("ascii"),
        "run": run_id,
        "step": step_id,
        "module": module,
        "params": dict(params),
        "timeout_ms": max(0, round(timeout * 1000)),
        "compress": compress,
    }
    return json.dumps(config, separators=(",", ":"), allow_nan=False).encode() + b"\n"


class OneTimeToken:
    """A ``check_token`` for :func:`receive_callback`: accepts ``token`` once.

    Compares in constant time (``hmac.compare_digest`` over SHA-256 digests, so the token
    itself is not kept). A wrong token returns ``False`` and leaves the right one usable,
    since the listener keeps waiting for the real binary; the right token presented a
    second time raises ``CallbackRejected("token already used")``.
    """

    def __init__(self, token: str) -> None:
        self._digest = hashlib.sha256(token.encode()).digest()
        self.used = False

    def __call__(self, presented: str) -> bool:
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        if not hmac.compare_digest(digest, self._digest):
            return False
        if self.used:
            _reject("token already used")
        self.used = True
        return True


# --- frames ---------------------------------------------------------------------------


def _aad(direction: bytes, challenge: bytes, seq: int) -> bytes:
    return direction + challenge + seq.to_bytes(4, "big")


def _check_key(key: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise ValueError(f"the key must be {KEY_SIZE} bytes (AES-256), not {len(key)}")


def _encode(message: Mapping[str, Any], compress: bool) -> bytes:
    payload = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    if compress:
        return bytes([FLAG_ZLIB]) + zlib.compress(payload)
    return bytes([FLAG_RAW]) + payload


def _seal_with(aead: AESGCM, challenge: bytes, direction: bytes, seq: int, plaintext: bytes) -> bytes:
    if len(plaintext) > MAX_FRAME:
        raise ValueError(f"frame plaintext of {len(plaintext)} bytes exceeds {MAX_FRAME}")
    nonce = os.urandom(NONCE_SIZE)
    body = nonce + aead.encrypt(nonce, plaintext, _aad(direction, challenge, seq))
    return len(body).to_bytes(_HEADER_SIZE, "big") + body


def seal_plaintext(key: bytes, challenge: bytes, direction: bytes, seq: int, plaintext: bytes) -> bytes:
    """Encrypt an arbitrary plaintext (flag byte included) into a whole frame.

    For tests that need frames no honest sender makes (zlib bombs, bad flags, non-JSON).
    """
    _check_key(key)
    return _seal_with(AESGCM(key), challenge, direction, seq, plaintext)


def seal(
    key: bytes,
    challenge: bytes,
    direction: bytes,
    seq: int,
    message: Mapping[str, Any],
    compress: bool,
) -> bytes:
    """Encode, optionally compress and encrypt ``message``; return the whole frame.

    The result starts with its 4-byte length prefix. ``compress=True`` always uses zlib
    (flag 1), even when that does not save bytes, so the choice is visible on the wire.

    Raises:
        ValueError: bad key size, or a plaintext larger than ``MAX_FRAME``.
    """
    _check_key(key)
    return _seal_with(AESGCM(key), challenge, direction, seq, _encode(message, compress))


def _decode(plaintext: bytes, seq: int) -> dict[str, Any]:
    if not plaintext:
        _reject(f"empty frame (frame {seq})")
    flag, data = plaintext[0], plaintext[1:]
    if flag == FLAG_ZLIB:
        inflater = zlib.decompressobj()
        try:
            # One byte over the cap tells "too large" from "exactly MAX_FRAME"; the cap
            # bounds memory, whatever the compression ratio.
            payload = inflater.decompress(data, MAX_FRAME + 1)
        except zlib.error:
            _reject(f"bad zlib data (frame {seq})")
        if len(payload) > MAX_FRAME:
            _reject(f"decompressed frame too large (frame {seq})")
        if not inflater.eof:
            _reject(f"truncated zlib data (frame {seq})")
        if inflater.unused_data:
            _reject(f"data after the zlib stream (frame {seq})")
    elif flag == FLAG_RAW:
        payload = data
    else:
        _reject(f"unknown compression flag {flag} (frame {seq})")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        _reject(f"invalid UTF-8 (frame {seq})")
    try:
        message = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        _reject(f"invalid JSON (frame {seq})")
    if not isinstance(message, dict):
        _reject(f"not a JSON object (frame {seq})")
    if not isinstance(message.get("t"), str):
        _reject(f"message without a type (frame {seq})")
    return message


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _open_with(aead: AESGCM, challenge: bytes, direction: bytes, seq: int, body: bytes) -> dict[str, Any]:
    if len(body) < MIN_BODY:
        _reject(f"frame too small ({len(body)} bytes)")
    try:
        plaintext = aead.decrypt(body[:NONCE_SIZE], body[NONCE_SIZE:], _aad(direction, challenge, seq))
    except InvalidTag:
        _reject(f"authentication failed (frame {seq})")
    return _decode(plaintext, seq)


def open_frame(key: bytes, challenge: bytes, direction: bytes, seq: int, body: bytes) -> dict[str, Any]:
    """Authenticate, decrypt, decompress and parse one frame.

    Args:
        body: the frame without its 4-byte length prefix (nonce + ciphertext + tag).

    Returns:
        The message: a JSON object with a string ``t``.

    Raises:
        CallbackRejected: the frame is forged, tampered, reordered, replayed from another
            connection, oversized once decompressed, or not a JSON object.
    """
    _check_key(key)
    return _open_with(AESGCM(key), challenge, direction, seq, body)


class _FrameReader:
    """Length-prefixed frames from a stream, with a bounded buffer."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def _fill(self, size: int) -> bool:
        """Buffer at least ``size`` bytes; ``False`` on end of stream."""
        while len(self._buffer) < size:
            want = max(size - len(self._buffer), _READ_AHEAD)
            try:
                data = await self._stream.receive_some(want)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                _reject(f"connection broken ({type(exc).__name__})")
            if not data:
                return False
            self._buffer += data
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def read_frame(self, what: str) -> bytes:
        """The next frame's body (length prefix stripped).

        Raises:
            CallbackRejected: end of stream (``"connection closed before <what>"`` at a
                frame boundary, ``"truncated frame ..."`` inside one), or a length
                outside the protocol's bounds, detected before any of the body is read.
        """
        if not await self._fill(_HEADER_SIZE):
            if not self._buffer:
                _reject(f"connection closed before {what}")
            _reject(f"truncated frame header ({len(self._buffer)} of {_HEADER_SIZE} bytes)")
        length = int.from_bytes(self._buffer[:_HEADER_SIZE], "big")
        if length > MAX_BODY:
            _reject(f"frame too large ({length} bytes)")
        if length < MIN_BODY:
            _reject(f"frame too small ({length} bytes)")
        if not await self._fill(_HEADER_SIZE + length):
            got = len(self._buffer) - _HEADER_SIZE
            _reject(f"truncated frame ({got} of {length} bytes)")
        del self._buffer[:_HEADER_SIZE]
        return self._take(length)


async def _send(stream: trio.abc.SendStream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        _reject(f"connection broken ({type(exc).__name__})")


# --- the monitor's side ---------------------------------------------------------------


@dataclass(frozen=True)
class Callback:
    """What a module binary delivered.

    Attributes:
        result: the whole result message (``t``, ``step``, ``ok``, ``error``, ``result``,
            ``changes``), as sent.
        logs: the log messages, in order, at most ``max_logs`` of them.
        dropped_logs: how many log messages arrived beyond ``max_logs`` (each was still
            passed to ``on_log``; only the in-memory list is capped).
    """

    result: dict[str, Any]
    logs: list[dict[str, Any]] = field(default_factory=list)
    dropped_logs: int = 0


async def receive_callback(
    stream: trio.abc.Stream,
    *,
    key: bytes,
    check_token: Callable[[str], bool],
    run_id: str,
    step_id: str,
    hello_timeout: float = HELLO_TIMEOUT,
    on_log: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    max_logs: int = 10_000,
) -> Callback:
    """Run the monitor's side of one callback connection, up to and including the ack.

    Sends the server hello, then requires the authenticated hello as frame 0 within
    ``hello_timeout`` seconds of this call (call it right after accepting); then reads log
    frames until the result frame, acknowledges it and returns. The caller owns ``stream``
    and closes it; the caller's cancel scope bounds the time after the hello (the step's
    callback timeout).

    Args:
        stream: a freshly accepted connection.
        key: the step's 32-byte AES-256-GCM key.
        check_token: called once with the hello's token; returns whether it is this step's
            token. Making it one-time (and constant-time) is the caller's job; see
            :class:`OneTimeToken`. It may raise ``CallbackRejected`` for a more precise
            reason (``"token already used"``).
        run_id: the run the hello must name.
        step_id: the step the hello and the result must name.
        hello_timeout: seconds from connection to a verified hello.
        on_log: awaited with each log message as it arrives (e.g. to append it to the
            audit log) -- a log is not lost if the binary dies before its result.
        max_logs: how many log messages to keep in ``Callback.logs``.

    Returns:
        The result message and the logs.

    Raises:
        CallbackRejected: the connection was not a valid callback for this step; the
            reason says why. Nothing else escapes for any byte sequence the peer sends
            (exceptions raised by ``check_token`` or ``on_log`` propagate unchanged).
    """
    _check_key(key)
    aead = AESGCM(key)
    challenge = secrets.token_bytes(CHALLENGE_SIZE)
    reader = _FrameReader(stream)

    hello: dict[str, Any] | None = None
    with trio.move_on_after(hello_timeout):
        await _send(stream, MAGIC + challenge)
        hello = _open_with(aead, challenge, C2M, 0, await reader.read_frame("hello"))
    if hello is None:
        _reject("hello timeout")
    _check_hello(hello, check_token, run_id, step_id)

    logs: list[dict[str, Any]] = []
    dropped = 0
    seq = 1
    while True:
        message = _open_with(aead, challenge, C2M, seq, await reader.read_frame("result"))
        kind = message["t"]
        if kind == "log":
            if on_log is not None:
                await on_log(message)
            if len(logs) < max_logs:
                logs.append(message)
            else:
                dropped += 1
        elif kind == "result":
            _check_result(message, step_id, seq)
            break
        else:
            _reject(f"unexpected message {_quote(kind)} (frame {seq})")
        seq += 1

    # The result is authentic and complete; a binary that left without waiting for its
    # ack changes nothing we know.
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(_seal_with(aead, challenge, M2C, 0, _encode({"t": "ack"}, False)))
    return Callback(result=message, logs=logs, dropped_logs=dropped)


def _check_hello(hello: dict[str, Any], check_token: Callable[[str], bool], run_id: str, step_id: str) -> None:
    if hello["t"] != "hello":
        _reject(f"expected hello, got {_quote(hello['t'])} (frame 0)")
    token = hello.get("token")
    if not isinstance(token, str):
        _reject("hello without a token")
    if not check_token(token):
        _reject("wrong token")
    if hello.get("run") != run_id:
        _reject(f"hello for another run {_quote(hello.get('run'))}")
    if hello.get("step") != step_id:
        _reject(f"hello for another step {_quote(hello.get('step'))}")


def _check_result(result: dict[str, Any], step_id: str, seq: int) -> None:
    if result.get("step") != step_id:
        _reject(f"result for another step {_quote(result.get('step'))}")
    if not isinstance(result.get("ok"), bool):
        _reject(f"result without a boolean 'ok' (frame {seq})")
