"""The real Go kit against the Python monitor: build a module with Builder, run the binary
as a local process fed its step config on stdin, and collect its callback on 127.0.0.1.

This is the cross-language check of docs/protocol.md: the two implementations meet only
here.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from chaosrun._resources import data_dir
from chaosrun.build import Binary, Builder
from chaosrun.run.wire import (
    C2M,
    Callback,
    CallbackRejected,
    OneTimeToken,
    StepSecret,
    receive_callback,
    step_config,
)

SOURCE = data_dir("chaos_go")
RUN = "run-go"
STEP = "step-1"


def _need(module: str) -> None:
    # The kit's READY marker only coordinated its first writing; a checkout has kit.go.
    if not (SOURCE / "kit" / "kit.go").is_file():
        pytest.skip("the Go kit is not written yet")
    if not (SOURCE / "modules" / module / "main.go").is_file():
        pytest.skip(f"module {module} does not exist yet")


@pytest.fixture(scope="module")
def builder(tmp_path_factory: pytest.TempPathFactory) -> Builder:
    return Builder(cache_dir=tmp_path_factory.mktemp("build-cache"))


def built(builder: Builder, module: str) -> Binary:
    _need(module)
    return builder.build(module)


class Tap(trio.abc.Stream):
    """Records both directions of a stream, to look at the frames the kit really sent."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner
        self.sent = bytearray()
        self.received = bytearray()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += data
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        self.received += data
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()

    def client_plaintexts(self, key: bytes) -> list[bytes]:
        """Decrypt every frame the binary sent (the wire's own code is not used here)."""
        challenge = bytes(self.sent[4:20])
        data, out, seq = bytes(self.received), [], 0
        while data:
            length = int.from_bytes(data[:4], "big")
            body, data = data[4 : 4 + length], data[4 + length :]
            aad = C2M + challenge + seq.to_bytes(4, "big")
            out.append(AESGCM(key).decrypt(body[:12], body[12:], aad))
            seq += 1
        return out


@dataclass
class Run:
    returncode: int
    stdout: bytes
    stderr: bytes
    callback: Callback | None
    rejected: CallbackRejected | None
    logs_seen: list[dict[str, Any]] = field(default_factory=list)
    binary_gone_at_connect: bool | None = None
    plaintexts: list[bytes] = field(default_factory=list)


async def run_module(
    binary: Binary,
    tmp_path: Path,
    params: dict[str, Any],
    *,
    config_secret: StepSecret | None = None,
    compress: bool = True,
) -> Run:
    """Start a copy of `binary` with its config on stdin; serve one callback connection."""
    secret = StepSecret.new()
    exe = tmp_path / "x9f3k"  # innocuous random-looking name, as on a testenv
    shutil.copy2(binary.path, exe)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    host, port = listener.socket.getsockname()[:2]
    config = step_config(
        monitor=f"{host}:{port}",
        secret=config_secret or secret,
        run_id=RUN,
        step_id=STEP,
        module=binary.module,
        params=params,
        timeout=20,
        compress=compress,
    )
    logs_seen: list[dict[str, Any]] = []
    served: dict[str, Any] = {}

    async def on_log(message: dict[str, Any]) -> None:
        logs_seen.append(message)

    async def serve() -> None:
        stream = await listener.accept()
        served["gone"] = not exe.exists()
        async with stream:
            tap = served["tap"] = Tap(stream)
            try:
                served["callback"] = await receive_callback(
                    tap,
                    key=secret.key,
                    check_token=OneTimeToken(secret.token),
                    run_id=RUN,
                    step_id=STEP,
                    on_log=on_log,
                )
            except CallbackRejected as exc:
                served["rejected"] = exc

    with trio.fail_after(30):
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            proc = await trio.run_process(
                [str(exe)],
                stdin=config,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env={"PATH": "/usr/bin:/bin"},  # nothing of ours in the environment
            )
            # The binary has exited: it either called back already or never will.
            with trio.move_on_after(2):
                while not ({"callback", "rejected"} & served.keys()):
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    return Run(
        returncode=proc.returncode,
        stdout=proc.stdout,
        stderr=proc.stderr,
        callback=served.get("callback"),
        rejected=served.get("rejected"),
        logs_seen=logs_seen,
        binary_gone_at_connect=served.get("gone"),
        plaintexts=served["tap"].client_plaintexts(secret.key) if "callback" in served else [],
    )


@pytest.mark.parametrize("compress", [True, False])
async def test_probe_result_arrives_and_the_binary_exits_0(builder: Builder, tmp_path: Path, compress: bool) -> None:
    binary = await trio.to_thread.run_sync(built, builder, "file_exists")
    target = tmp_path / "present.txt"
    target.write_bytes(b"12345")

    run = await run_module(binary, tmp_path, {"path": str(target)}, compress=compress)

    assert run.rejected is None, run.rejected
    assert run.returncode == 0, run.stderr
    assert run.callback is not None
    result = run.callback.result
    assert result["t"] == "result"
    assert result["step"] == STEP
    assert result["ok"] is True
    assert result["error"] is None
    assert result["result"]["exists"] is True
    assert result["result"]["size"] == 5
    assert result["result"]["type"] == "file"
    assert result["changes"] == []
    # hello + result, each flagged as the config asked.
    assert [p[0] for p in run.plaintexts] == [1 if compress else 0] * 2


async def test_chaos_logs_stream_before_the_result(builder: Builder, tmp_path: Path) -> None:
    binary = await trio.to_thread.run_sync(built, builder, "fill_disk")
    # Non-ASCII, a quote, a backslash and U+2028 in the name: the kit's own JSON encoder
    # must produce what Python's json reads back unchanged.
    target = tmp_path / 'fïller-"q"-\\-\u2028.bin'

    run = await run_module(binary, tmp_path, {"path": str(target), "size_mb": 1})

    assert run.returncode == 0, run.stderr
    assert run.callback is not None
    assert run.callback.result["ok"] is True
    assert run.callback.result["result"]["written_mb"] == 1
    assert run.callback.result["changes"][0]["action"] == "create_file"
    assert target.stat().st_size == 1 << 20
    assert run.callback.logs, "fill_disk logs what it wrote"
    assert run.logs_seen == run.callback.logs
    log = run.callback.logs[-1]
    assert log["t"] == "log"
    assert log["level"] in ("info", "warn", "error")
    assert log["msg"] == f"{target}: wrote 1 MiB"
    assert run.callback.result["changes"][0]["path"] == str(target)
    assert isinstance(log["ts"], float)
    assert isinstance(log["fields"], dict)


async def test_binary_deletes_itself_at_start(builder: Builder, tmp_path: Path) -> None:
    binary = await trio.to_thread.run_sync(built, builder, "file_exists")

    run = await run_module(binary, tmp_path, {"path": "/nonexistent-chaosrun-path"})

    assert run.returncode == 0, run.stderr
    assert run.binary_gone_at_connect is True
    assert not (tmp_path / "x9f3k").exists()
    assert binary.path.is_file(), "the cached copy must survive"
    assert run.callback is not None and run.callback.result["result"]["exists"] is False


async def test_wrong_key_is_rejected_and_the_binary_exits_3(builder: Builder, tmp_path: Path) -> None:
    binary = await trio.to_thread.run_sync(built, builder, "file_exists")
    impostor = StepSecret.new()  # its key is not the listener's

    run = await run_module(binary, tmp_path, {"path": str(tmp_path)}, config_secret=impostor)

    assert run.rejected is not None
    assert run.rejected.reason == "authentication failed (frame 0)"
    assert run.returncode == 3, run.stderr
    assert b"callback" in run.stderr
    # The key never leaks through the binary's complaints.
    assert impostor.token.encode() not in run.stderr + run.stdout


@pytest.mark.parametrize(
    "params",
    [{"path": "relative/path"}, {}, {"path": "/tmp", "surprise": 1}, {"path": 42}],
    ids=["pattern", "missing", "unknown", "type"],
)
async def test_bad_params_give_exit_2_and_a_failed_result(
    builder: Builder, tmp_path: Path, params: dict[str, Any]
) -> None:
    binary = await trio.to_thread.run_sync(built, builder, "file_exists")

    run = await run_module(binary, tmp_path, params)

    assert run.returncode == 2, run.stderr
    assert run.callback is not None
    assert run.callback.result["ok"] is False
    assert "param" in run.callback.result["error"]
    assert run.callback.result["step"] == STEP


async def test_garbage_config_gives_exit_2_without_calling_back(builder: Builder, tmp_path: Path) -> None:
    binary = await trio.to_thread.run_sync(built, builder, "file_exists")
    exe = tmp_path / "bin"
    shutil.copy2(binary.path, exe)
    with trio.fail_after(10):
        proc = await trio.run_process([str(exe)], stdin=b"{not json\n", capture_stderr=True, check=False, env={})
    assert proc.returncode == 2
    assert proc.stderr
