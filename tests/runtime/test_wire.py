"""The monitor's side of the callback protocol (version 2), against the Python client and
hand-made attacks, over real loopback TCP."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaosrun.run.wire import (
    BINARY_SWAPPED,
    C2M,
    CHALLENGE_SIZE,
    CONFIG_ALTERED,
    M2C,
    MAGIC,
    MAX_FRAME,
    MAX_HELLO_BODY,
    Callback,
    CallbackFlooded,
    CallbackRejected,
    CallbackTampered,
    Limits,
    OneTimeToken,
    StepSecret,
    TokenReused,
    config_sha256,
    hello_proof,
    open_frame,
    receive_callback,
    seal,
    session_keys,
    step_config,
    transcript_sha256,
)
from chaosrun.testing import send_callback
from chaosrun.testing.callback import ClientSession, open_session

RUN = "run-1"
STEP = "step-a"
EXE = hashlib.sha256(b"the deployed binary").hexdigest()
RESULT: dict[str, Any] = {"ok": True, "error": None, "result": {"exists": True}, "changes": []}


def make_config(secret: StepSecret, params: dict[str, Any] | None = None) -> bytes:
    return step_config(
        monitor="127.0.0.1:1",
        secret=secret,
        run_id=RUN,
        step_id=STEP,
        module="file_exists",
        params=params or {"path": "/etc/hosts"},
        timeout=30,
    )


@dataclass
class Outcome:
    """What the server side of one connection ended with."""

    callback: Callback | None = None
    rejected: CallbackRejected | None = None
    logs_seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reason(self) -> str:
        assert self.rejected is not None, f"not rejected: {self.callback}"
        return self.rejected.reason


Client = Callable[[trio.SocketStream], Awaitable[Any]]


class Monitor:
    """A listener on 127.0.0.1:0 that runs receive_callback on each connection."""

    def __init__(self, secret: StepSecret, check_proof: Callable[[bytes, str], bool] | None = None):
        self.secret = secret
        self.check_proof = check_proof or OneTimeToken(secret.token)
        self.config_sha256 = config_sha256(make_config(secret))

    async def exchange(self, client: Client, **server_kwargs: Any) -> tuple[Outcome, Any]:
        """Accept one connection, run `client` against it; return both ends' outcomes."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        listener = listeners[0]
        port = listener.socket.getsockname()[1]
        outcome = Outcome()
        client_result: list[Any] = []

        async def on_log(message: dict[str, Any]) -> None:
            outcome.logs_seen.append(message)

        async def serve() -> None:
            stream = await listener.accept()
            async with stream:
                try:
                    outcome.callback = await receive_callback(
                        stream,
                        private_key=self.secret.private_key,
                        check_proof=self.check_proof,
                        run_id=RUN,
                        step_id=STEP,
                        config_sha256=self.config_sha256,
                        exe_sha256=EXE,
                        on_log=on_log,
                        **server_kwargs,
                    )
                except CallbackRejected as exc:
                    outcome.rejected = exc

        async def connect() -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                try:
                    client_result.append(await client(stream))
                except CallbackRejected as exc:
                    client_result.append(exc)

        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            nursery.start_soon(connect)
        return outcome, client_result[0] if client_result else None


def honest(
    secret: StepSecret,
    *,
    logs: list[dict[str, Any]] | None = None,
    result: dict[str, Any] | None = None,
    compress: bool = True,
    monitor_key: bytes | None = None,
    token: str | None = None,
    step_id: str = STEP,
    run_id: str = RUN,
    config: bytes | None = None,
    exe: str = EXE,
) -> Client:
    async def client(stream: trio.SocketStream) -> dict[str, Any]:
        return await send_callback(
            stream,
            monitor_key=monitor_key or secret.monitor_key,
            token=token or secret.token,
            run_id=run_id,
            step_id=step_id,
            config_sha256=config_sha256(config or make_config(secret)),
            exe_sha256=exe,
            logs=logs or [],
            result=result or RESULT,
            compress=compress,
        )

    return client


async def read_server_hello(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while len(data) < len(MAGIC) + CHALLENGE_SIZE:
        chunk = await stream.receive_some(len(MAGIC) + CHALLENGE_SIZE - len(data))
        assert chunk, "server closed before its hello"
        data += chunk
    assert data[:4] == MAGIC
    return data[4:]


async def drain(stream: trio.abc.ReceiveStream) -> bytes:
    """Read until the server closes; return what it sent."""
    data = b""
    try:
        while chunk := await stream.receive_some():
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


def raw_client(secret: StepSecret, build: Callable[[ClientSession], bytes], *, close: bool = True) -> Client:
    """A client that does the handshake, sends build(session) and waits for the end."""

    async def client(stream: trio.SocketStream) -> bytes:
        session = await open_session(stream, secret.monitor_key)
        try:
            await stream.send_all(build(session))
            if close:
                await stream.send_eof()
        except trio.BrokenResourceError:
            pass  # the monitor hung up before everything was sent
        return await drain(stream)

    return client


def bytes_client(build: Callable[[bytes], bytes], *, close: bool = True) -> Client:
    """A client that reads the server hello and sends build(challenge): no handshake."""

    async def client(stream: trio.SocketStream) -> bytes:
        challenge = await read_server_hello(stream)
        await stream.send_all(build(challenge))
        if close:
            await stream.send_eof()
        return await drain(stream)

    return client


def hello(session: ClientSession, secret: StepSecret, **overrides: Any) -> dict[str, Any]:
    return {
        "t": "hello",
        "run": RUN,
        "step": STEP,
        "proof": session.proof(secret.token, RUN, STEP),
        "config_sha256": config_sha256(make_config(secret)),
        "exe_sha256": EXE,
        **overrides,
    }


def hello_frame(session: ClientSession, secret: StepSecret, **overrides: Any) -> bytes:
    return session.frame(hello(session, secret, **overrides))


def result_frame(session: ClientSession, secret: StepSecret, **overrides: Any) -> bytes:
    message = {"t": "result", "step": STEP, "config_sha256": config_sha256(make_config(secret)), **RESULT}
    return session.frame({**message, **overrides})


@pytest.fixture
def secret() -> StepSecret:
    return StepSecret.new()


@pytest.fixture
def monitor(secret: StepSecret) -> Monitor:
    return Monitor(secret)


# --- the happy path -------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
async def test_round_trip_delivers_logs_in_order_and_the_result(
    monitor: Monitor, secret: StepSecret, compress: bool
) -> None:
    logs = [{"ts": 1732800000.5 + i, "level": "info", "msg": f"line {i}", "fields": {"i": i}} for i in range(5)]
    logs.append({"ts": 1.0, "level": "warn", "msg": "ü" * 200_000, "fields": {}})
    outcome, ack = await monitor.exchange(honest(secret, logs=logs, compress=compress))

    assert outcome.rejected is None
    assert ack == {"t": "ack"}
    assert outcome.callback is not None
    assert outcome.callback.result == {
        "t": "result",
        "step": STEP,
        "config_sha256": monitor.config_sha256,
        **RESULT,
    }
    assert outcome.callback.logs == [{"t": "log", **log} for log in logs]
    assert outcome.logs_seen == outcome.callback.logs
    assert outcome.callback.dropped_logs == 0
    assert outcome.callback.log_bytes > 400_000


async def test_compression_flag_is_visible_in_the_plaintext() -> None:
    key, challenge = os.urandom(32), bytes(CHALLENGE_SIZE)
    message = {"t": "log", "msg": "x" * 1000}
    packed = seal(key, challenge, C2M, 3, message, compress=True)
    plain = seal(key, challenge, C2M, 3, message, compress=False)
    assert len(packed) < len(plain)
    assert int.from_bytes(plain[:4], "big") == len(plain) - 4
    assert open_frame(key, challenge, C2M, 3, packed[4:]) == message
    assert open_frame(key, challenge, C2M, 3, plain[4:]) == message


async def test_logs_beyond_max_logs_are_streamed_but_not_kept(monitor: Monitor, secret: StepSecret) -> None:
    logs = [{"ts": 0.0, "level": "info", "msg": str(i), "fields": {}} for i in range(7)]
    outcome, _ = await monitor.exchange(honest(secret, logs=logs), max_logs=3)
    assert outcome.callback is not None
    assert [log["msg"] for log in outcome.callback.logs] == ["0", "1", "2"]
    assert outcome.callback.dropped_logs == 4
    assert len(outcome.logs_seen) == 7


# --- the handshake and the proof ------------------------------------------------------


def test_both_ends_derive_the_same_distinct_keys_and_the_proof_binds_the_transcript() -> None:
    monitor, binary = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    m_pub, b_pub = monitor.public_key().public_bytes_raw(), binary.public_key().public_bytes_raw()
    challenge = os.urandom(CHALLENGE_SIZE)
    at_monitor = session_keys(monitor.exchange(binary.public_key()), challenge, m_pub, b_pub)
    at_binary = session_keys(binary.exchange(monitor.public_key()), challenge, m_pub, b_pub)
    assert at_monitor == at_binary
    c2m, m2c = at_monitor
    assert len(c2m) == len(m2c) == 32 and c2m != m2c
    transcript = transcript_sha256(challenge, m_pub, b_pub, RUN, STEP)
    assert transcript == hashlib.sha256(MAGIC + challenge + m_pub + b_pub + RUN.encode() + STEP.encode()).digest()
    proof = hello_proof("tok", transcript)
    assert len(proof) == 64 and proof == proof.lower()
    assert hello_proof("tok", transcript_sha256(os.urandom(16), m_pub, b_pub, RUN, STEP)) != proof
    assert hello_proof("tok", transcript_sha256(challenge, m_pub, b_pub, RUN, "step-b")) != proof


async def test_the_token_never_crosses_the_wire(monitor: Monitor, secret: StepSecret) -> None:
    tap = Tap()
    outcome, _ = await monitor.exchange(tap.wrap(honest(secret, compress=False)))
    assert outcome.callback is not None
    wire = bytes(tap.sent + tap.received)
    for form in (secret.token.encode(), base64.b64encode(secret.token.encode()), secret.token.encode().hex().encode()):
        assert form not in wire


async def test_a_passive_observer_with_the_config_cannot_decrypt_a_recorded_session(
    monitor: Monitor, secret: StepSecret
) -> None:
    """The observer read the whole config (token and monitor key) and recorded every byte
    of a real session, both ways; it took no part in the exchange."""
    tap = Tap()
    outcome, _ = await monitor.exchange(tap.wrap(honest(secret, logs=[{"msg": "secret stuff"}], compress=False)))
    assert outcome.callback is not None
    config = json.loads(make_config(secret))
    token, monitor_key = config["token"], base64.b64decode(config["monitor_key"])
    challenge = bytes(tap.received[4:20])
    binary_key, frames = bytes(tap.sent[:32]), bytes(tap.sent[32:])
    length = int.from_bytes(frames[:4], "big")
    frame0 = frames[4 : 4 + length]
    aad = C2M + challenge + (0).to_bytes(4, "big")

    fresh = X25519PrivateKey.generate()  # all the observer can make: a key pair of its own
    candidates = {
        "fresh key with the monitor key": fresh.exchange(X25519PublicKey.from_public_bytes(monitor_key)),
        "fresh key with the binary key": fresh.exchange(X25519PublicKey.from_public_bytes(binary_key)),
        "the token as the secret": token.encode(),
        "the public keys as the secret": monitor_key + binary_key,
    }
    for shared in candidates.values():
        for key in session_keys(shared, challenge, monitor_key, binary_key):
            with pytest.raises(InvalidTag):
                AESGCM(key).decrypt(frame0[:12], frame0[12:], aad)
    assert b"secret stuff" not in bytes(tap.sent)


async def test_a_wrong_token_gives_a_proof_that_is_refused(monitor: Monitor, secret: StepSecret) -> None:
    outcome, _ = await monitor.exchange(honest(secret, token="not-the-token"))
    assert outcome.reason == "wrong token"


async def test_a_wrong_token_does_not_burn_the_right_one(monitor: Monitor, secret: StepSecret) -> None:
    outcome, _ = await monitor.exchange(honest(secret, token="guess"))
    assert outcome.reason == "wrong token"
    outcome, ack = await monitor.exchange(honest(secret))
    assert outcome.callback is not None
    assert ack == {"t": "ack"}


async def test_a_second_valid_proof_is_refused_as_token_already_used(monitor: Monitor, secret: StepSecret) -> None:
    first, _ = await monitor.exchange(honest(secret))
    assert first.callback is not None
    second, _ = await monitor.exchange(honest(secret))
    assert second.reason == "token already used"
    assert isinstance(second.rejected, TokenReused)


async def test_a_proof_for_another_connection_is_refused(monitor: Monitor, secret: StepSecret) -> None:
    # A proof made over another challenge (e.g. copied from another session) is no proof here.
    other = hello_proof(secret.token, transcript_sha256(os.urandom(16), secret.monitor_key, bytes(32), RUN, STEP))
    outcome, _ = await monitor.exchange(raw_client(secret, lambda s: hello_frame(s, secret, proof=other)))
    assert outcome.reason == "wrong token"


async def test_a_hello_without_a_proof_is_refused(monitor: Monitor, secret: StepSecret) -> None:
    def no_proof(session: ClientSession) -> bytes:
        message = hello(session, secret)
        del message["proof"]
        return session.frame(message)

    outcome, _ = await monitor.exchange(raw_client(secret, no_proof))
    assert outcome.reason == "hello without a proof"


async def test_another_monitor_key_fails_authentication_and_the_client_gets_no_ack(
    monitor: Monitor, secret: StepSecret
) -> None:
    other = StepSecret.new()
    outcome, client = await monitor.exchange(honest(secret, monitor_key=other.monitor_key))
    assert outcome.reason == "authentication failed (frame 0)"
    assert isinstance(client, CallbackRejected)
    assert client.reason in ("connection closed before ack", "connection broken (BrokenResourceError)")


async def test_a_low_order_binary_key_is_refused(monitor: Monitor) -> None:
    outcome, _ = await monitor.exchange(bytes_client(lambda _c: bytes(32)))
    assert outcome.reason == "bad binary key (low-order point)"


# --- tampering and replay -------------------------------------------------------------


async def test_flipped_bit_in_the_hello_fails_authentication_of_frame_0(monitor: Monitor, secret: StepSecret) -> None:
    def tampered(session: ClientSession) -> bytes:
        frame = bytearray(hello_frame(session, secret))
        frame[20] ^= 0x01  # inside the ciphertext
        return bytes(frame)

    outcome, _ = await monitor.exchange(raw_client(secret, tampered))
    assert outcome.reason == "authentication failed (frame 0)"


async def test_flipped_bit_in_a_log_frame_fails_authentication_of_frame_1(monitor: Monitor, secret: StepSecret) -> None:
    def tampered(session: ClientSession) -> bytes:
        first = hello_frame(session, secret)
        log = bytearray(session.frame({"t": "log", "msg": "hi"}))
        log[-1] ^= 0x80  # inside the tag
        return first + bytes(log)

    outcome, _ = await monitor.exchange(raw_client(secret, tampered))
    assert outcome.reason == "authentication failed (frame 1)"


async def test_reordered_frames_fail_authentication(monitor: Monitor, secret: StepSecret) -> None:
    def swapped(session: ClientSession) -> bytes:
        first = hello_frame(session, secret)
        log1 = session.frame({"t": "log", "msg": "1"})
        log2 = session.frame({"t": "log", "msg": "2"})
        return first + log2 + log1

    outcome, _ = await monitor.exchange(raw_client(secret, swapped))
    assert outcome.reason == "authentication failed (frame 1)"


async def test_monitor_frame_reflected_back_fails_authentication(monitor: Monitor, secret: StepSecret) -> None:
    def reflected(session: ClientSession) -> bytes:
        return seal(session.m2c_key, session.challenge, M2C, 0, hello(session, secret), True)

    outcome, _ = await monitor.exchange(raw_client(secret, reflected))
    assert outcome.reason == "authentication failed (frame 0)"


async def test_replayed_client_stream_fails_on_the_new_challenge(secret: StepSecret) -> None:
    tap = Tap()
    original, ack = await Monitor(secret).exchange(tap.wrap(honest(secret, logs=[{"msg": "x"}])))
    assert original.callback is not None and ack == {"t": "ack"}

    # The attacker replays the captured bytes (the binary's key, then its frames) to a
    # fresh listener that would even accept any proof: the new challenge gives new keys.
    replay, _ = await Monitor(secret, check_proof=lambda _t, _p: True).exchange(
        bytes_client(lambda _c: bytes(tap.sent))
    )
    assert replay.reason == "authentication failed (frame 0)"


async def test_hello_for_another_step_is_rejected(monitor: Monitor, secret: StepSecret) -> None:
    outcome, _ = await monitor.exchange(honest(secret, step_id="step-b"))
    assert outcome.reason == "hello for another step 'step-b'"


async def test_hello_for_another_run_is_rejected(monitor: Monitor, secret: StepSecret) -> None:
    outcome, _ = await monitor.exchange(honest(secret, run_id="run-0"))
    assert outcome.reason == "hello for another run 'run-0'"


async def test_result_for_another_step_is_rejected(monitor: Monitor, secret: StepSecret) -> None:
    outcome, _ = await monitor.exchange(honest(secret, result={**RESULT, "step": "step-b"}))
    assert outcome.reason == "result for another step 'step-b'"


async def test_result_without_boolean_ok_is_rejected(monitor: Monitor, secret: StepSecret) -> None:
    outcome, _ = await monitor.exchange(honest(secret, result={"ok": "yes"}))
    assert outcome.reason == "result without a boolean 'ok' (frame 1)"


async def test_log_before_hello_is_rejected(monitor: Monitor, secret: StepSecret) -> None:
    outcome, _ = await monitor.exchange(raw_client(secret, lambda s: s.frame({"t": "log", "msg": "early"})))
    assert outcome.reason == "expected hello, got 'log' (frame 0)"


async def test_second_hello_is_rejected(monitor: Monitor, secret: StepSecret) -> None:
    def two_hellos(session: ClientSession) -> bytes:
        return hello_frame(session, secret) + hello_frame(session, secret)

    outcome, _ = await monitor.exchange(raw_client(secret, two_hellos))
    assert outcome.reason == "unexpected message 'hello' (frame 1)"


# --- results bound to what was asked --------------------------------------------------


async def test_a_hello_for_altered_parameters_fails_with_both_digests(monitor: Monitor, secret: StepSecret) -> None:
    decoy = make_config(secret, {"path": "/tmp/decoy"})  # what a root candidate fed the binary
    outcome, _ = await monitor.exchange(honest(secret, config=decoy))
    assert outcome.reason == CONFIG_ALTERED == "the step's parameters were altered on the target"
    assert isinstance(outcome.rejected, CallbackTampered)
    assert outcome.rejected.field == "config_sha256"
    assert outcome.rejected.expected == monitor.config_sha256
    assert outcome.rejected.reported == config_sha256(decoy)


async def test_a_result_for_altered_parameters_is_refused_even_after_a_good_hello(
    monitor: Monitor, secret: StepSecret
) -> None:
    def late_swap(session: ClientSession) -> bytes:
        return hello_frame(session, secret) + result_frame(session, secret, config_sha256="0" * 64)

    outcome, _ = await monitor.exchange(raw_client(secret, late_swap))
    assert outcome.reason == CONFIG_ALTERED
    assert isinstance(outcome.rejected, CallbackTampered) and outcome.rejected.reported == "0" * 64


async def test_a_hello_from_another_executable_fails(monitor: Monitor, secret: StepSecret) -> None:
    swapped = hashlib.sha256(b"the candidate's build").hexdigest()
    outcome, _ = await monitor.exchange(honest(secret, exe=swapped))
    assert outcome.reason == BINARY_SWAPPED == "the binary that ran is not the one deployed"
    assert isinstance(outcome.rejected, CallbackTampered)
    assert (outcome.rejected.field, outcome.rejected.expected, outcome.rejected.reported) == (
        "exe_sha256",
        EXE,
        swapped,
    )


async def test_the_digests_are_checked_only_behind_a_valid_proof(monitor: Monitor, secret: StepSecret) -> None:
    outcome, _ = await monitor.exchange(honest(secret, token="guess", exe="x"))
    assert outcome.reason == "wrong token"


def test_the_config_digest_is_of_the_line_without_its_newline(secret: StepSecret) -> None:
    line = make_config(secret)
    assert config_sha256(line) == hashlib.sha256(line[:-1]).hexdigest() == config_sha256(line[:-1])


# --- floods ---------------------------------------------------------------------------


async def test_a_zip_bomb_log_frame_is_refused_without_inflating_it(monitor: Monitor, secret: StepSecret) -> None:
    bomb = zlib.compress(b'{"t":"log","msg":"' + b"A" * (64 * MAX_FRAME), 9)
    assert len(bomb) < MAX_FRAME // 4  # fits in a frame easily

    def bombing(session: ClientSession) -> bytes:
        return hello_frame(session, secret) + session.frame_plaintext(b"\x01" + bomb)

    outcome, _ = await monitor.exchange(raw_client(secret, bombing))
    assert isinstance(outcome.rejected, CallbackFlooded)
    assert outcome.reason.startswith("callback flooded: frame 1 inflates past 1048576 bytes")
    assert outcome.rejected.limit == "frame_bytes" and outcome.rejected.seen == MAX_FRAME + 1
    assert outcome.rejected.refused == len(bomb)
    assert outcome.logs_seen == []


async def test_a_zip_bomb_hello_is_refused_too(monitor: Monitor, secret: StepSecret) -> None:
    bomb = zlib.compress(b'{"t":"hello","proof":"' + b"A" * (8 * MAX_FRAME), 9)
    assert len(bomb) < MAX_HELLO_BODY
    outcome, _ = await monitor.exchange(raw_client(secret, lambda s: s.frame_plaintext(b"\x01" + bomb)))
    assert outcome.reason.startswith("callback flooded: frame 0 inflates past")


async def test_a_log_bytes_flood_stops_at_the_limit(monitor: Monitor, secret: StepSecret) -> None:
    """The issue's attack: one stolen step key, 2,000 compressed frames of ~800 KB each."""
    big = {"t": "log", "level": "info", "msg": "x" * 4096, "fields": {f"k{i}": "A" * 4000 for i in range(200)}}
    body = json.dumps(big, separators=(",", ":")).encode()
    size, packed = len(body), b"\x01" + zlib.compress(body)
    sent = []

    def flooding(session: ClientSession) -> bytes:
        frames = [hello_frame(session, secret)]
        for _ in range(2000):
            frames.append(session.frame_plaintext(packed))
        sent.append(sum(map(len, frames)))
        return b"".join(frames)

    with trio.fail_after(20):
        outcome, _ = await monitor.exchange(raw_client(secret, flooding))
    assert isinstance(outcome.rejected, CallbackFlooded)
    assert outcome.rejected.limit == "log_bytes"
    assert outcome.reason == (
        f"callback flooded: frame 2 brings the logs to {2 * size} bytes, over the limit of 1048576 ({size} refused)"
    )
    assert len(outcome.logs_seen) == 1  # the second frame was refused before on_log
    assert sent[0] < 8 << 20  # compressed: the bytes-received limit never came into it


async def test_a_log_message_count_flood_stops_at_the_limit(monitor: Monitor, secret: StepSecret) -> None:
    def chatty(session: ClientSession) -> bytes:
        return hello_frame(session, secret) + b"".join(session.frame({"t": "log", "msg": "."}) for _ in range(2001))

    outcome, _ = await monitor.exchange(raw_client(secret, chatty))
    assert isinstance(outcome.rejected, CallbackFlooded) and outcome.rejected.limit == "log_messages"
    assert outcome.reason.startswith("callback flooded: log message 2001 (frame 2001) is over the limit of 2000")
    assert len(outcome.logs_seen) == 2000


async def test_an_oversized_result_is_refused(monitor: Monitor, secret: StepSecret) -> None:
    def huge(session: ClientSession) -> bytes:
        result = {"t": "result", "step": STEP, "ok": True, "result": {"out": "y" * (2 * MAX_FRAME)}}
        return hello_frame(session, secret) + session.frame_plaintext(
            b"\x01" + zlib.compress(json.dumps(result).encode())
        )

    outcome, _ = await monitor.exchange(raw_client(secret, huge))
    assert isinstance(outcome.rejected, CallbackFlooded)
    assert outcome.reason.startswith("callback flooded: frame 1 inflates past 1048576 bytes")


async def test_a_result_over_the_result_limit_is_refused(monitor: Monitor, secret: StepSecret) -> None:
    def big(session: ClientSession) -> bytes:
        return hello_frame(session, secret) + result_frame(session, secret, result={"out": "z" * 5000})

    outcome, _ = await monitor.exchange(raw_client(secret, big), limits=Limits(result_bytes=4096))
    assert isinstance(outcome.rejected, CallbackFlooded) and outcome.rejected.limit == "result_bytes"
    assert outcome.reason.startswith("callback flooded: the result (frame 1) is ")
    assert outcome.reason.endswith("bytes, over the limit of 4096")


async def test_the_bytes_received_are_capped_per_connection(monitor: Monitor, secret: StepSecret) -> None:
    def raw_logs(session: ClientSession) -> bytes:
        log = {"t": "log", "msg": "r" * 10_000}
        return hello_frame(session, secret) + b"".join(session.frame(log, compress=False) for _ in range(20))

    outcome, _ = await monitor.exchange(raw_client(secret, raw_logs), limits=Limits(received_bytes=50_000))
    assert isinstance(outcome.rejected, CallbackFlooded) and outcome.rejected.limit == "received_bytes"
    assert outcome.reason.startswith("callback flooded: frame 5 would bring the bytes received to ")
    assert outcome.rejected.seen > 50_000 >= outcome.rejected.seen - outcome.rejected.refused


# --- malformed input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"", "connection closed before the binary's key"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "truncated binary's key (21 of 32 bytes)"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "truncated binary's key (27 of 32 bytes)"),
    ],
)
async def test_garbage_instead_of_a_key_is_rejected_with_a_precise_reason(
    monitor: Monitor, garbage: bytes, reason: str
) -> None:
    outcome, _ = await monitor.exchange(bytes_client(lambda _c: garbage))
    assert outcome.reason == reason


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "frame too large (1195725856 bytes)"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "frame too large (1397966893 bytes)"),
        (b"\x00\x00\x00\x05hello", "frame too small (5 bytes)"),
        (b"\x00\x00\x00\x1c" + bytes(28), "authentication failed (frame 0)"),
        (b"\x00\x00\x00\x1d" + bytes(29), "authentication failed (frame 0)"),
        (b"\x00\x00", "truncated frame header (2 of 4 bytes)"),
        (b"", "connection closed before hello"),
        ((MAX_HELLO_BODY + 1).to_bytes(4, "big"), f"frame too large for a hello ({MAX_HELLO_BODY + 1} bytes)"),
    ],
)
async def test_garbage_frames_are_rejected_with_a_precise_reason(monitor: Monitor, garbage: bytes, reason: str) -> None:
    key = X25519PrivateKey.generate().public_key().public_bytes_raw()
    outcome, _ = await monitor.exchange(bytes_client(lambda _c: key + garbage))
    assert outcome.reason == reason


async def test_truncated_frame_is_rejected(monitor: Monitor, secret: StepSecret) -> None:
    lengths = []

    def truncated(session: ClientSession) -> bytes:
        frame = hello_frame(session, secret)
        lengths.append(len(frame) - 4)
        return frame[:-10]

    outcome, _ = await monitor.exchange(raw_client(secret, truncated))
    assert outcome.reason == f"truncated frame ({lengths[0] - 10} of {lengths[0]} bytes)"


async def test_connection_closed_after_logs_is_rejected_but_logs_were_streamed(
    monitor: Monitor, secret: StepSecret
) -> None:
    def no_result(session: ClientSession) -> bytes:
        return hello_frame(session, secret) + session.frame({"t": "log", "msg": "half way"})

    outcome, _ = await monitor.exchange(raw_client(secret, no_result))
    assert outcome.reason == "connection closed before result"
    assert outcome.logs_seen == [{"t": "log", "msg": "half way"}]


async def test_oversized_length_prefix_is_rejected_after_the_header_alone(monitor: Monitor) -> None:
    # Only the key and a 4-byte header are sent and the connection stays open: a server
    # waiting for (or allocating) the 1 MiB body would end with "hello timeout" instead.
    key = X25519PrivateKey.generate().public_key().public_bytes_raw()
    header = (MAX_FRAME + 29).to_bytes(4, "big")
    with trio.fail_after(3):
        outcome, sent_back = await monitor.exchange(
            bytes_client(lambda _c: key + header, close=False), hello_timeout=30
        )
    assert outcome.reason == f"frame too large ({MAX_FRAME + 29} bytes)"
    assert sent_back == b""


async def test_largest_legal_frame_is_read_and_accepted(monitor: Monitor, secret: StepSecret) -> None:
    def biggest(session: ClientSession) -> bytes:
        # A plaintext of exactly MAX_FRAME bytes after the hello: a log just under the
        # log-bytes limit, then a result.
        log = b"\x00" + b'{"t":"log","msg":"' + b"a" * (MAX_FRAME - 21) + b'"}'
        assert len(log) == MAX_FRAME
        return hello_frame(session, secret) + session.frame_plaintext(log) + result_frame(session, secret)

    outcome, _ = await monitor.exchange(raw_client(secret, biggest))
    assert outcome.callback is not None, outcome.rejected
    assert outcome.callback.log_bytes == MAX_FRAME - 1


@pytest.mark.parametrize(
    ("plaintext", "reason"),
    [
        (b"", "empty frame (frame 0)"),
        (b"\x07{}", "unknown compression flag 7 (frame 0)"),
        (b"\x01not zlib", "bad zlib data (frame 0)"),
        (b"\x01" + zlib.compress(b'{"t":"hello"}')[:-3], "truncated zlib data (frame 0)"),
        (b"\x01" + zlib.compress(b'{"t":"hello"}') + b"x", "data after the zlib stream (frame 0)"),
        (b"\x00\xff\xfe", "invalid UTF-8 (frame 0)"),
        (b"\x00{not json", "invalid JSON (frame 0)"),
        (b'\x00{"t": NaN}', "invalid JSON (frame 0)"),
        (b"\x00" + b"[" * 8000 + b"]" * 8000, "invalid JSON (frame 0)"),
        (b"\x00[1, 2]", "not a JSON object (frame 0)"),
        (b'\x00{"token": "x"}', "message without a type (frame 0)"),
        (b'\x00{"t": "hello"}', "hello for another run None"),
        (b'\x00{"t": "hello", "run": "run-1", "step": "step-a"}', "hello without a proof"),
    ],
)
async def test_authentic_but_malformed_plaintext_is_rejected(
    monitor: Monitor, secret: StepSecret, plaintext: bytes, reason: str
) -> None:
    outcome, _ = await monitor.exchange(raw_client(secret, lambda s: s.frame_plaintext(plaintext)))
    assert outcome.reason == reason


async def test_silence_ends_in_hello_timeout(monitor: Monitor) -> None:
    async def silent(stream: trio.SocketStream) -> bytes:
        await read_server_hello(stream)
        return await drain(stream)  # sends nothing, waits for the server to hang up

    with trio.fail_after(5):
        outcome, _ = await monitor.exchange(silent, hello_timeout=0.2)
    assert outcome.reason == "hello timeout"


async def test_slow_hello_ends_in_hello_timeout(monitor: Monitor, secret: StepSecret) -> None:
    async def dribbling(stream: trio.SocketStream) -> bytes:
        session = await open_session(stream, secret.monitor_key)
        frame = hello_frame(session, secret)
        try:
            for i in range(len(frame)):
                await stream.send_all(frame[i : i + 1])
                await trio.sleep(0.05)
        except trio.BrokenResourceError:
            pass
        return b""

    with trio.fail_after(5):
        outcome, _ = await monitor.exchange(dribbling, hello_timeout=0.3)
    assert outcome.reason == "hello timeout"


async def test_client_rejects_a_server_with_bad_magic(secret: StepSecret) -> None:
    client, server = trio.testing.memory_stream_pair()
    await server.send_all(b"SSH-2.0-OpenSSH_9.2\r\n")
    with trio.fail_after(5), pytest.raises(CallbackRejected) as info:
        await send_callback(
            client,
            monitor_key=secret.monitor_key,
            token=secret.token,
            run_id=RUN,
            step_id=STEP,
            config_sha256="",
            exe_sha256=EXE,
            logs=[],
            result=RESULT,
        )
    assert info.value.reason == "bad magic"


async def test_a_version_1_server_hello_is_refused_by_the_client(secret: StepSecret) -> None:
    client, server = trio.testing.memory_stream_pair()
    await server.send_all(b"CRN1" + bytes(16))
    with trio.fail_after(5), pytest.raises(CallbackRejected, match="bad magic"):
        await open_session(client, secret.monitor_key)


# --- secrets and config ---------------------------------------------------------------


def test_step_secret_repr_hides_token_and_key() -> None:
    secret = StepSecret.new()
    assert len(secret.monitor_key) == 32
    assert len(secret.token) >= 43
    private = secret.private_key.private_bytes_raw()
    for text in (repr(secret), str(secret), f"{secret}", repr([secret])):
        assert secret.token not in text
        assert private.hex() not in text
        assert repr(private) not in text
        assert secret.token_id in text
    assert len(secret.token_id) == 16
    assert StepSecret.new().token_id != secret.token_id


def test_step_config_is_one_json_line_with_the_protocol_fields() -> None:
    secret = StepSecret.new()
    line = step_config(
        monitor="127.0.0.1:40123",
        secret=secret,
        run_id=RUN,
        step_id=STEP,
        module="fill_disk",
        params={"path": "/tmp/a\nb", "size_mb": 64},
        timeout=30,
    )
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    config = json.loads(line)
    assert config == {
        "v": 2,
        "monitor": "127.0.0.1:40123",
        "monitor_key": base64.b64encode(secret.monitor_key).decode(),
        "token": secret.token,
        "run": RUN,
        "step": STEP,
        "module": "fill_disk",
        "params": {"path": "/tmp/a\nb", "size_mb": 64},
        "timeout_ms": 30000,
        "compress": True,
    }
    assert secret.private_key.private_bytes_raw() not in line
    assert base64.b64encode(secret.private_key.private_bytes_raw()) not in line


def test_one_time_token_accepts_one_proof_and_ignores_wrong_guesses() -> None:
    transcript = os.urandom(32)
    check = OneTimeToken("secret-token")
    assert check(transcript, "wrong") is False
    assert check(transcript, "\ud800") is False  # a lone surrogate, as JSON can carry
    assert check(transcript, hello_proof("other-token", transcript)) is False
    assert check(transcript, hello_proof("secret-token", transcript).upper()) is False  # exactly as specified
    assert check(transcript, hello_proof("secret-token", transcript)) is True
    with pytest.raises(TokenReused, match="token already used"):
        check(transcript, hello_proof("secret-token", transcript))
    assert check(transcript, "wrong") is False


# --- fuzzing --------------------------------------------------------------------------


async def _feed(data: bytes, *, after_hello: bool = False) -> None:
    """Run receive_callback on a memory stream fed `data`; only CallbackRejected may escape."""
    secret = StepSecret.new()
    client, server = trio.testing.memory_stream_pair()

    async def serve() -> None:
        try:
            await receive_callback(
                server,
                private_key=secret.private_key,
                check_proof=OneTimeToken(secret.token),
                run_id=RUN,
                step_id=STEP,
                config_sha256=config_sha256(make_config(secret)),
                exe_sha256=EXE,
                hello_timeout=5,
            )
        except CallbackRejected:
            pass
        finally:
            await server.aclose()

    async def attack() -> None:
        # Random bytes may stop making sense to the server at any point: it then closes.
        with trio.move_on_after(5):
            try:
                if after_hello:
                    session = await open_session(client, secret.monitor_key)
                    start = hello_frame(session, secret)
                else:
                    await read_server_hello(client)
                    start = b""
                await client.send_all(start + data)
                await client.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError, CallbackRejected):
                pass

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            nursery.start_soon(attack)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
async def test_random_bytes_only_ever_raise_callback_rejected(data: bytes) -> None:
    await _feed(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
async def test_random_bytes_after_a_valid_hello_only_ever_raise_callback_rejected(
    data: bytes,
) -> None:
    await _feed(data, after_hello=True)


# --- helpers --------------------------------------------------------------------------


class Tap:
    """Wraps a client so that every byte it sends and receives is recorded."""

    def __init__(self) -> None:
        self.sent = bytearray()
        self.received = bytearray()

    def wrap(self, client: Client) -> Client:
        tap = self

        class Recorder(trio.abc.Stream):
            def __init__(self, inner: trio.SocketStream) -> None:
                self.inner = inner

            async def send_all(self, data: bytes | bytearray | memoryview) -> None:
                tap.sent.extend(data)
                await self.inner.send_all(data)

            async def wait_send_all_might_not_block(self) -> None:
                await self.inner.wait_send_all_might_not_block()

            async def send_eof(self) -> None:
                await self.inner.send_eof()

            async def receive_some(self, max_bytes: int | None = None) -> bytes:
                data = await self.inner.receive_some(max_bytes)
                tap.received.extend(data)
                return data

            async def aclose(self) -> None:
                await self.inner.aclose()

        async def recording(stream: trio.SocketStream) -> Any:
            return await client(Recorder(stream))  # type: ignore[arg-type]

        return recording


def test_the_protocol_docs_vector_holds() -> None:
    """docs/protocol.md section 8; chaos_go/kit/internal/wire checks the same numbers."""
    monitor = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    binary = X25519PrivateKey.from_private_bytes(bytes(range(33, 65)))
    m, b = monitor.public_key().public_bytes_raw(), binary.public_key().public_bytes_raw()
    challenge = bytes(range(0xA0, 0xB0))
    shared = monitor.exchange(binary.public_key())
    c2m, m2c = session_keys(shared, challenge, m, b)
    transcript = transcript_sha256(challenge, m, b, "run-1", "step-a")
    assert m.hex() == "07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c"
    assert b.hex() == "5869aff450549732cbaaed5e5df9b30a6da31cb0e5742bad5ad4a1a768f1a67b"
    assert shared.hex() == "a84dc7c3c8f058b1b2dc4cd1e9b5dc0a7987f88b6a9564cde3391fc421159e77"
    assert c2m.hex() == "56a54179d924d5682a203ee759e74ac57f1edd42904ffd4c4f9891f39fd96bbf"
    assert m2c.hex() == "d876c07cbb8afa6772eb3342c0c1886031adb4111cbb675f3831822de5a67176"
    assert transcript.hex() == "a0c3370c19a8e8ff4f8117a281716958b2244b25c06c79ecf683cb67e507c987"
    assert hello_proof("tok-123", transcript) == "8c43437c2a482a486984949bda8ec80a790d31af0874602a8fac85e1ca6dd6a2"
