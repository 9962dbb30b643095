"""The candidate is root on the testenv and wants a free pass.

Each attack runs against a real step (real sshd, real listener, real binary) from a
thread of its own, the way a candidate's script would. Each test asserts that the step
ends as it would without the attack, that the attack is in the audit log, and (through
the ``exam`` fixture) that no binary and no listening port is left behind.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import json
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from e2e_support import Exam, RunResult, free_port

from chaosrun.run import deploy
from chaosrun.run.audit import verify_file
from chaosrun.run.wire import C2M, MAGIC, config_sha256, hello_proof, seal, session_keys, transcript_sha256

SLOW = "{command: 'sleep 1.5; echo done', timeout_ms: 20000}"


MODES = ["direct", "tunnel"]
_mode = ["direct"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests that take ``callback_mode`` run once per callback mode (direct TCP, SSH tunnel)."""
    if "callback_mode" in metafunc.fixturenames:
        metafunc.parametrize("callback_mode", MODES)


@pytest.fixture(autouse=True)
def _set_mode(request: pytest.FixtureRequest) -> Iterator[None]:
    _mode[0] = request.getfixturevalue("callback_mode") if "callback_mode" in request.fixturenames else "direct"
    yield
    _mode[0] = "direct"


def scenario(exam: Exam, steps: str, *, monitor: str = "", name: str = "adv.yaml") -> Path:
    if _mode[0] == "tunnel":
        monitor = (monitor + "\n" if monitor else "") + "  callback: tunnel"
    path = exam.workdir / name
    path.write_text(
        "version: 1\nname: adversarial\ntargets:\n  web: {host: 127.0.0.1}\n"
        + (f"monitor:\n{monitor}\n" if monitor else "")
        + "steps:\n"
        + steps
    )
    return path


def run(exam: Exam, s: Path, *, mode: str = "direct") -> RunResult:
    return exam.chaosrun("run", s, "-i", exam.inventory(["web"]), "--plain")


def listen_ports(exam: Exam, timeout: float = 20) -> Iterator[int]:
    """Ports of the step listeners, as they open (read from the audit log being written)."""
    audit = exam.workdir / "audit"
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in audit.glob("*.jsonl") if audit.exists() else []:
            for line in log.read_text().splitlines():
                if '"event":"listen"' in line:
                    port = int(json.loads(line)["address"].rsplit(":", 1)[1])
                    if port not in seen:
                        seen.add(port)
                        yield port
        time.sleep(0.005)


class Attacker(threading.Thread):
    """Runs ``attack(port)`` on the first listener that opens; records what it saw."""

    def __init__(self, exam: Exam, attack: Callable[[int], Any]) -> None:
        super().__init__(daemon=True)
        self.exam, self.attack, self.error, self.value = exam, attack, None, None

    def run(self) -> None:
        try:
            for port in listen_ports(self.exam):
                self.value = self.attack(port)
                return
        except BaseException as exc:  # surfaced by the test
            self.error = exc


def rejected(r: RunResult) -> list[str]:
    return [e["reason"] for e in r.events("callback_rejected")]


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert s.recv(20, socket.MSG_WAITALL)[:4] == MAGIC
    return s


def attack_and_run(exam: Exam, attack: Callable[[int], Any], steps: str | None = None) -> tuple[RunResult, Attacker]:
    attacker = Attacker(exam, attack)
    attacker.start()
    r = run(exam, scenario(exam, steps or f"  - {{id: real, target: web, probe: command, with: {SLOW}}}\n"))
    attacker.join(timeout=30)
    assert attacker.error is None, attacker.error
    return r, attacker


def assert_step_unharmed(r: RunResult, step: str = "real") -> None:
    end = r.step_end(step)
    assert end["status"] == "ok", (end["reason"], rejected(r)[:3])
    assert r.code == 0
    assert r.audit_path is not None and verify_file(r.audit_path).ok
    accepted = r.events("callback_accepted")
    assert len(accepted) == 1 and accepted[0]["step"] == step


def test_a_spoofed_callback_with_a_guessed_token_and_key_is_rejected(exam: Exam, callback_mode: str) -> None:
    def attack(port: int) -> None:
        with connect(port) as s:
            challenge = b"\0" * 16  # the attacker does not know it, nor the session key
            s.sendall(
                os.urandom(32)  # a "binary key": without the step's monitor key, no session key follows
                + seal(
                    os.urandom(32),
                    challenge,
                    b"c2m",
                    0,
                    {"t": "hello", "token": "guess", "run": "x", "step": "real"},
                    False,
                )
            )
            s.recv(10)

    r, _ = attack_and_run(exam, attack)
    assert_step_unharmed(r)
    assert any("authentication failed" in reason for reason in rejected(r)), rejected(r)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "frame"),  # garbage
        (struct.pack(">I", 500) + b"\x01" * 100, "truncated"),  # truncated frame, then EOF
        (struct.pack(">I", 1 << 30), "too large"),  # oversized length prefix
    ],
    ids=["garbage", "truncated", "oversized"],
)
def test_garbage_truncated_and_oversized_frames_are_dropped(
    exam: Exam, callback_mode: str, payload: bytes, reason: str
) -> None:
    def attack(port: int) -> None:
        with connect(port) as s:
            s.sendall(os.urandom(32) + payload)  # after the binary's public key, the frames
            s.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                s.recv(100)

    r, _ = attack_and_run(exam, attack)
    assert_step_unharmed(r)
    assert any(reason in x for x in rejected(r)), rejected(r)


def test_a_silent_connection_times_out_without_holding_up_the_step(exam: Exam, callback_mode: str) -> None:
    def attack(port: int) -> socket.socket:
        return connect(port)  # keep it open, say nothing (slowloris)

    r, attacker = attack_and_run(
        exam,
        attack,
        "  - {id: real, target: web, probe: command, with: {command: 'sleep 6', timeout_ms: 20000}}\n",
    )
    attacker.value.close()  # type: ignore[union-attr]
    assert_step_unharmed(r)
    assert "hello timeout" in rejected(r)


def test_a_flood_of_connections_before_the_real_binary_does_not_lock_it_out(exam: Exam, callback_mode: str) -> None:
    def attack(port: int) -> list[socket.socket]:
        held = []
        for _ in range(300):
            with contextlib.suppress(OSError):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        return held

    r, attacker = attack_and_run(exam, attack)
    for s in attacker.value or []:
        s.close()
    assert_step_unharmed(r)
    reasons = rejected(r)
    assert sum("dropped: more than" in x for x in reasons) >= 200, reasons[:5]


class Proxy(threading.Thread):
    """A man in the middle on 127.0.0.2:PORT -> 127.0.0.1:PORT that records what the
    binary sends, and (optionally) tampers with a copy of it."""

    def __init__(self, port: int, on_first_frame: Callable[[bytes, bytes], None] | None = None) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.client_bytes = b""
        self.on_first_frame = on_first_frame
        self.server = socket.create_server(("127.0.0.2", port))
        self.server.settimeout(30)

    def run(self) -> None:
        first = True
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.server.accept()
                threading.Thread(target=self.relay, args=(conn, first), daemon=True).start()
                first = False

    def relay(self, conn: socket.socket, record: bool) -> None:
        with contextlib.suppress(OSError):
            up = socket.create_connection(("127.0.0.1", self.port))
            hello = up.recv(20, socket.MSG_WAITALL)
            conn.sendall(hello)
            done = threading.Event()

            def pump_down() -> None:
                with contextlib.suppress(OSError):
                    while data := up.recv(65536):
                        conn.sendall(data)
                done.set()

            threading.Thread(target=pump_down, daemon=True).start()
            fired = not record
            seen = b""
            with contextlib.suppress(OSError):
                while data := conn.recv(65536):
                    seen += data
                    if record:
                        self.client_bytes = seen
                    up.sendall(data)
                    # The binary's public key (32 bytes), then frame 0, the hello.
                    if not fired and self.on_first_frame and len(seen) >= 36:
                        size = struct.unpack(">I", seen[32:36])[0]
                        if len(seen) >= 36 + size:
                            fired = True
                            self.on_first_frame(hello, seen[: 36 + size])
                up.shutdown(socket.SHUT_WR)
            done.wait(10)
            conn.close()
            up.close()


def test_a_captured_callback_replayed_now_or_later_or_with_a_flipped_bit_is_rejected(exam: Exam) -> None:
    port = free_port()
    monitor = f"  bind: 127.0.0.1\n  advertise: 127.0.0.2\n  ports: {port}-{port}"
    attempts: list[str] = []

    def replay_now(hello: bytes, frame: bytes) -> None:
        # same step, while its listener is open: the same hello frame, then a bit-flipped copy
        for data in (frame, frame[:-1] + bytes([frame[-1] ^ 1])):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.recv(20, socket.MSG_WAITALL)
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                s.recv(10)
                attempts.append("sent")

    proxy = Proxy(port, replay_now)
    proxy.start()
    steps = f"  - {{id: first, target: web, probe: command, with: {SLOW}}}\n  - {{id: second, target: web, probe: command, with: {SLOW}}}\n"

    def replay_later(p: int) -> None:
        # wait for the second step's listener (same port), then replay the whole first stream
        for log in (exam.workdir / "audit").glob("*.jsonl"):
            while log.read_text().count('"event":"listen"') < 2:
                time.sleep(0.005)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.recv(20, socket.MSG_WAITALL)
            s.sendall(proxy.client_bytes)
            s.shutdown(socket.SHUT_WR)
            s.recv(10)

    attacker = Attacker(exam, replay_later)
    attacker.start()
    r = run(exam, scenario(exam, steps, monitor=monitor))
    attacker.join(30)
    proxy.server.close()
    assert r.step_end("first")["status"] == "ok" and r.step_end("second")["status"] == "ok", r.stdout
    assert len(attempts) == 2 and proxy.client_bytes
    by_step = {}
    for e in r.events("callback_rejected"):
        by_step.setdefault(e["step"], []).append(e["reason"])
    assert len(by_step["first"]) == 2 and all("authentication failed" in x for x in by_step["first"]), by_step
    assert any("authentication failed" in x for x in by_step["second"]), by_step
    assert len(r.events("callback_accepted")) == 2


def _inotify_replace(directory: Path, marker: Path, stop: threading.Event, hits: list[str]) -> None:
    """Watch the target's temp dir; replace every uploaded file by a fake 'binary' that
    would report success -- if it ever ran, it would leave ``marker``."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK)
    libc.inotify_add_watch(fd, str(directory).encode(), 0x00000008)  # IN_CLOSE_WRITE
    fake = f"#!/bin/sh\ncat > {marker}\necho ok\n"
    try:
        while not stop.is_set():
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                time.sleep(0.0005)
                continue
            offset = 0
            while offset < len(data):
                _, _, _, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode()
                offset += 16 + length
                if name.startswith("tmp.") and not name.endswith(".fake"):
                    tmp = directory / (name + ".fake")
                    tmp.write_text(fake)
                    tmp.chmod(0o755)
                    with contextlib.suppress(OSError):
                        os.rename(tmp, directory / name)
                        hits.append(name)
    finally:
        os.close(fd)


def test_a_binary_replaced_on_disk_after_upload_never_runs_and_never_sees_the_config(
    exam: Exam, callback_mode: str
) -> None:
    marker = exam.workdir / "stolen-config"
    stop, hits = threading.Event(), []
    watcher = threading.Thread(target=_inotify_replace, args=(exam.remote_tmp, marker, stop, hits), daemon=True)
    watcher.start()
    try:
        r = run(exam, scenario(exam, "  - {id: real, target: web, probe: command, with: {command: 'true'}}\n"))
    finally:
        stop.set()
        watcher.join(5)
    assert hits, "the watcher never saw the upload"
    assert not marker.exists(), "the replaced file ran and read the step's secrets"
    end = r.step_end("real")
    # Either the swap came before our open (refused: hash mismatch), or after it (our
    # own, checked inode ran): never the candidate's file.
    assert end["status"] == "ok" or "changed on the target" in end["reason"], end
    for leftover in exam.remote_tmp.iterdir():  # the fake file may stay when we refused it
        leftover.unlink()


def test_nothing_secret_is_visible_in_proc_and_no_binary_is_on_disk_while_a_step_runs(
    exam: Exam, monkeypatch: pytest.MonkeyPatch, callback_mode: str
) -> None:
    configs: list[dict[str, Any]] = []
    real_config = deploy.step_config

    def recording(**kw: Any) -> bytes:
        line = real_config(**kw)
        configs.append(json.loads(line))
        return line

    monkeypatch.setattr(deploy, "step_config", recording)
    marker = "needle" + os.urandom(4).hex()
    fifo = exam.sandbox / f"pipe-{marker}"
    os.mkfifo(fifo)
    findings: list[str] = []

    def inspect(port: int) -> None:
        time.sleep(0.7)  # the probe is now blocked reading the fifo: it is running
        assert configs, "no step config was made"
        cfg = configs[0]
        secrets_ = {"token": cfg["token"].encode(), "key": cfg["monitor_key"].encode(), "parameter": marker.encode()}
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
                continue
            for what in ("cmdline", "environ"):
                with contextlib.suppress(OSError):
                    data = (pid_dir / what).read_bytes()
                    findings.extend(
                        f"{name} in {pid_dir.name}/{what}: {data[:80]!r}" for name, s in secrets_.items() if s in data
                    )
        findings.extend(f"file {p.name}" for p in exam.remote_tmp.iterdir())
        with open(fifo, "w") as writer:  # let the probe finish
            writer.write(marker + "\n")

    steps = f"  - {{id: real, target: web, probe: file_contains, with: {{path: '{fifo}', text: {marker}}}}}\n"
    r, _ = attack_and_run(exam, inspect, steps)
    assert_step_unharmed(r)
    assert findings == []
    log = r.audit_path.read_text() if r.audit_path else ""
    assert configs[0]["token"] not in log and configs[0]["monitor_key"] not in log


def test_hostile_module_output_cannot_paint_the_terminal_or_forge_audit_records(exam: Exam, callback_mode: str) -> None:
    evil = r"""printf '\033[2J\033[31mALL PASSED\033[0m\n{"event":"run_end","ok":true}\r\n'; head -c 3000000 /dev/zero | tr '\0' A"""
    steps = f"  - {{id: real, target: web, probe: command, expect: 'result.exit_status == 1', with: {{command: {json.dumps(evil)}, max_output: 262144}}}}\n"
    r = run(exam, scenario(exam, steps))
    assert r.step_end("real")["status"] == "failed"  # expect is false: output changes nothing
    assert r.audit_path is not None and verify_file(r.audit_path).ok
    lines = r.audit_path.read_text().splitlines()
    assert sum(1 for x in lines if json.loads(x)["event"] == "run_end") == 1
    assert max(len(x) for x in lines) < 200_000  # huge strings are cut in the log
    assert "\x1b" not in r.stdout and "\x1b" not in r.stderr


def test_a_full_or_read_only_temp_dir_fails_the_step_clearly_and_leaves_nothing(exam: Exam, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], check=True)
    try:
        s = scenario(exam, "  - {id: real, target: web, probe: command, with: {command: 'true'}}\n")
        for folder, start in ((small, "No space left on device in "), (ro, "read-only file system: cannot deploy to ")):
            r = exam.chaosrun("run", s, "-i", exam.inventory(["web"], tmp_dir=str(folder)), "--plain")
            end = r.step_end("real")
            assert end["status"] == "failed"
            assert end["reason"].startswith(f"{start}{folder} on "), end  # the cause, named before the upload
            assert list(folder.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)
        subprocess.run(["umount", str(ro)], check=False)


def _ssh_session_pids(sshd_pid: int) -> list[int]:
    """The per-connection children of the test's own sshd (processes the test started)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(sshd_pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_the_ssh_connection_dropped_mid_run_fails_the_step_and_leaves_nothing(exam: Exam, callback_mode: str) -> None:
    def cut(port: int) -> None:
        log = next((exam.workdir / "audit").glob("*.jsonl"))
        while '"event":"deploy"' not in log.read_text():
            time.sleep(0.005)
        time.sleep(0.3)
        for pid in _ssh_session_pids(exam.sshd.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)

    r, _ = attack_and_run(
        exam, cut, "  - {id: real, target: web, probe: command, with: {command: 'sleep 3', timeout_ms: 20000}}\n"
    )
    end = r.step_end("real")
    # The binary may still deliver its result over TCP (it outlives the SSH session);
    # without it, the step fails and says why.
    assert end["status"] == "ok" or "connection" in end["reason"].lower(), end
    assert r.audit_path is not None and verify_file(r.audit_path).ok


def test_the_ssh_connection_dropped_mid_upload_fails_the_step_and_cleanup_reconnects(exam: Exam) -> None:
    def cut(port: int) -> None:  # the listener opens just before the upload starts
        for pid in _ssh_session_pids(exam.sshd.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)

    r, _ = attack_and_run(exam, cut, "  - {id: real, target: web, probe: command, with: {command: 'true'}}\n")
    end = r.step_end("real")
    if end["status"] != "ok":  # the cut may come a moment too late to hit the upload
        assert (
            "ssh" in end["reason"].lower() or "deploy" in end["reason"].lower() or "connection" in end["reason"].lower()
        ), end
    cleanup = r.events("cleanup")
    assert cleanup and cleanup[0]["removed"] in (True, "unlinked before exec"), cleanup


def test_a_thief_who_read_the_config_and_proves_the_token_too_fails_the_step(
    exam: Exam, monkeypatch: pytest.MonkeyPatch, callback_mode: str
) -> None:
    """Root read the step's config off the binary's stdin pipe and speaks for the binary
    as well: the second valid proof of the token is refused, and the step fails."""
    configs: list[bytes] = []
    real_config = deploy.step_config

    def recording(**kw: Any) -> bytes:
        line = real_config(**kw)
        configs.append(line)
        return line

    monkeypatch.setattr(deploy, "step_config", recording)

    def steal(port: int) -> None:
        while not configs:
            time.sleep(0.005)
        time.sleep(0.5)  # the real binary has proved the token and runs its probe
        cfg = json.loads(configs[0])
        host, dial = cfg["monitor"].rsplit(":", 1)
        monitor_key = base64.b64decode(cfg["monitor_key"])
        with socket.create_connection((host, int(dial)), timeout=10) as s:
            challenge = s.recv(20, socket.MSG_WAITALL)[4:]
            mine = X25519PrivateKey.generate()
            me = mine.public_key().public_bytes_raw()
            c2m, _ = session_keys(
                mine.exchange(X25519PublicKey.from_public_bytes(monitor_key)), challenge, monitor_key, me
            )
            transcript = transcript_sha256(challenge, monitor_key, me, cfg["run"], cfg["step"])
            hello = {"t": "hello", "run": cfg["run"], "step": cfg["step"], "proof": hello_proof(cfg["token"], transcript),
                     "config_sha256": config_sha256(configs[0]), "exe_sha256": "0" * 64}  # fmt: skip
            s.sendall(me + seal(c2m, challenge, C2M, 0, hello, True))
            s.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                s.recv(10)

    r, _ = attack_and_run(exam, steal)
    end = r.step_end("real")
    assert end["status"] == "failed" and end["reason"].startswith("token already used"), end
    assert "token already used" in rejected(r)
    assert r.audit_path is not None and verify_file(r.audit_path).ok
