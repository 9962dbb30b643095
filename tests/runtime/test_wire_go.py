"""The real Go kit against the Python monitor: build a module with Builder, run the binary
as a local process fed its step config on stdin, and collect its callback on 127.0.0.1.

This is the cross-language check of docs/protocol.md (version 2): the two implementations
meet only here. The second half runs whole steps through the runtime (the listener, the
deploy code, the audit log) on the local connector, with a target that behaves as a root
candidate would: it reads the step's config off the binary's stdin pipe, rewrites it, swaps
the binary, claims the token first or floods the monitor with what it stole.
"""

from __future__ import annotations

import base64
import hashlib
import json
import platform
import shutil
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chaosrun._resources import data_dir
from chaosrun.build import Binary, Builder, goarch_for
from chaosrun.lint import check_scenario_text
from chaosrun.plan import build_plan
from chaosrun.run.audit import verify_file
from chaosrun.run.connection import Connection, Process
from chaosrun.run.listener import LOG_AUDIT_BUDGET, TOKEN_STOLEN
from chaosrun.run.local import LocalConnector
from chaosrun.run.model import RunOptions, RunReport, StepStatus
from chaosrun.run.runner import run_plan
from chaosrun.run.wire import (
    BINARY_SWAPPED,
    C2M,
    CONFIG_ALTERED,
    Callback,
    CallbackRejected,
    OneTimeToken,
    StepSecret,
    config_sha256,
    receive_callback,
    step_config,
)
from chaosrun.scenario import TargetSpec
from chaosrun.testing.callback import ClientSession, open_session

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


def derive(shared: bytes, challenge: bytes, monitor_key: bytes, binary_key: bytes) -> tuple[bytes, bytes]:
    """The session keys, written out from docs/protocol.md (not the wire module's code)."""
    okm = HKDF(
        algorithm=hashes.SHA256(), length=64, salt=challenge, info=b"chaosrun callback v2" + monitor_key + binary_key
    ).derive(shared)
    return okm[:32], okm[32:]


class Tap(trio.abc.Stream):
    """Records both directions of a stream, to look at the bytes the kit really sent."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner
        self.sent = bytearray()  # monitor -> binary
        self.received = bytearray()  # binary -> monitor

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

    @property
    def challenge(self) -> bytes:
        return bytes(self.sent[4:20])

    @property
    def binary_key(self) -> bytes:
        return bytes(self.received[:32])

    def frames(self) -> list[bytes]:
        data, out = bytes(self.received[32:]), []
        while data:
            length = int.from_bytes(data[:4], "big")
            out.append(data[4 : 4 + length])
            data = data[4 + length :]
        return out

    def client_plaintexts(self, monitor: X25519PrivateKey) -> list[bytes]:
        """Decrypt every frame the binary sent, as the monitor (who has its private key)."""
        monitor_key = monitor.public_key().public_bytes_raw()
        shared = monitor.exchange(X25519PublicKey.from_public_bytes(self.binary_key))
        c2m, _ = derive(shared, self.challenge, monitor_key, self.binary_key)
        out = []
        for seq, body in enumerate(self.frames()):
            aad = C2M + self.challenge + seq.to_bytes(4, "big")
            out.append(AESGCM(c2m).decrypt(body[:12], body[12:], aad))
        return out


@dataclass
class Run:
    returncode: int
    stdout: bytes
    stderr: bytes
    callback: Callback | None
    rejected: CallbackRejected | None
    config: bytes
    secret: StepSecret
    logs_seen: list[dict[str, Any]] = field(default_factory=list)
    changes_seen: list[dict[str, Any]] = field(default_factory=list)
    binary_gone_at_connect: bool | None = None
    tap: Tap | None = None

    @property
    def plaintexts(self) -> list[bytes]:
        return self.tap.client_plaintexts(self.secret.private_key) if self.tap and self.callback else []

    def hello(self) -> dict[str, Any]:
        assert self.tap is not None
        plaintext = self.tap.client_plaintexts(self.secret.private_key)[0]
        body = zlib.decompress(plaintext[1:]) if plaintext[0] == 1 else plaintext[1:]
        hello: dict[str, Any] = json.loads(body)
        return hello


async def run_module(
    binary: Binary,
    tmp_path: Path,
    params: dict[str, Any],
    *,
    config_secret: StepSecret | None = None,
    compress: bool = True,
    feed: Callable[[bytes], bytes] = lambda config: config,
    exe: Path | None = None,
    check_proof: Callable[[bytes, str], bool] | None = None,
    secret: StepSecret | None = None,
) -> Run:
    """Start a copy of `binary` (or `exe`) with feed(its config) on stdin; serve one
    callback connection as the monitor that deployed `binary`."""
    secret = secret or StepSecret.new()
    target = tmp_path / "x9f3k"  # innocuous random-looking name, as on a testenv
    shutil.copy2(exe or binary.path, target)
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
    changes_seen: list[dict[str, Any]] = []
    served: dict[str, Any] = {}

    async def on_log(message: dict[str, Any]) -> None:
        logs_seen.append(message)

    async def on_change(change: dict[str, Any]) -> None:
        changes_seen.append(change)
        served.setdefault("files_at_change", target.exists())

    async def serve() -> None:
        stream = await listener.accept()
        served["gone"] = not target.exists()
        async with stream:
            tap = served["tap"] = Tap(stream)
            try:
                served["callback"] = await receive_callback(
                    tap,
                    private_key=secret.private_key,
                    check_proof=check_proof or OneTimeToken(secret.token),
                    run_id=RUN,
                    step_id=STEP,
                    config_sha256=config_sha256(config),
                    exe_sha256=binary.sha256,
                    on_log=on_log,
                    on_change=on_change,
                )
            except CallbackRejected as exc:
                served["rejected"] = exc

    with trio.fail_after(30):
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            proc = await trio.run_process(
                [str(target)],
                stdin=feed(config),
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
        config=config,
        secret=secret,
        logs_seen=logs_seen,
        changes_seen=changes_seen,
        binary_gone_at_connect=served.get("gone"),
        tap=served.get("tap"),
    )


# --- the kit against receive_callback -------------------------------------------------


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
    assert result["config_sha256"] == config_sha256(run.config)
    # hello + result, each flagged as the config asked.
    assert [p[0] for p in run.plaintexts] == [1 if compress else 0] * 2


async def test_the_hello_proves_the_token_without_sending_it_and_reports_both_digests(
    builder: Builder, tmp_path: Path
) -> None:
    binary = await trio.to_thread.run_sync(built, builder, "file_exists")
    run = await run_module(binary, tmp_path, {"path": str(tmp_path)}, compress=False)
    assert run.callback is not None and run.tap is not None
    hello = run.hello()
    assert set(hello) == {"t", "run", "step", "proof", "config_sha256", "exe_sha256"}
    assert hello["config_sha256"] == hashlib.sha256(run.config.removesuffix(b"\n")).hexdigest()
    assert hello["exe_sha256"] == binary.sha256 == hashlib.sha256(binary.path.read_bytes()).hexdigest()
    wire = bytes(run.tap.sent + run.tap.received)
    assert run.secret.token.encode() not in wire


async def test_a_passive_observer_with_the_config_cannot_decrypt_the_kits_session(
    builder: Builder, tmp_path: Path
) -> None:
    """It read the config line (token, monitor key) and recorded every byte of the real
    session both ways, but took no part in the key exchange."""
    binary = await trio.to_thread.run_sync(built, builder, "fill_disk")
    target = tmp_path / "observed.bin"
    run = await run_module(binary, tmp_path, {"path": str(target), "size_mb": 1}, compress=False)
    assert run.callback is not None and run.tap is not None
    config = json.loads(run.config)
    token, monitor_key = config["token"], base64.b64decode(config["monitor_key"])
    tap = run.tap
    frame0 = tap.frames()[0]
    aad = C2M + tap.challenge + bytes(4)
    fresh = X25519PrivateKey.generate()
    attempts = [
        fresh.exchange(X25519PublicKey.from_public_bytes(monitor_key)),
        fresh.exchange(X25519PublicKey.from_public_bytes(tap.binary_key)),
        token.encode(),
        hashlib.sha256(token.encode()).digest(),
    ]
    for shared in attempts:
        for key in derive(shared, tap.challenge, monitor_key, tap.binary_key):
            with pytest.raises(InvalidTag):
                AESGCM(key).decrypt(frame0[:12], frame0[12:], aad)
    # The monitor, with its private key, reads it all: the plaintext is there to be had.
    assert str(target).encode() in b"".join(run.plaintexts)
    assert str(target).encode() not in bytes(tap.received)


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


async def test_each_change_streams_as_it_is_made_and_the_result_repeats_it(builder: Builder, tmp_path: Path) -> None:
    binary = await trio.to_thread.run_sync(built, builder, "chmod")
    target = tmp_path / "graded.conf"
    target.write_text("x")
    target.chmod(0o644)

    run = await run_module(binary, tmp_path, {"path": str(target), "mode": "0000"})

    assert run.returncode == 0, run.stderr
    assert run.callback is not None and run.callback.result["ok"] is True
    (change,) = run.changes_seen
    assert change == run.callback.result["changes"][0]
    assert (change["action"], change["path"], change["before"], change["after"]) == (
        "chmod",
        str(target),
        "0644",
        "0000",
    )
    assert change["detail"]["state_after"]["mode"] == "0000"


async def test_binary_deletes_itself_at_start(builder: Builder, tmp_path: Path) -> None:
    binary = await trio.to_thread.run_sync(built, builder, "file_exists")

    run = await run_module(binary, tmp_path, {"path": "/nonexistent-chaosrun-path"})

    assert run.returncode == 0, run.stderr
    assert run.binary_gone_at_connect is True
    assert not (tmp_path / "x9f3k").exists()
    assert binary.path.is_file(), "the cached copy must survive"
    assert run.callback is not None and run.callback.result["result"]["exists"] is False


async def test_another_monitor_key_is_rejected_and_the_binary_exits_3(builder: Builder, tmp_path: Path) -> None:
    binary = await trio.to_thread.run_sync(built, builder, "file_exists")
    impostor = StepSecret.new()  # its key pair is not the listener's

    run = await run_module(binary, tmp_path, {"path": str(tmp_path)}, config_secret=impostor)

    assert run.rejected is not None
    assert run.rejected.reason == "authentication failed (frame 0)"
    assert run.returncode == 3, run.stderr
    assert b"callback" in run.stderr
    # The token never leaks through the binary's complaints.
    assert impostor.token.encode() not in run.stderr + run.stdout


async def test_a_config_with_another_token_gives_a_refused_proof(builder: Builder, tmp_path: Path) -> None:
    binary = await trio.to_thread.run_sync(built, builder, "file_exists")

    def other_token(config: bytes) -> bytes:
        data = json.loads(config)
        data["token"] = "a-guessed-token"
        return json.dumps(data, separators=(",", ":")).encode() + b"\n"

    run = await run_module(binary, tmp_path, {"path": str(tmp_path)}, feed=other_token)
    assert run.rejected is not None and run.rejected.reason == "wrong token"
    assert run.returncode == 3


async def test_a_second_binary_with_the_same_config_finds_the_token_used(builder: Builder, tmp_path: Path) -> None:
    binary = await trio.to_thread.run_sync(built, builder, "file_exists")
    secret = StepSecret.new()
    check = OneTimeToken(secret.token)
    first = await run_module(binary, tmp_path, {"path": str(tmp_path)}, secret=secret, check_proof=check)
    assert first.callback is not None
    second = await run_module(binary, tmp_path, {"path": str(tmp_path)}, secret=secret, check_proof=check)
    assert second.rejected is not None and second.rejected.reason == "token already used"
    assert second.returncode == 3


async def test_parameters_changed_before_the_binary_read_them_are_detected(builder: Builder, tmp_path: Path) -> None:
    """The v1 attack: SIGSTOP the wrapper, read the config from /proc/PID/fd/0, write back
    a decoy's parameters. The genuine binary then grades the decoy -- and says so."""
    binary = await trio.to_thread.run_sync(built, builder, "file_exists")
    decoy = tmp_path / "decoy"
    decoy.write_text("here")
    fed: list[bytes] = []

    def decoy_params(config: bytes) -> bytes:
        data = json.loads(config)
        data["params"]["path"] = str(decoy)
        fed.append(json.dumps(data, separators=(",", ":")).encode() + b"\n")
        return fed[0]

    run = await run_module(binary, tmp_path, {"path": str(tmp_path / "missing")}, feed=decoy_params)
    assert run.rejected is not None
    assert run.rejected.reason == CONFIG_ALTERED == "the step's parameters were altered on the target"
    assert getattr(run.rejected, "expected", None) == config_sha256(run.config)
    assert getattr(run.rejected, "reported", None) == config_sha256(fed[0])
    assert run.returncode == 3  # no ack: the binary knows it was not heard


async def test_a_modified_binary_reports_its_own_hash_and_is_refused(builder: Builder, tmp_path: Path) -> None:
    binary = await trio.to_thread.run_sync(built, builder, "file_exists")
    modified = tmp_path / "modified"
    modified.write_bytes(binary.path.read_bytes() + b"\0candidate")  # still runs, other bytes
    modified.chmod(0o755)
    run = await run_module(binary, tmp_path, {"path": str(tmp_path)}, exe=modified)
    assert run.rejected is not None
    assert run.rejected.reason == BINARY_SWAPPED == "the binary that ran is not the one deployed"
    assert getattr(run.rejected, "reported", None) == hashlib.sha256(modified.read_bytes()).hexdigest()
    assert getattr(run.rejected, "expected", None) == binary.sha256


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


# --- whole steps against a root candidate ---------------------------------------------

Attack = Callable[["HostileConnection", str, bytes], Awaitable[Process]]


class HostileConnection:
    """A local target whose root user sees the upload and the binary's stdin pipe."""

    def __init__(self, inner: Connection, attack: Attack) -> None:
        self.inner = inner
        self.attack = attack
        self.uploaded = b""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def write_file(self, path: str, data: bytes, mode: int = 0o700) -> None:
        self.uploaded = data
        await self.inner.write_file(path, data, mode)

    async def start(self, command: str, *, input: bytes | None = None) -> Process:
        if input and input.startswith(b'{"v":2'):  # a module's exec, not a cleanup command
            return await self.attack(self, command, input)
        return await self.inner.start(command, input=input)


class HostileConnector:
    name = "local"

    def __init__(self, attack: Attack) -> None:
        self.inner = LocalConnector()
        self.attack = attack

    def open_shared(self) -> AbstractAsyncContextManager[None]:
        return self.inner.open_shared()

    def open_connection(self, target: TargetSpec, *, connect_timeout: float) -> AbstractAsyncContextManager[Any]:
        @asynccontextmanager
        async def opened() -> AsyncIterator[HostileConnection]:
            async with self.inner.open_connection(target, connect_timeout=connect_timeout) as conn:
                yield HostileConnection(conn, self.attack)

        return opened()


@dataclass
class Step:
    report: RunReport
    audit: list[dict[str, Any]]
    audit_path: Path

    @property
    def outcome(self) -> Any:
        return self.report.environments[0].steps[0]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.audit if r["event"] == name]


async def run_step(tmp_path: Path, attack: Attack, probe: str) -> Step:
    tmp_dir = tmp_path / "target-tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    text = (
        f"version: 1\nname: root-candidate\ntargets:\n  web: {{host: 127.0.0.1, tmp_dir: {tmp_dir}}}\n"
        f"steps:\n  - {{id: graded, target: web, {probe}}}\n"
    )
    scenario, errors = check_scenario_text(text, "root.yaml")
    assert scenario is not None and not errors, [str(e) for e in errors]
    options = RunOptions(
        audit_dir=tmp_path / "audit",
        connector=HostileConnector(attack),
        key_path=tmp_path / "keys" / "monitor_ed25519",
    )
    with trio.fail_after(60):
        report = await run_plan(build_plan(scenario, seed=1), options)
    assert report.audit_path is not None
    records = [json.loads(line) for line in report.audit_path.read_text().splitlines()]
    assert verify_file(report.audit_path).ok
    assert list(tmp_dir.iterdir()) == []
    return Step(report, records, report.audit_path)


@pytest.fixture(scope="module")
def _runtime_modules() -> None:
    builder = Builder()
    for module in ("command", "file_exists"):
        _need(module)
        builder.build(module, "linux", goarch_for(platform.machine()))


def rewritten(config: bytes, **params: Any) -> bytes:
    data = json.loads(config)
    data["params"].update(params)
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"


async def thief_session(conn: HostileConnection, config: bytes) -> tuple[trio.SocketStream, ClientSession]:
    """Speak for the binary with what was read off its stdin pipe."""
    data = json.loads(config)
    host, port = data["monitor"].rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    session = await open_session(stream, base64.b64decode(data["monitor_key"]))
    hello = {
        "t": "hello",
        "run": data["run"],
        "step": data["step"],
        "proof": session.proof(data["token"], data["run"], data["step"]),
        "config_sha256": config_sha256(config),
        "exe_sha256": hashlib.sha256(conn.uploaded).hexdigest(),
    }
    await session.send(session.frame(hello))
    return stream, session


@pytest.mark.usefixtures("_runtime_modules")
async def test_a_step_whose_parameters_were_rewritten_on_the_pipe_fails_and_the_audit_has_both_digests(
    tmp_path: Path,
) -> None:
    decoy = tmp_path / "decoy"
    decoy.write_text("x")
    fed: list[bytes] = []

    async def rewrite(conn: HostileConnection, command: str, config: bytes) -> Process:
        fed.append(rewritten(config, path=str(decoy)))
        return await conn.inner.start(command, input=fed[0])

    step = await run_step(tmp_path, rewrite, f"probe: file_exists, with: {{path: {tmp_path / 'missing'}}}")
    assert step.outcome.status is StepStatus.FAILED
    assert step.outcome.reason == CONFIG_ALTERED
    (record,) = [r for r in step.events("callback_rejected") if r["reason"] == CONFIG_ALTERED]
    assert record["digest"] == "config_sha256"
    assert record["reported"] == config_sha256(fed[0]) != record["expected"]
    assert not step.events("callback_accepted")


@pytest.mark.usefixtures("_runtime_modules")
async def test_a_step_run_by_another_binary_fails(tmp_path: Path) -> None:
    async def swap(conn: HostileConnection, command: str, config: bytes) -> Process:
        other = tmp_path / "candidate-build"
        other.write_bytes(conn.uploaded + b"\0")
        other.chmod(0o755)
        assert command.endswith("exec /proc/self/fd/3")
        return await conn.inner.start(command.removesuffix("/proc/self/fd/3") + str(other), input=config)

    step = await run_step(tmp_path, swap, f"probe: file_exists, with: {{path: {tmp_path}}}")
    assert step.outcome.status is StepStatus.FAILED
    assert step.outcome.reason == BINARY_SWAPPED
    (record,) = [r for r in step.events("callback_rejected") if r["reason"] == BINARY_SWAPPED]
    assert record["digest"] == "exe_sha256" and record["reported"] != record["expected"]


@pytest.mark.usefixtures("_runtime_modules")
async def test_a_thief_who_claims_the_token_first_is_found_out_when_the_real_binary_calls(tmp_path: Path) -> None:
    async def forge_first(conn: HostileConnection, command: str, config: bytes) -> Process:
        stream, session = await thief_session(conn, config)
        forged = {"t": "result", "step": json.loads(config)["step"], "ok": True, "error": None,
                  "result": {"exit_status": 0, "stdout": "all fine\n"}, "changes": [],
                  "config_sha256": config_sha256(config)}  # fmt: skip
        await session.send(session.frame(forged))
        await session.receive_ack()
        await stream.aclose()
        return await conn.inner.start(command, input=config)  # the genuine binary, let go late

    step = await run_step(tmp_path, forge_first, "probe: command, with: {command: 'exit 1'}")
    assert step.outcome.status is StepStatus.FAILED
    assert step.outcome.reason == TOKEN_STOLEN
    assert "token already used" in [r["reason"] for r in step.events("callback_rejected")]
    assert "token_reused" in [r["signal"] for r in step.events("signal")]
    assert len(step.events("exec")) == 1, "how the genuine binary ended is on record"


@pytest.mark.usefixtures("_runtime_modules")
async def test_a_flood_with_a_stolen_config_fails_the_step_at_once_with_one_record(tmp_path: Path) -> None:
    """The issue's numbers: 2,000 compressed log frames of ~800 KB each, sent with the
    step's stolen token and key, while the genuine binary would sleep 20 s."""
    big = {"t": "log", "level": "info", "msg": "m" * 4096, "fields": {f"k{i}": "A" * 4000 for i in range(200)}}
    packed = b"\x01" + zlib.compress(json.dumps(big).encode())
    sent: list[int] = []

    async def flood(conn: HostileConnection, command: str, config: bytes) -> Process:
        stream, session = await thief_session(conn, config)
        count = 0
        try:
            for _ in range(2000):
                await session.send(session.frame_plaintext(packed))
                count += 1
        except CallbackRejected:
            pass  # the monitor hung up
        sent.append(count)
        await stream.aclose()
        return await conn.inner.start(command, input=config)

    started = trio.current_time()
    step = await run_step(tmp_path, flood, "probe: command, with: {command: 'sleep 20', timeout_ms: 30000}")
    assert trio.current_time() - started < 10, "the step waited for the sleep"
    assert step.outcome.status is StepStatus.FAILED
    assert step.outcome.reason.startswith("callback flooded: frame 2 brings the logs to ")
    (flooded,) = step.events("callback_flooded")
    assert flooded["limit"] == "log_bytes" and flooded["bytes"] > 1 << 20 and flooded["authenticated"] is True
    (dropped,) = step.events("logs_dropped")
    assert dropped["count"] == 1 and dropped["bytes"] > LOG_AUDIT_BUDGET  # one 800 KB record: over the budget
    assert sum(len(json.dumps(r)) for r in step.events("log")) <= LOG_AUDIT_BUDGET
    assert step.audit_path.stat().st_size < 64 * 1024
    assert sent, "the thief got its hello through"


@pytest.mark.usefixtures("_runtime_modules")
async def test_change_messages_are_written_before_the_result_and_a_flood_of_them_is_cut_off(tmp_path: Path) -> None:
    def changes(count: int) -> Attack:
        async def send(conn: HostileConnection, command: str, config: bytes) -> Process:
            stream, session = await thief_session(conn, config)
            try:
                for i in range(count):
                    change = {"action": "chmod", "path": f"/srv/{i}", "before": "0644", "after": "0000"}
                    await session.send(session.frame({"t": "change", "change": change}))
                result = {"t": "result", "step": json.loads(config)["step"], "ok": True, "error": None,
                          "result": {"exists": True}, "changes": [], "config_sha256": config_sha256(config)}  # fmt: skip
                await session.send(session.frame(result))
                await session.receive_ack()
            except CallbackRejected:
                pass  # the monitor hung up
            await stream.aclose()
            return await conn.inner.start("exit 0")

        return send

    step = await run_step(tmp_path / "three", changes(3), f"probe: file_exists, with: {{path: {tmp_path}}}")
    assert step.outcome.status is StepStatus.OK, step.outcome.reason
    events = [r["event"] for r in step.audit]
    assert [r["change"]["path"] for r in step.events("change")] == ["/srv/0", "/srv/1", "/srv/2"]
    assert max(i for i, e in enumerate(events) if e == "change") < events.index("result")

    step = await run_step(tmp_path / "flood", changes(1500), f"probe: file_exists, with: {{path: {tmp_path}}}")
    assert step.outcome.status is StepStatus.FAILED
    assert step.outcome.reason.startswith("callback flooded: change message 1001 (frame 1001)")
    assert len(step.events("change")) == 1000
    (flooded,) = step.events("callback_flooded")
    assert flooded["limit"] == "change_messages"


@pytest.mark.usefixtures("_runtime_modules")
async def test_logs_beyond_the_audit_budget_are_counted_in_one_record(tmp_path: Path) -> None:
    """Within the connection's limits (400 logs, ~600 KB), yet more than the step's audit
    budget: the first logs are written, the rest counted in one ``logs_dropped``."""

    async def chatty(conn: HostileConnection, command: str, config: bytes) -> Process:
        stream, session = await thief_session(conn, config)
        for i in range(400):
            await session.send(session.frame({"t": "log", "level": "info", "msg": f"{i} " + "x" * 1500}))
        result = {"t": "result", "step": json.loads(config)["step"], "ok": True, "error": None,
                  "result": {"exists": True}, "changes": [], "config_sha256": config_sha256(config)}  # fmt: skip
        await session.send(session.frame(result))
        await session.receive_ack()
        await stream.aclose()
        return await conn.inner.start("exit 0")  # the genuine binary never runs

    step = await run_step(tmp_path, chatty, f"probe: file_exists, with: {{path: {tmp_path}}}")
    assert step.outcome.status is StepStatus.OK, step.outcome.reason
    logs = step.events("log")
    (dropped,) = step.events("logs_dropped")
    assert len(logs) + dropped["count"] == 400
    assert 100 < len(logs) < 200
    assert dropped["budget"] == LOG_AUDIT_BUDGET and dropped["bytes"] > 200_000
    assert not step.events("callback_flooded")
