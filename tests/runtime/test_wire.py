"""The monitor's side of the callback protocol, against the Python client and hand-made
attacks, over real loopback TCP."""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaosrun.run.wire import (
    C2M,
    CHALLENGE_SIZE,
    M2C,
    MAGIC,
    MAX_FRAME,
    Callback,
    CallbackRejected,
    OneTimeToken,
    StepSecret,
    open_frame,
    receive_callback,
    seal,
    seal_plaintext,
    step_config,
)
from chaosrun.testing import send_callback

RUN = "run-1"
STEP = "step-a"
RESULT: dict[str, Any] = {"ok": True, "error": None, "result": {"exists": True}, "changes": []}


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

    def __init__(self, secret: StepSecret, check_token: Callable[[str], bool] | None = None):
        self.secret = secret
        self.check_token = check_token or OneTimeToken(secret.token)

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
                        key=self.secret.key,
                        check_token=self.check_token,
                        run_id=RUN,
                        step_id=STEP,
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
    key: bytes | None = None,
    token: str | None = None,
    step_id: str = STEP,
    run_id: str = RUN,
) -> Client:
    async def client(stream: trio.SocketStream) -> dict[str, Any]:
        return await send_callback(
            stream,
            key=key or secret.key,
            token=token or secret.token,
            run_id=run_id,
            step_id=step_id,
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


def raw_client(build: Callable[[bytes], bytes], *, close: bool = True) -> Client:
    """A client that reads the server hello, sends build(challenge) and waits for the end."""

    async def client(stream: trio.SocketStream) -> bytes:
        challenge = await read_server_hello(stream)
        await stream.send_all(build(challenge))
        if close:
            await stream.send_eof()
        return await drain(stream)

    return client


def hello_frame(secret: StepSecret, challenge: bytes, **overrides: Any) -> bytes:
    message = {"t": "hello", "token": secret.token, "run": RUN, "step": STEP, **overrides}
    return seal(secret.key, challenge, C2M, 0, message, compress=True)


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
    assert outcome.callback.result == {"t": "result", "step": STEP, **RESULT}
    assert outcome.callback.logs == [{"t": "log", **log} for log in logs]
    assert outcome.logs_seen == outcome.callback.logs
    assert outcome.callback.dropped_logs == 0


async def test_compression_flag_is_visible_in_the_plaintext(secret: StepSecret) -> None:
    challenge = bytes(CHALLENGE_SIZE)
    message = {"t": "log", "msg": "x" * 1000}
    packed = seal(secret.key, challenge, C2M, 3, message, compress=True)
    plain = seal(secret.key, challenge, C2M, 3, message, compress=False)
    assert len(packed) < len(plain)
    assert int.from_bytes(plain[:4], "big") == len(plain) - 4
    assert open_frame(secret.key, challenge, C2M, 3, packed[4:]) == message
    assert open_frame(secret.key, challenge, C2M, 3, plain[4:]) == message


async def test_logs_beyond_max_logs_are_streamed_but_not_kept(monitor: Monitor, secret: StepSecret) -> None:
    logs = [{"ts": 0.0, "level": "info", "msg": str(i), "fields": {}} for i in range(7)]
    outcome, _ = await monitor.exchange(honest(secret, logs=logs), max_logs=3)
    assert outcome.callback is not None
    assert [log["msg"] for log in outcome.callback.logs] == ["0", "1", "2"]
    assert outcome.callback.dropped_logs == 4
    assert len(outcome.logs_seen) == 7


# --- authentication -------------------------------------------------------------------


async def test_flipped_bit_in_the_hello_fails_authentication_of_frame_0(monitor: Monitor, secret: StepSecret) -> None:
    def tampered(challenge: bytes) -> bytes:
        frame = bytearray(hello_frame(secret, challenge))
        frame[20] ^= 0x01  # inside the ciphertext
        return bytes(frame)

    outcome, _ = await monitor.exchange(raw_client(tampered))
    assert outcome.reason == "authentication failed (frame 0)"


async def test_flipped_bit_in_a_log_frame_fails_authentication_of_frame_1(monitor: Monitor, secret: StepSecret) -> None:
    def tampered(challenge: bytes) -> bytes:
        log = bytearray(seal(secret.key, challenge, C2M, 1, {"t": "log", "msg": "hi"}, True))
        log[-1] ^= 0x80  # inside the tag
        return hello_frame(secret, challenge) + bytes(log)

    outcome, _ = await monitor.exchange(raw_client(tampered))
    assert outcome.reason == "authentication failed (frame 1)"


async def test_wrong_key_fails_authentication_and_the_client_gets_no_ack(monitor: Monitor, secret: StepSecret) -> None:
    other = StepSecret.new()
    outcome, client = await monitor.exchange(honest(secret, key=other.key))
    assert outcome.reason == "authentication failed (frame 0)"
    assert isinstance(client, CallbackRejected)
    assert client.reason in ("connection closed before ack", "connection broken (BrokenResourceError)")


async def test_reordered_frames_fail_authentication(monitor: Monitor, secret: StepSecret) -> None:
    def swapped(challenge: bytes) -> bytes:
        log1 = seal(secret.key, challenge, C2M, 1, {"t": "log", "msg": "1"}, True)
        log2 = seal(secret.key, challenge, C2M, 2, {"t": "log", "msg": "2"}, True)
        return hello_frame(secret, challenge) + log2 + log1

    outcome, _ = await monitor.exchange(raw_client(swapped))
    assert outcome.reason == "authentication failed (frame 1)"


async def test_monitor_frame_reflected_back_fails_authentication(monitor: Monitor, secret: StepSecret) -> None:
    def reflected(challenge: bytes) -> bytes:
        return seal(secret.key, challenge, M2C, 0, {"t": "hello", "token": secret.token}, True)

    outcome, _ = await monitor.exchange(raw_client(reflected))
    assert outcome.reason == "authentication failed (frame 0)"


async def test_wrong_token_is_rejected(monitor: Monitor, secret: StepSecret) -> None:
    outcome, _ = await monitor.exchange(honest(secret, token="not-the-token"))
    assert outcome.reason == "wrong token"


async def test_wrong_token_does_not_burn_the_right_one(monitor: Monitor, secret: StepSecret) -> None:
    outcome, _ = await monitor.exchange(honest(secret, token="guess"))
    assert outcome.reason == "wrong token"
    outcome, ack = await monitor.exchange(honest(secret))
    assert outcome.callback is not None
    assert ack == {"t": "ack"}


async def test_reused_token_is_rejected(monitor: Monitor, secret: StepSecret) -> None:
    first, _ = await monitor.exchange(honest(secret))
    assert first.callback is not None
    second, _ = await monitor.exchange(honest(secret))
    assert second.reason == "token already used"


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
    def log_first(challenge: bytes) -> bytes:
        return seal(secret.key, challenge, C2M, 0, {"t": "log", "msg": "early"}, True)

    outcome, _ = await monitor.exchange(raw_client(log_first))
    assert outcome.reason == "expected hello, got 'log' (frame 0)"


async def test_second_hello_is_rejected(monitor: Monitor, secret: StepSecret) -> None:
    def two_hellos(challenge: bytes) -> bytes:
        again = {"t": "hello", "token": secret.token, "run": RUN, "step": STEP}
        return hello_frame(secret, challenge) + seal(secret.key, challenge, C2M, 1, again, True)

    outcome, _ = await monitor.exchange(raw_client(two_hellos))
    assert outcome.reason == "unexpected message 'hello' (frame 1)"


async def test_replayed_client_stream_fails_on_the_new_challenge(secret: StepSecret) -> None:
    recorded = bytearray()

    class Recorder(trio.abc.Stream):
        def __init__(self, inner: trio.SocketStream) -> None:
            self.inner = inner

        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            recorded.extend(data)
            await self.inner.send_all(data)

        async def wait_send_all_might_not_block(self) -> None:
            await self.inner.wait_send_all_might_not_block()

        async def send_eof(self) -> None:
            await self.inner.send_eof()

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            return await self.inner.receive_some(max_bytes)

        async def aclose(self) -> None:
            await self.inner.aclose()

    async def recording(stream: trio.SocketStream) -> dict[str, Any]:
        client = honest(secret, logs=[{"msg": "x"}])
        ack: dict[str, Any] = await client(Recorder(stream))  # type: ignore[arg-type]
        return ack

    original, ack = await Monitor(secret).exchange(recording)
    assert original.callback is not None and ack == {"t": "ack"}

    # The attacker replays the captured bytes to a fresh listener that would even accept
    # the token again: the new challenge alone defeats the replay.
    replay, _ = await Monitor(secret, check_token=lambda _t: True).exchange(
        raw_client(lambda _challenge: bytes(recorded))
    )
    assert replay.reason == "authentication failed (frame 0)"


# --- malformed input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "frame too large (1195725856 bytes)"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "frame too large (1397966893 bytes)"),
        (b"\x00\x00\x00\x05hello", "frame too small (5 bytes)"),
        (b"\x00\x00\x00\x1c" + bytes(28), "authentication failed (frame 0)"),
        (b"\x00\x00", "truncated frame header (2 of 4 bytes)"),
        (b"", "connection closed before hello"),
    ],
)
async def test_garbage_is_rejected_with_a_precise_reason(monitor: Monitor, garbage: bytes, reason: str) -> None:
    outcome, _ = await monitor.exchange(raw_client(lambda _c: garbage))
    assert outcome.reason == reason


async def test_truncated_frame_is_rejected(monitor: Monitor, secret: StepSecret) -> None:
    def truncated(challenge: bytes) -> bytes:
        frame = hello_frame(secret, challenge)
        return frame[:-10]

    outcome, _ = await monitor.exchange(raw_client(truncated))
    body = int.from_bytes(hello_frame(secret, bytes(16))[:4], "big")
    assert outcome.reason == f"truncated frame ({body - 10} of {body} bytes)"


async def test_connection_closed_after_logs_is_rejected_but_logs_were_streamed(
    monitor: Monitor, secret: StepSecret
) -> None:
    def no_result(challenge: bytes) -> bytes:
        log = seal(secret.key, challenge, C2M, 1, {"t": "log", "msg": "half way"}, True)
        return hello_frame(secret, challenge) + log

    outcome, _ = await monitor.exchange(raw_client(no_result))
    assert outcome.reason == "connection closed before result"
    assert outcome.logs_seen == [{"t": "log", "msg": "half way"}]


async def test_oversized_length_prefix_is_rejected_after_the_header_alone(
    monitor: Monitor,
) -> None:
    # Only the 4-byte header is sent and the connection stays open: a server waiting for
    # (or allocating) the 1 MiB body would end with "hello timeout" instead.
    header = (MAX_FRAME + 29).to_bytes(4, "big")
    with trio.fail_after(3):
        outcome, sent_back = await monitor.exchange(raw_client(lambda _c: header, close=False), hello_timeout=30)
    assert outcome.reason == f"frame too large ({MAX_FRAME + 29} bytes)"
    assert sent_back == b""


async def test_largest_legal_length_prefix_is_read(monitor: Monitor, secret: StepSecret) -> None:
    def biggest(challenge: bytes) -> bytes:
        # A plaintext of exactly MAX_FRAME bytes: accepted by the length check, then
        # authenticated (and found not to be a hello).
        log = b"\x00" + b'{"t":"log","msg":"' + b"a" * (MAX_FRAME - 21) + b'"}'
        assert len(log) == MAX_FRAME
        return seal_plaintext(secret.key, challenge, C2M, 0, log)

    outcome, _ = await monitor.exchange(raw_client(biggest))
    assert outcome.reason == "expected hello, got 'log' (frame 0)"


async def test_zlib_bomb_is_capped(monitor: Monitor, secret: StepSecret) -> None:
    bomb = zlib.compress(b'{"t":"hello","token":"' + b"A" * (64 * MAX_FRAME), 9)
    assert len(bomb) < MAX_FRAME // 4  # fits in a frame easily

    def bombing(challenge: bytes) -> bytes:
        return seal_plaintext(secret.key, challenge, C2M, 0, b"\x01" + bomb)

    outcome, _ = await monitor.exchange(raw_client(bombing))
    assert outcome.reason == "decompressed frame too large (frame 0)"


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
        (b"\x00" + b"[" * 100_000 + b"]" * 100_000, "invalid JSON (frame 0)"),
        (b"\x00[1, 2]", "not a JSON object (frame 0)"),
        (b'\x00{"token": "x"}', "message without a type (frame 0)"),
        (b'\x00{"t": "hello"}', "hello without a token"),
    ],
)
async def test_authentic_but_malformed_plaintext_is_rejected(
    monitor: Monitor, secret: StepSecret, plaintext: bytes, reason: str
) -> None:
    def sending(challenge: bytes) -> bytes:
        return seal_plaintext(secret.key, challenge, C2M, 0, plaintext)

    outcome, _ = await monitor.exchange(raw_client(sending))
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
        frame = hello_frame(secret, await read_server_hello(stream))
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
            key=secret.key,
            token=secret.token,
            run_id=RUN,
            step_id=STEP,
            logs=[],
            result=RESULT,
        )
    assert info.value.reason == "bad magic"


# --- secrets and config ---------------------------------------------------------------


def test_step_secret_repr_hides_token_and_key() -> None:
    secret = StepSecret.new()
    assert len(secret.key) == 32
    assert len(secret.token) >= 43
    for text in (repr(secret), str(secret), f"{secret}", repr([secret])):
        assert secret.token not in text
        assert secret.key.hex() not in text
        assert repr(secret.key) not in text
        assert secret.token_id in text
    assert len(secret.token_id) == 16
    assert StepSecret.new().token_id != secret.token_id


def test_step_config_is_one_json_line_with_the_protocol_fields() -> None:
    import base64
    import json

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
        "v": 1,
        "monitor": "127.0.0.1:40123",
        "token": secret.token,
        "key": base64.b64encode(secret.key).decode(),
        "run": RUN,
        "step": STEP,
        "module": "fill_disk",
        "params": {"path": "/tmp/a\nb", "size_mb": 64},
        "timeout_ms": 30000,
        "compress": True,
    }


def test_one_time_token_accepts_once_and_ignores_wrong_guesses() -> None:
    check = OneTimeToken("secret-token")
    assert check("wrong") is False
    assert check("\ud800") is False  # a lone surrogate, as JSON can carry
    assert check("secret-token") is True
    with pytest.raises(CallbackRejected, match="token already used"):
        check("secret-token")
    assert check("wrong") is False


# --- fuzzing --------------------------------------------------------------------------


async def _feed(data: bytes, *, after_hello: bool = False) -> None:
    """Run receive_callback on a memory stream fed `data`; only CallbackRejected may escape."""
    secret = StepSecret.new()
    client, server = trio.testing.memory_stream_pair()

    async def serve() -> None:
        try:
            await receive_callback(
                server,
                key=secret.key,
                check_token=OneTimeToken(secret.token),
                run_id=RUN,
                step_id=STEP,
                hello_timeout=5,
            )
        except CallbackRejected:
            pass
        finally:
            await server.aclose()

    async def attack() -> None:
        challenge = await read_server_hello(client)
        start = hello_frame(secret, challenge) if after_hello else b""
        # Random bytes may stop making sense to the server at any point: it then closes.
        with trio.move_on_after(5):
            try:
                await client.send_all(start + data)
                await client.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
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
