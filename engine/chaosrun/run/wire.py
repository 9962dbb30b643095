"""Run stage, wire level: the monitor's side of the callback protocol (version 2).

A chaos binary dials the monitor's ephemeral port, agrees session keys with it, proves the
one-time token and streams its logs and result; this module checks every byte of that
conversation. The protocol is specified in ``docs/protocol.md`` and implemented a second
time, in Go, in ``chaos_go/kit/``; ``tests/runtime/test_wire_go.py`` runs one against the
other.

In short::

    step config (stdin)  ... "monitor_key": the monitor's X25519 public key M, "token": T ...
    monitor -> binary    "CRN2" || challenge (16 random bytes), in clear
    binary -> monitor    B, the binary's ephemeral X25519 public key (32 bytes), in clear
    both                 c2m key || m2c key = HKDF-SHA256(X25519 shared secret,
                             salt = challenge, info = KDF_LABEL || M || B, 64 bytes)
    frames, both ways    u32 BE L || nonce (12) || AES-256-GCM(ciphertext || tag)
                         AAD = direction (b"c2m" | b"m2c") || challenge || u32 BE seq
                         plaintext = flag (0 raw | 1 zlib) || UTF-8 JSON object
    binary -> monitor    hello (frame 0: proof = HMAC-SHA256(T, SHA-256(transcript)),
                         config_sha256, exe_sha256), (log | change)*, result
                         (config_sha256 again; its changes repeat the change messages)
    monitor -> binary    ack, after a valid result

What a callback can make the monitor hold or write is bounded in bytes, whatever the peer
sends (:class:`Limits`): a frame's length is checked before its body is read, frame 0 is
small, a compressed frame is never inflated past ``MAX_FRAME``, and the bytes received, the
inflated log bytes, the log messages, the change messages and the result are capped per
connection. Past a
limit the connection ends with :class:`CallbackFlooded`.

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
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import ChaosrunError

__all__ = [
    "BINARY_SWAPPED",
    "C2M",
    "CHALLENGE_SIZE",
    "CONFIG_ALTERED",
    "HELLO_TIMEOUT",
    "KDF_LABEL",
    "KEY_SIZE",
    "LIMITS",
    "M2C",
    "MAGIC",
    "MAX_BODY",
    "MAX_FRAME",
    "MAX_HELLO_BODY",
    "MIN_BODY",
    "NONCE_SIZE",
    "PROTOCOL_VERSION",
    "PUBLIC_KEY_SIZE",
    "Callback",
    "CallbackFlooded",
    "CallbackRejected",
    "CallbackTampered",
    "Limits",
    "OneTimeToken",
    "StepSecret",
    "TokenReused",
    "config_sha256",
    "hello_proof",
    "open_frame",
    "receive_callback",
    "seal",
    "seal_plaintext",
    "session_keys",
    "step_config",
    "transcript_sha256",
]

PROTOCOL_VERSION = 2
MAGIC = b"CRN2"
CHALLENGE_SIZE = 16
PUBLIC_KEY_SIZE = 32  # an X25519 public key
KEY_SIZE = 32  # an AES-256-GCM session key
NONCE_SIZE = 12
TAG_SIZE = 16
#: HKDF's info starts with this label, then the monitor's and the binary's public keys.
KDF_LABEL = b"chaosrun callback v2"
#: Largest plaintext (flag byte + JSON) of one frame, and largest inflated JSON body.
MAX_FRAME = 1 << 20
#: Smallest and largest legal value of a frame's length prefix (nonce + ciphertext + tag).
MIN_BODY = NONCE_SIZE + TAG_SIZE
MAX_BODY = MAX_FRAME + MIN_BODY
#: Largest length prefix of frame 0 (the hello is a few hundred bytes): an unauthenticated
#: connection never makes the monitor buffer more than this.
MAX_HELLO_BODY = 16 * 1024
HELLO_TIMEOUT = 5.0

C2M = b"c2m"
M2C = b"m2c"

FLAG_RAW = 0
FLAG_ZLIB = 1

#: Reasons of an authenticated callback that does not match what the monitor deployed.
CONFIG_ALTERED = "the step's parameters were altered on the target"
BINARY_SWAPPED = "the binary that ran is not the one deployed"

_HEADER_SIZE = 4
# Read-ahead of the frame reader: many small log frames cost one receive, yet the buffer
# never holds more than one frame plus this much.
_READ_AHEAD = 64 * 1024
# Longest excerpt of peer-controlled text quoted in a rejection reason (reasons go to the
# audit log; a hostile peer must not be able to fill it).
_QUOTE_MAX = 64


@dataclass(frozen=True)
class Limits:
    """What one callback connection may make the monitor hold or write, in bytes.

    Attributes:
        received_bytes: bytes read from the connection (the binary's key and every frame,
            length prefixes included).
        log_bytes: inflated JSON bytes of all log messages together.
        log_messages: log messages.
        result_bytes: inflated JSON bytes of the result message.
        change_bytes: inflated JSON bytes of all change messages together.
        change_messages: change messages.
    """

    received_bytes: int = 8 << 20
    log_bytes: int = 1 << 20
    log_messages: int = 2000
    result_bytes: int = 1 << 20
    change_bytes: int = 1 << 20
    change_messages: int = 1000


LIMITS = Limits()


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


class TokenReused(CallbackRejected):
    """A second valid proof of a token already spent: two parties hold this step's token."""

    def __init__(self) -> None:
        super().__init__("token already used")


class CallbackTampered(CallbackRejected):
    """An authenticated callback for other parameters or from another binary than the
    monitor deployed. ``field`` names the digest (``config_sha256`` or ``exe_sha256``);
    ``expected`` is the monitor's, ``reported`` the binary's (cut to a few dozen chars)."""

    def __init__(self, reason: str, field: str, expected: str, reported: object) -> None:
        super().__init__(reason)
        self.field = field
        self.expected = expected
        self.reported = reported if isinstance(reported, str) and len(reported) <= 80 else _quote(reported)


class CallbackFlooded(CallbackRejected):
    """A connection passed one of the :class:`Limits` (or a frame's inflation cap).

    ``reason`` starts with ``"callback flooded:"``; ``limit`` names the limit
    (``received_bytes``, ``log_bytes``, ``log_messages``, ``result_bytes``, ``frame_bytes``),
    ``allowed`` is its value, ``seen`` what was counted against it when it was passed (the
    refused frame included), ``refused`` the bytes of the frame that was refused.
    """

    def __init__(self, limit: str, allowed: int, seen: int, refused: int, detail: str) -> None:
        super().__init__(f"callback flooded: {detail}")
        self.limit = limit
        self.allowed = allowed
        self.seen = seen
        self.refused = refused


def _reject(reason: str) -> NoReturn:
    raise CallbackRejected(reason)


def _quote(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTE_MAX else text[: _QUOTE_MAX - 3] + "..."


# --- secrets and the step config ------------------------------------------------------


@dataclass(frozen=True, repr=False)
class StepSecret:
    """One step attempt's one-time token and ephemeral X25519 key pair. Never printed:
    its repr shows the token's id only."""

    token: str
    private_key: X25519PrivateKey

    @classmethod
    def new(cls) -> StepSecret:
        """A fresh token (``secrets.token_urlsafe(32)``) and X25519 key pair."""
        return cls(token=secrets.token_urlsafe(32), private_key=X25519PrivateKey.generate())

    @property
    def monitor_key(self) -> bytes:
        """The 32-byte public key the config carries (``monitor_key``): not a secret."""
        return self.private_key.public_key().public_bytes_raw()

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
        secret: the step's token and key pair (only the public key goes in).
        run_id: the run's id; the binary repeats it in its hello.
        step_id: the step's id; repeated in the hello and the result.
        module: the module's name.
        params: the step's resolved parameters (the ``with:`` mapping).
        timeout: seconds the module may run; sent as whole milliseconds.
        compress: whether the binary should zlib-compress its frames.

    Returns:
        UTF-8 JSON ending in ``b"\\n"`` (JSON escapes any newline inside strings). Its
        :func:`config_sha256` is what the binary must report back.
    """
    config = {
        "v": PROTOCOL_VERSION,
        "monitor": monitor,
        "monitor_key": base64.b64encode(secret.monitor_key).decode("ascii"),
        "token": secret.token,
        "run": run_id,
        "step": step_id,
        "module": module,
        "params": dict(params),
        "timeout_ms": max(0, round(timeout * 1000)),
        "compress": compress,
    }
    return json.dumps(config, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def config_sha256(config: bytes) -> str:
    """Hex SHA-256 of a config line's bytes, its one terminating ``\\n`` excluded: the
    ``config_sha256`` the binary reports in its hello and its result."""
    return hashlib.sha256(config.removesuffix(b"\n")).hexdigest()


def session_keys(shared: bytes, challenge: bytes, monitor_key: bytes, binary_key: bytes) -> tuple[bytes, bytes]:
    """The connection's (c2m, m2c) AES-256-GCM keys: the first and second 32 bytes of
    HKDF-SHA256(``shared``, salt = challenge, info = KDF_LABEL || monitor key || binary key)."""
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=2 * KEY_SIZE,
        salt=challenge,
        info=KDF_LABEL + monitor_key + binary_key,
    ).derive(shared)
    return okm[:KEY_SIZE], okm[KEY_SIZE:]


def transcript_sha256(challenge: bytes, monitor_key: bytes, binary_key: bytes, run_id: str, step_id: str) -> bytes:
    """SHA-256 of MAGIC || challenge || monitor key || binary key || run id || step id
    (the ids as UTF-8): what the hello's proof is an HMAC of."""
    data = MAGIC + challenge + monitor_key + binary_key + run_id.encode() + step_id.encode()
    return hashlib.sha256(data).digest()


def hello_proof(token: str, transcript: bytes) -> str:
    """The hello's ``proof``: lowercase hex HMAC-SHA256(key = token (UTF-8), msg = transcript)."""
    return hmac.new(token.encode(), transcript, hashlib.sha256).hexdigest()


class OneTimeToken:
    """A ``check_proof`` for :func:`receive_callback`: accepts a proof of ``token`` once.

    Compares in constant time (``hmac.compare_digest``). A wrong proof returns ``False``
    and leaves the token usable, since the listener keeps waiting for the real binary; a
    valid proof presented after the token was spent raises :class:`TokenReused`.
    """

    def __init__(self, token: str) -> None:
        self._token = token
        self.used = False

    def __call__(self, transcript: bytes, proof: str) -> bool:
        expected = hello_proof(self._token, transcript).encode()
        if not hmac.compare_digest(expected, proof.encode("utf-8", "surrogatepass")):
            return False
        if self.used:
            raise TokenReused()
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

    ``key`` is the session key of ``direction`` (:func:`session_keys`). The result starts
    with its 4-byte length prefix. ``compress=True`` always uses zlib (flag 1), even when
    that does not save bytes, so the choice is visible on the wire.

    Raises:
        ValueError: bad key size, or a plaintext larger than ``MAX_FRAME``.
    """
    _check_key(key)
    return _seal_with(AESGCM(key), challenge, direction, seq, _encode(message, compress))


def _decode(plaintext: bytes, seq: int) -> tuple[dict[str, Any], int]:
    """The message and the size of its (inflated) JSON body."""
    if not plaintext:
        _reject(f"empty frame (frame {seq})")
    flag, data = plaintext[0], plaintext[1:]
    if flag == FLAG_ZLIB:
        inflater = zlib.decompressobj()
        try:
            # Never inflate past the cap, whatever the compression ratio: one byte over it
            # tells "too large" from "exactly MAX_FRAME".
            payload = inflater.decompress(data, MAX_FRAME + 1)
        except zlib.error:
            _reject(f"bad zlib data (frame {seq})")
        if len(payload) > MAX_FRAME:
            raise CallbackFlooded(
                "frame_bytes",
                MAX_FRAME,
                len(payload),
                len(data),
                f"frame {seq} inflates past {MAX_FRAME} bytes "
                f"({len(data)} compressed bytes refused, not inflated further)",
            )
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
    return message, len(payload)


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _open_with(aead: AESGCM, challenge: bytes, direction: bytes, seq: int, body: bytes) -> tuple[dict[str, Any], int]:
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
        key: the session key of ``direction`` (:func:`session_keys`).
        body: the frame without its 4-byte length prefix (nonce + ciphertext + tag).

    Returns:
        The message: a JSON object with a string ``t``.

    Raises:
        CallbackRejected: the frame is forged, tampered, reordered, replayed from another
            connection, or not a JSON object; ``CallbackFlooded`` if it inflates past
            ``MAX_FRAME``.
    """
    _check_key(key)
    return _open_with(AESGCM(key), challenge, direction, seq, body)[0]


class _FrameReader:
    """The binary's key and length-prefixed frames from a stream, with a bounded buffer
    and a cap on the bytes it takes from the stream."""

    def __init__(self, stream: trio.abc.ReceiveStream, limit: int) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._limit = limit
        self.received = 0  # bytes taken from the buffer: the key and whole frames

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
        self.received += size
        return data

    async def read_exact(self, size: int, what: str) -> bytes:
        """The next ``size`` bytes (the binary's public key)."""
        if not await self._fill(size):
            if not self._buffer:
                _reject(f"connection closed before the {what}")
            _reject(f"truncated {what} ({len(self._buffer)} of {size} bytes)")
        return self._take(size)

    async def read_frame(self, what: str, seq: int, max_body: int = MAX_BODY) -> bytes:
        """The next frame's body (length prefix stripped).

        Raises:
            CallbackRejected: end of stream (``"connection closed before <what>"`` at a
                frame boundary, ``"truncated frame ..."`` inside one), or a length
                outside the protocol's bounds, detected before any of the body is read;
                ``CallbackFlooded`` when the frame would pass the received-bytes limit.
        """
        if not await self._fill(_HEADER_SIZE):
            if not self._buffer:
                _reject(f"connection closed before {what}")
            _reject(f"truncated frame header ({len(self._buffer)} of {_HEADER_SIZE} bytes)")
        length = int.from_bytes(self._buffer[:_HEADER_SIZE], "big")
        if length > MAX_BODY:
            _reject(f"frame too large ({length} bytes)")
        if length > max_body:
            _reject(f"frame too large for a hello ({length} bytes)")
        if length < MIN_BODY:
            _reject(f"frame too small ({length} bytes)")
        total = self.received + _HEADER_SIZE + length
        if total > self._limit:
            raise CallbackFlooded(
                "received_bytes",
                self._limit,
                total,
                _HEADER_SIZE + length,
                f"frame {seq} would bring the bytes received to {total}, over the limit of {self._limit}",
            )
        if not await self._fill(_HEADER_SIZE + length):
            got = len(self._buffer) - _HEADER_SIZE
            _reject(f"truncated frame ({got} of {length} bytes)")
        self._take(_HEADER_SIZE)
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
            ``changes``, ``config_sha256``), as sent.
        logs: the log messages, in order, at most ``max_logs`` of them.
        dropped_logs: how many log messages arrived beyond ``max_logs`` (each was still
            passed to ``on_log``; only the in-memory list is capped).
        log_bytes: inflated JSON bytes of all log messages.
    """

    result: dict[str, Any]
    logs: list[dict[str, Any]] = field(default_factory=list)
    dropped_logs: int = 0
    log_bytes: int = 0


async def receive_callback(
    stream: trio.abc.Stream,
    *,
    private_key: X25519PrivateKey,
    check_proof: Callable[[bytes, str], bool],
    run_id: str,
    step_id: str,
    config_sha256: str,
    exe_sha256: str,
    hello_timeout: float = HELLO_TIMEOUT,
    on_log: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    max_logs: int = 10_000,
    limits: Limits = LIMITS,
    on_change: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
) -> Callback:
    """Run the monitor's side of one callback connection, up to and including the ack.

    Sends the server hello, reads the binary's public key, derives the session keys, then
    requires the authenticated hello as frame 0, all within ``hello_timeout`` seconds of
    this call (call it right after accepting); then reads log frames until the result
    frame, acknowledges it and returns. The caller owns ``stream`` and closes it; the
    caller's cancel scope bounds the time after the hello (the step's callback timeout).

    Args:
        stream: a freshly accepted connection.
        private_key: the step attempt's X25519 key (its public half is the config's
            ``monitor_key``).
        check_proof: called once with the transcript's SHA-256 and the hello's ``proof``;
            returns whether it is a proof of this step's token. Making it one-time (and
            constant-time) is the caller's job; see :class:`OneTimeToken`. It may raise
            ``CallbackRejected`` for a more precise reason (:class:`TokenReused`).
        run_id: the run the hello must name.
        step_id: the step the hello and the result must name.
        config_sha256: :func:`config_sha256` of the config line the monitor sent; the
            hello and the result must report it.
        exe_sha256: hex SHA-256 of the binary the monitor deployed; the hello must report it.
        hello_timeout: seconds from connection to a verified hello.
        on_log: awaited with each log message as it arrives (e.g. to append it to the
            audit log) -- a log is not lost if the binary dies before its result.
        on_change: awaited with each change message's ``change`` object as it arrives,
            likewise: what a module changed is known even if its result never comes.
        max_logs: how many log messages to keep in ``Callback.logs``.
        limits: the byte limits of this connection.

    Returns:
        The result message and the logs.

    Raises:
        CallbackRejected: the connection was not a valid callback for this step; the
            reason says why. Subclasses: :class:`CallbackTampered` (proof valid, but
            another config or binary), :class:`CallbackFlooded` (a limit passed),
            :class:`TokenReused`. Nothing else escapes for any byte sequence the peer
            sends (exceptions raised by ``check_proof`` or ``on_log`` propagate unchanged).
    """
    challenge = secrets.token_bytes(CHALLENGE_SIZE)
    monitor_key = private_key.public_key().public_bytes_raw()
    reader = _FrameReader(stream, limits.received_bytes)

    hello: dict[str, Any] | None = None
    with trio.move_on_after(hello_timeout):
        await _send(stream, MAGIC + challenge)
        binary_key = await reader.read_exact(PUBLIC_KEY_SIZE, "binary's key")
        try:
            shared = private_key.exchange(X25519PublicKey.from_public_bytes(binary_key))
        except ValueError:  # a low-order point: the "shared" secret would be public
            _reject("bad binary key (low-order point)")
        c2m_key, m2c_key = session_keys(shared, challenge, monitor_key, binary_key)
        c2m = AESGCM(c2m_key)
        body = await reader.read_frame("hello", 0, MAX_HELLO_BODY)
        hello, _ = _open_with(c2m, challenge, C2M, 0, body)
    if hello is None:
        _reject("hello timeout")
    transcript = transcript_sha256(challenge, monitor_key, binary_key, run_id, step_id)
    _check_hello(hello, transcript, check_proof, run_id, step_id, config_sha256, exe_sha256)

    logs: list[dict[str, Any]] = []
    dropped = log_bytes = log_count = change_bytes = change_count = 0
    seq = 1
    while True:
        message, size = _open_with(c2m, challenge, C2M, seq, await reader.read_frame("result", seq))
        kind = message["t"]
        if kind == "log":
            log_count += 1
            log_bytes += size
            _check_logs(limits, seq, log_count, log_bytes, size)
            if on_log is not None:
                await on_log(message)
            if len(logs) < max_logs:
                logs.append(message)
            else:
                dropped += 1
        elif kind == "change":
            change_count += 1
            change_bytes += size
            _check_changes(limits, seq, change_count, change_bytes, size)
            change = message.get("change")
            if not isinstance(change, dict) or not isinstance(change.get("action"), str):
                _reject(f"change without an action (frame {seq})")
            if on_change is not None:
                await on_change(change)
        elif kind == "result":
            if size > limits.result_bytes:
                raise CallbackFlooded(
                    "result_bytes",
                    limits.result_bytes,
                    size,
                    size,
                    f"the result (frame {seq}) is {size} bytes, over the limit of {limits.result_bytes}",
                )
            _check_result(message, step_id, seq, config_sha256)
            break
        else:
            _reject(f"unexpected message {_quote(kind)} (frame {seq})")
        seq += 1

    # The result is authentic and complete; a binary that left without waiting for its
    # ack changes nothing we know.
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(_seal_with(AESGCM(m2c_key), challenge, M2C, 0, _encode({"t": "ack"}, False)))
    return Callback(result=message, logs=logs, dropped_logs=dropped, log_bytes=log_bytes)


def _check_logs(limits: Limits, seq: int, count: int, total: int, size: int) -> None:
    if count > limits.log_messages:
        raise CallbackFlooded(
            "log_messages",
            limits.log_messages,
            total,
            size,
            f"log message {count} (frame {seq}) is over the limit of {limits.log_messages} messages "
            f"({total} log bytes seen, {size} refused)",
        )
    if total > limits.log_bytes:
        raise CallbackFlooded(
            "log_bytes",
            limits.log_bytes,
            total,
            size,
            f"frame {seq} brings the logs to {total} bytes, over the limit of {limits.log_bytes} ({size} refused)",
        )


def _check_changes(limits: Limits, seq: int, count: int, total: int, size: int) -> None:
    if count > limits.change_messages:
        raise CallbackFlooded(
            "change_messages",
            limits.change_messages,
            total,
            size,
            f"change message {count} (frame {seq}) is over the limit of {limits.change_messages} messages",
        )
    if total > limits.change_bytes:
        raise CallbackFlooded(
            "change_bytes",
            limits.change_bytes,
            total,
            size,
            f"frame {seq} brings the changes to {total} bytes, "
            f"over the limit of {limits.change_bytes} ({size} refused)",
        )


def _check_hello(
    hello: dict[str, Any],
    transcript: bytes,
    check_proof: Callable[[bytes, str], bool],
    run_id: str,
    step_id: str,
    config_digest: str,
    exe_digest: str,
) -> None:
    if hello["t"] != "hello":
        _reject(f"expected hello, got {_quote(hello['t'])} (frame 0)")
    if hello.get("run") != run_id:
        _reject(f"hello for another run {_quote(hello.get('run'))}")
    if hello.get("step") != step_id:
        _reject(f"hello for another step {_quote(hello.get('step'))}")
    proof = hello.get("proof")
    if not isinstance(proof, str):
        _reject("hello without a proof")
    if not check_proof(transcript, proof):
        _reject("wrong token")
    # The token is spent: from here on, a refusal means the step cannot get its result.
    _check_digest(hello.get("exe_sha256"), exe_digest, "exe_sha256", BINARY_SWAPPED)
    _check_digest(hello.get("config_sha256"), config_digest, "config_sha256", CONFIG_ALTERED)


def _check_digest(reported: object, expected: str, name: str, reason: str) -> None:
    if not expected or reported != expected:
        raise CallbackTampered(reason, name, expected, reported)


def _check_result(result: dict[str, Any], step_id: str, seq: int, config_digest: str) -> None:
    if result.get("step") != step_id:
        _reject(f"result for another step {_quote(result.get('step'))}")
    if not isinstance(result.get("ok"), bool):
        _reject(f"result without a boolean 'ok' (frame {seq})")
    _check_digest(result.get("config_sha256"), config_digest, "config_sha256", CONFIG_ALTERED)
