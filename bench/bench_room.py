"""Benchmark an exam room: thousands of environments on one monitor, against one loopback sshd.

Each workload E x S is E environments (each its own SSH connection, as in
bench_runtime.py) running S ``file_exists`` probes one after the other, at most
``--parallel`` environments at once (``chaosrun run --parallel``), against one throwaway
OpenSSH sshd on 127.0.0.1 (chaosrun.testing.local_sshd, ``SetEnv SHLVL=1``) whose
``MaxStartups`` is raised above ``--parallel``: sshd's default (10:30:100) and the test
sshd's (200:30:400) drop handshakes beyond their first number, and a room connects its
environments in waves of ``--parallel``. The benchmark raises its own open-file limit
(every running environment holds an SSH connection, a listener and a callback).

Figures, per workload (one run each unless ``--reps``; the median is shown):
  run          seconds of chaosrun's main() in the child (imports excluded), as in bench_runtime
  CPU          user+sys CPU seconds of the child during the run, all threads
  CPU/step     CPU divided by E x S: the monitor's cost per step, per-run work included
  peak RSS     the child's ru_maxrss
  per env      run / E and CPU / E; "x first" divides them by the first workload's (20x3 by
               default): below 1, a big room costs less per environment than a small one
  floor        with ``--floor``: bench/floor_asyncssh.py on the same workload and sshd, as
               many environments at once (``--parallel``), paired CPU per step

Usage:
  .venv/bin/python bench/bench_room.py                      # 20x3, 1000x3, 5000x3 (~10-15 min)
  .venv/bin/python bench/bench_room.py --workloads 20x3,1000x3 --floor --json room.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_runtime as br  # noqa: E402 - the same fixture, scenarios and child as bench_runtime

DEFAULT_WORKLOADS = "20x3,1000x3,5000x3"


def run_chaosrun(fx: br.Fixture, envs: int, steps: int, parallel: int) -> dict[str, Any]:
    cmd = [br.PY, br.__file__, "--child-chaosrun", str(fx.scenarios[steps]), str(fx.inventories[envs])]
    cmd += [str(fx.work / "audit"), str(min(envs, parallel))]
    return _child(cmd, br._child_env(fx))


def run_floor(fx: br.Fixture, envs: int, steps: int, parallel: int) -> dict[str, Any]:
    s = fx.sshd
    cmd = [br.PY, str(br.FLOOR), "--host", s.host, "--port", str(s.port), "--user", s.user]
    cmd += ["--identity", str(s.identity), "--known-hosts", str(s.known_hosts), "--binary", str(fx.binary)]
    cmd += ["--tmp-dir", str(fx.remote_tmp), "--envs", str(envs), "--steps", str(steps)]
    cmd += ["--parallel", str(min(envs, parallel)), "--max-requests", "4"]
    return _child(cmd, br._child_env(fx))


def _child(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    load = os.getloadavg()[0]
    started = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    try:
        out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "process": wall, "note": res.stderr[-800:], "load": [load, os.getloadavg()[0]]}
    out["ok"] = out.get("ok") and res.returncode == 0
    out["process"] = wall
    out["load"] = [load, os.getloadavg()[0]]  # 1-minute load average before and after
    return out


def main() -> int:
    p = argparse.ArgumentParser(description="chaosrun on a room of environments, one loopback sshd")
    p.add_argument("--workloads", default=DEFAULT_WORKLOADS, help="ExS,... (the first one is the per-env reference)")
    p.add_argument("--parallel", type=int, default=200, help="environments at once (chaosrun run --parallel)")
    p.add_argument("--reps", type=int, default=1, help="runs of each workload (median shown)")
    p.add_argument("--floor", action="store_true", help="also run the asyncssh floor on each workload")
    p.add_argument("--json", type=Path, help="write every sample here")
    args = p.parse_args()
    workloads = [tuple(int(n) for n in w.split("x")) for w in args.workloads.split(",")]

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.parallel * 12 + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(want, soft)), hard))

    from chaosrun.build import Builder, goarch_for
    from chaosrun.testing import local_sshd

    binary = Builder().build(br.MODULE, "linux", goarch_for(platform.machine()))
    work = Path(tempfile.mkdtemp(prefix="chaosrun-room-"))
    samples: list[dict[str, Any]] = []
    # First occurrence wins in sshd_config, and these lines come before the test sshd's own.
    startups = f"MaxStartups {args.parallel + 100}:30:{2 * args.parallel + 200}"
    try:
        with local_sshd(work, extra_config=(startups,)) as sshd:
            remote_tmp = work / "remote-tmp"
            remote_tmp.mkdir()
            fx = br.Fixture(sshd, work, remote_tmp, binary.path, binary.sha256)
            for envs, steps in {(1, 1), *workloads}:
                fx.scenarios.setdefault(steps, work / f"room-{steps}.yaml").write_text(br.scenario_text(steps))
                fx.inventories.setdefault(envs, work / f"room-{envs}.json").write_text(br.inventory_text(fx, envs))
            info = br.versions(None)
            print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
            print(f"sshd 127.0.0.1:{sshd.port} ({startups}); --parallel {args.parallel}", flush=True)
            run_chaosrun(fx, 1, 1, 1)  # warm-up: page cache, pyc files, the sshd
            for rep in range(args.reps):
                for envs, steps in workloads:
                    systems = ["chaosrun", "floor"] if args.floor else ["chaosrun"]
                    for system in systems if rep % 2 == 0 else systems[::-1]:
                        run = run_floor if system == "floor" else run_chaosrun
                        out = run(fx, envs, steps, args.parallel)
                        left = sorted(x.name for x in remote_tmp.iterdir())
                        for name in left:
                            (remote_tmp / name).unlink()
                        out.update(system=system, envs=envs, steps=steps, rep=rep, left=len(left))
                        samples.append(out)
                        print(_line(out), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(_table(samples, workloads))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "parallel": args.parallel, "samples": samples}, indent=1))
    return 0 if all(s.get("ok") and not s["left"] for s in samples) else 1


def _line(s: dict[str, Any]) -> str:
    head = f"{s['system']:<8} {s['envs']}x{s['steps']}"
    if "seconds" not in s:
        return f"{head} FAILED {s.get('note', '')[-400:]!r}"
    flag = "" if s["ok"] else "  FAILED " + "; ".join(s.get("errors", []))[:300]
    flag += f"  LEFT {s['left']} file(s) on the target" if s["left"] else ""
    per_step = 1000 * s["cpu"] / (s["envs"] * s["steps"])
    return (
        f"{head}: run {s['seconds']:.1f}s, CPU {s['cpu']:.1f}s ({per_step:.2f} ms/step), "
        f"peak RSS {s['maxrss_kb'] / 1024:.0f} MiB, load {s['load'][0]:.1f}-{s['load'][1]:.1f}{flag}"
    )


def _table(samples: list[dict[str, Any]], workloads: list[tuple[int, ...]]) -> str:
    header = ("workload", "system", "run", "CPU", "CPU/step", "peak RSS")
    header += ("run/env", "x first", "CPU/env", "x first", "ok")
    rows: list[tuple[str, ...]] = []
    first: dict[str, tuple[float, float]] = {}
    for envs, steps in workloads:
        for system in ("chaosrun", "floor"):
            got = [s for s in samples if s["system"] == system and s["envs"] == envs and s["steps"] == steps]
            timed = [s for s in got if "seconds" in s]
            if not timed:
                continue
            run = statistics.median(s["seconds"] for s in timed)
            cpu = statistics.median(s["cpu"] for s in timed)
            rss = max(s["maxrss_kb"] for s in timed)
            per_run, per_cpu = run / envs, cpu / envs
            base = first.setdefault(system, (per_run, per_cpu))
            rows.append(
                (
                    f"{envs}x{steps}",
                    system,
                    f"{run:.1f}s",
                    f"{cpu:.1f}s",
                    f"{1000 * cpu / (envs * steps):.2f} ms",
                    f"{rss / 1024:.0f} MiB",
                    f"{1000 * per_run:.1f} ms",
                    f"{per_run / base[0]:.2f}x",
                    f"{1000 * per_cpu:.1f} ms",
                    f"{per_cpu / base[1]:.2f}x",
                    str(all(s.get("ok") and not s["left"] for s in got)),
                )
            )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


if __name__ == "__main__":
    sys.exit(main())
