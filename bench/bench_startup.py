"""Benchmark process overhead: what a command costs before it does any work.

Each figure is the median wall time of a fresh child process, the systems interleaved
round by round so that load on the machine falls on all of them alike:

  python        ``python -c pass``: the interpreter alone, the floor of every figure
  floor         ``python -c "import asyncio, asyncssh"``: what the asyncssh floor script
                (bench/floor_asyncssh.py) pays before its first connection
  version       ``chaosrun --version``
  complete      ``chaosrun completion --cword 1 -- chaosrun r``: one TAB in a shell
  lint          ``chaosrun lint scenarios/web_outage.yaml``
  plan          ``chaosrun plan scenarios/web_outage.yaml``
  run           ``chaosrun run`` of a 1-step scenario whose only target refuses the
                connection at once (a closed port on 127.0.0.1): the imports, the parse,
                lint and plan, the build cache lookup, the audit log, then one refused
                connect; everything a real run pays before its first SSH packet
  floor-run     bench/floor_asyncssh.py against the same closed port: the floor's own
                start, up to its first refused connect

Ratios are against ``floor`` (for the commands) and ``floor-run`` (for ``run``).

Usage: .venv/bin/python bench/bench_startup.py [--reps N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
CHAOSRUN = str(Path(PY).parent / "chaosrun")
SCENARIO = REPO / "scenarios" / "web_outage.yaml"

ONE_STEP = """\
version: 1
name: startup
targets:
  web: {host: 127.0.0.1, port: %(port)d, insecure: true}
steps:
  - {id: look, target: web, chaos: write_file, with: {path: /tmp/chaosrun-bench-startup, content: x}}
"""


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then closed: refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def commands(work: Path, port: int) -> dict[str, list[str]]:
    scenario = work / "one.yml"
    scenario.write_text(ONE_STEP % {"port": port})
    key = work / "id"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    binary = work / "bin"
    binary.write_bytes(b"\0" * 1024)
    return {
        "python": [PY, "-c", "pass"],
        "floor": [PY, "-c", "import asyncio, asyncssh"],
        "version": [CHAOSRUN, "--version"],
        "complete": [CHAOSRUN, "completion", "--cword", "1", "--", "chaosrun", "r"],
        "lint": [CHAOSRUN, "lint", str(SCENARIO)],
        "plan": [CHAOSRUN, "plan", str(SCENARIO), "--seed", "1"],
        "run": [CHAOSRUN, "run", str(scenario), "--plain", "--seed", "1", "--audit", str(work / "audit")],
        "floor-run": [
            PY, str(REPO / "bench" / "floor_asyncssh.py"), "--port", str(port), "--identity", str(key),
            "--known-hosts", os.devnull, "--binary", str(binary),
        ],
    }  # fmt: skip


#: Children write and use .pyc files whatever this shell says: an installed chaosrun has
#: them, and a source tree edited since its last run would otherwise be compiled each time.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def measure(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=CHILD_ENV, check=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chaosrun-bench-startup-") as tmp:
        work = Path(tmp)
        todo = commands(work, closed_port())
        for argv in todo.values():  # warm: page cache, .pyc files, the build cache
            measure(argv)
        times: dict[str, list[float]] = {name: [] for name in todo}
        for rep in range(args.reps):
            names = list(todo)
            shift = rep % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(measure(todo[name]))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"process overhead, median of {args.reps} fresh processes (machine: {os.cpu_count()} CPUs)")
    print(f"{'command':<10} {'seconds':>8} {'vs floor':>9} {'vs python':>10}")
    for name, seconds in median.items():
        base = median["floor-run"] if name == "run" else median["floor"]
        print(f"{name:<10} {seconds:8.3f} {seconds / base:8.2f}x {seconds / median['python']:9.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"reps": args.reps, "median": median, "all": times}, indent=2))


if __name__ == "__main__":
    main()
