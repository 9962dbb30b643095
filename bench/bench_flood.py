"""Benchmark: the monitor under a log flood from a thief holding one step's stolen config.

Issue 11's attack, reproduced for real on loopback. A one-step scenario runs through the
runtime (run_plan, the real listener, deploy code and audit log) on the local connector;
its module is the ``command`` probe running ``sleep 20``. The target is played by a root
candidate: when the monitor starts the binary with its config on stdin, the candidate
takes the config off the pipe (token, monitor key), holds the binary back (as SIGSTOP on
the exec wrapper would) and, from a process of its own, speaks for it: a valid v2 hello
(proof, config and executable digests: it has the config and the uploaded file), then
2,000 zlib-compressed log frames, each inflating to ~800 KB (a 4 KiB message and 200
fields of 4,000 bytes: the largest a log record's strings survive the audit log's cut).
Then it lets the genuine binary go.

Two runs, each in a fresh child process so that peak memory is its own:

  baseline  the same step, no thief: the genuine binary sleeps 20 s and reports.
  flood     the thief as above.

Figures, all taken in the monitor's process: RSS before the run, peak RSS during it
(VmHWM, reset through /proc/self/clear_refs just before the run), their difference,
ru_maxrss; the audit log's size; the step's status, reason and wall time; the audit
records the flood left (log, logs_dropped, callback_flooded); what the thief got out.

Usage: .venv/bin/python bench/bench_flood.py [--frames 2000] [--sleep 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from chaosrun.build import Builder, goarch_for
from chaosrun.lint import check_scenario_text
from chaosrun.plan import build_plan
from chaosrun.run.connection import Connection, Process
from chaosrun.run.local import LocalConnector
from chaosrun.run.model import RunOptions
from chaosrun.run.runner import run_plan
from chaosrun.run.wire import (
    C2M,
    CHALLENGE_SIZE,
    MAGIC,
    config_sha256,
    hello_proof,
    seal,
    seal_plaintext,
    session_keys,
    transcript_sha256,
)
from chaosrun.scenario import TargetSpec

HERE = Path(__file__).resolve()
# Protocol v1 under the same attack, for the last column: this harness adapted to v1 (the
# key in the config, the token in the hello) and run on the tree before protocol v2, on the
# machine of docs/performance.md. v1 kept every log in memory and wrote each to the audit
# log; the step failed only because the genuine binary, let go late, found its token used
# (in issue 11's run the thief also sent a result, and the step ended ok).
V1: dict[str, Any] = {"rss_mb": 1611.1, "audit_mb": 1538.0, "status": "failed", "seconds": 25.5}


def flood_message() -> bytes:
    """One log message's JSON: ~800 KB, almost all of it repeated bytes."""
    fields = {f"k{i:03}": "A" * 4000 for i in range(200)}
    message = {"t": "log", "ts": 0.0, "level": "info", "msg": "M" * 4096, "fields": fields}
    return json.dumps(message, separators=(",", ":")).encode()


# --- the thief (its own process: its memory is not the monitor's) ---------------------


def thief(config_line: bytes, exe_sha256: str, frames: int) -> dict[str, Any]:
    """Speak for the binary with the stolen config: hello, then ``frames`` log frames."""
    config = json.loads(config_line)
    monitor_key = base64.b64decode(config["monitor_key"])
    host, port = config["monitor"].rsplit(":", 1)
    body = flood_message()
    packed = b"\x01" + zlib.compress(body, 9)
    sent = frames_sent = 0
    started = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        server_hello = s.recv(len(MAGIC) + CHALLENGE_SIZE, socket.MSG_WAITALL)
        assert server_hello[: len(MAGIC)] == MAGIC, server_hello
        challenge = server_hello[len(MAGIC) :]
        mine = X25519PrivateKey.generate()
        binary_key = mine.public_key().public_bytes_raw()
        shared = mine.exchange(X25519PublicKey.from_public_bytes(monitor_key))
        c2m, _ = session_keys(shared, challenge, monitor_key, binary_key)
        transcript = transcript_sha256(challenge, monitor_key, binary_key, config["run"], config["step"])
        hello = {
            "t": "hello",
            "run": config["run"],
            "step": config["step"],
            "proof": hello_proof(config["token"], transcript),
            "config_sha256": config_sha256(config_line),
            "exe_sha256": exe_sha256,
        }
        s.sendall(binary_key + seal(c2m, challenge, C2M, 0, hello, True))
        try:
            for seq in range(1, frames + 1):
                frame = seal_plaintext(c2m, challenge, C2M, seq, packed)
                s.sendall(frame)
                sent += len(frame)
                frames_sent += 1
        except OSError as exc:
            stopped = f"{type(exc).__name__}: {exc.strerror or exc}"
        else:
            stopped = "all sent"
        seconds = time.perf_counter() - started
    return {
        "frames_sent": frames_sent,
        "wire_bytes_sent": sent,
        "inflated_bytes_offered": frames_sent * len(body),
        "frame_inflates_to": len(body),
        "frame_wire_bytes": len(packed) + 32,
        "stopped": stopped,
        "seconds": round(seconds, 3),
    }


# --- the target: a local connector whose root user steals the config ------------------


class ThiefConnection:
    """The local target, where the thief reads the binary's stdin pipe before it does."""

    def __init__(self, inner: Connection, frames: int, report: dict[str, Any]) -> None:
        self.inner = inner
        self.frames = frames
        self.report = report
        self.uploaded_sha256 = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def write_file(self, path: str, data: bytes, mode: int = 0o700) -> None:
        self.uploaded_sha256 = hashlib.sha256(data).hexdigest()  # root sees the upload
        await self.inner.write_file(path, data, mode)

    async def start(self, command: str, *, input: bytes | None = None) -> Process:
        if self.frames and input and input.startswith(b'{"v":2'):
            # The genuine binary is held back while the thief, in its own process, floods.
            proc = await trio.run_process(
                [sys.executable, str(HERE), "--thief", self.uploaded_sha256, "--frames", str(self.frames)],
                stdin=input,
                capture_stdout=True,
                check=True,
            )
            self.report.update(json.loads(proc.stdout))
        return await self.inner.start(command, input=input)


class ThiefConnector:
    name = "local"

    def __init__(self, frames: int, report: dict[str, Any]) -> None:
        self.inner = LocalConnector()
        self.frames = frames
        self.report = report

    def open_shared(self) -> AbstractAsyncContextManager[None]:
        shared: AbstractAsyncContextManager[None] = self.inner.open_shared()
        return shared

    def open_connection(self, target: TargetSpec, *, connect_timeout: float) -> AbstractAsyncContextManager[Any]:
        @asynccontextmanager
        async def opened() -> AsyncIterator[ThiefConnection]:
            async with self.inner.open_connection(target, connect_timeout=connect_timeout) as conn:
                yield ThiefConnection(conn, self.frames, self.report)

        return opened()


# --- one run: this process is the monitor ---------------------------------------------


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def one_run(frames: int, sleep: int, workdir: Path) -> dict[str, Any]:
    tmp_dir = workdir / "target-tmp"
    tmp_dir.mkdir(parents=True)
    text = (
        f"version: 1\nname: flood\ntargets:\n  web: {{host: 127.0.0.1, tmp_dir: {tmp_dir}}}\n"
        f"steps:\n  - {{id: graded, target: web, probe: command, "
        f"with: {{command: 'sleep {sleep}', timeout_ms: {(sleep + 30) * 1000}}}}}\n"
    )
    scenario, errors = check_scenario_text(text, "flood.yaml")
    assert scenario is not None and not errors, [str(e) for e in errors]
    thief_report: dict[str, Any] = {}
    options = RunOptions(
        audit_dir=workdir / "audit",
        connector=ThiefConnector(frames, thief_report),
        key_path=workdir / "keys" / "monitor_ed25519",
    )
    plan = build_plan(scenario, seed=1)
    rss_before = status_kb("VmRSS")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    started = time.perf_counter()
    report = trio.run(run_plan, plan, options)
    seconds = time.perf_counter() - started
    hwm = status_kb("VmHWM")
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert report.audit_path is not None
    records = [json.loads(line) for line in report.audit_path.read_text().splitlines()]
    step = report.environments[0].steps[0]
    events = [r["event"] for r in records]
    flooded = [r for r in records if r["event"] == "callback_flooded"]
    return {
        "status": step.status.name.lower(),
        "reason": step.reason,
        "run_seconds": round(seconds, 3),
        "rss_before_kb": rss_before,
        "peak_rss_kb": hwm,
        "rss_increase_kb": hwm - rss_before,
        "maxrss_increase_kb": maxrss_after - maxrss_before,
        "audit_bytes": report.audit_path.stat().st_size,
        "audit_records": len(records),
        "log_records": events.count("log"),
        "logs_dropped_records": events.count("logs_dropped"),
        "callback_flooded_records": len(flooded),
        "flooded": {k: flooded[0][k] for k in ("limit", "allowed", "bytes", "refused")} if flooded else None,
        "thief": thief_report or None,
    }


# --- the table ------------------------------------------------------------------------


def child(kind: str, frames: int, sleep: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"flood-{kind}-") as tmp:
        proc = subprocess.run(
            [sys.executable, str(HERE), "--run", kind, "--frames", str(frames), "--sleep", str(sleep), "--dir", tmp],
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def table(baseline: dict[str, Any], flood: dict[str, Any]) -> str:
    def mb(kb: float) -> str:
        return f"{kb / 1024:.1f}"

    rows = [
        ("step", baseline["status"], flood["status"], "", str(V1["status"])),
        ("step wall time, s", f"{baseline['run_seconds']:.2f}", f"{flood['run_seconds']:.2f}", "", f"{V1['seconds']}"),
        (
            "monitor RSS increase, MB (VmHWM - VmRSS before)",
            mb(baseline["rss_increase_kb"]),
            mb(flood["rss_increase_kb"]),
            f"{flood['rss_increase_kb'] / max(baseline['rss_increase_kb'], 1):.2f}x",
            f"{V1['rss_mb']:.0f}",
        ),
        (
            "monitor ru_maxrss increase, MB",
            mb(baseline["maxrss_increase_kb"]),
            mb(flood["maxrss_increase_kb"]),
            "",
            "",
        ),
        (
            "audit log, KB",
            f"{baseline['audit_bytes'] / 1024:.1f}",
            f"{flood['audit_bytes'] / 1024:.1f}",
            f"{flood['audit_bytes'] / baseline['audit_bytes']:.2f}x",
            f"{V1['audit_mb'] * 1024:.0f}",
        ),
        ("audit records", str(baseline["audit_records"]), str(flood["audit_records"]), "", ""),
        (
            "log / logs_dropped / callback_flooded records",
            f"{baseline['log_records']} / {baseline['logs_dropped_records']} / {baseline['callback_flooded_records']}",
            f"{flood['log_records']} / {flood['logs_dropped_records']} / {flood['callback_flooded_records']}",
            "",
            "",
        ),
    ]
    widths = [max(len(r[i]) for r in rows + [("", "baseline", "flood", "flood/base", "v1 flood")]) for i in range(5)]
    head = ("", "baseline", "flood", "flood/base", "v1 flood")
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    thief = flood["thief"] or {}
    lines.append("")
    lines.append(f"flood reason: {flood['reason']}")
    lines.append(f"refused: {flood['flooded']}")
    lines.append(
        f"thief: {thief.get('frames_sent')} of the frames written to its socket "
        f"({thief.get('wire_bytes_sent', 0) / 1024:.0f} KB on the wire, "
        f"{thief.get('inflated_bytes_offered', 0) / 1e6:.0f} MB inflated; one frame: "
        f"{thief.get('frame_wire_bytes')} B -> {thief.get('frame_inflates_to')} B), then: {thief.get('stopped')}"
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=2000, help="log frames the thief sends (default 2000)")
    p.add_argument("--sleep", type=int, default=20, help="seconds the genuine binary's command sleeps")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--run", choices=["baseline", "flood"], help=argparse.SUPPRESS)
    p.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--thief", metavar="EXE_SHA256", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.thief:
        print(json.dumps(thief(sys.stdin.buffer.readline(), args.thief, args.frames)))
        return
    if args.run:
        frames = args.frames if args.run == "flood" else 0
        print(json.dumps(one_run(frames, args.sleep, args.dir)))
        return

    Builder().build("command", "linux", goarch_for(platform.machine()))  # warm cache: no go build in the runs
    baseline = child("baseline", args.frames, args.sleep)
    flood = child("flood", args.frames, args.sleep)
    print(table(baseline, flood))
    if args.json:
        args.json.write_text(json.dumps({"baseline": baseline, "flood": flood, "v1": V1}, indent=2) + "\n")
    ok = flood["status"] == "failed" and flood["reason"].startswith("callback flooded:")
    ok = ok and flood["rss_increase_kb"] < 100 * 1024 and flood["audit_bytes"] < 4 << 20
    ok = ok and flood["callback_flooded_records"] == 1
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
