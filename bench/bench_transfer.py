"""Benchmark ``transfer: raw|gzip|auto``: bytes on the wire and time per step, against the
raw upload and against the floor, on loopback and on a 100 Mbit/s link, in one run.

Two sites, each an OpenSSH sshd (chaosrun.testing.local_sshd, ``SetEnv SHLVL=1``) that the
monitor reaches through an interface of its own, so that the interface's counters count
this benchmark's bytes and nothing else:

  loopback  the sshd on 127.0.0.1 inside the monitor's network namespace (its own ``lo``)
  100mbit   the sshd in a second namespace behind a veth pair, both ends shaped with
            ``tc qdisc add dev VETH root tbf rate 100mbit burst 32kbit latency 400ms``

The whole measurement runs inside the monitor's namespace (this script runs itself there
with ``ip netns exec``); the namespaces and their links are removed at the end, whatever
happens. Only addresses inside these namespaces are used.

Systems, per site (rounds interleaved, their order rotating each round):

  raw, gzip, auto  ``chaosrun run`` (bench_runtime.py's child: the CLI's main() in a fresh
                   process, plain reporter) of a scenario of ``file_exists`` probes with
                   ``monitor.transfer`` set so
  floor            bench/floor_asyncssh.py: listener, SFTP copy, exec, callback, delete,
                   nothing else (it always sends the raw module)

Figures: ``run`` is the child's own wall time (imports excluded), ``per step`` is run / the
steps each environment runs one after the other; ``bytes/step`` is the interface's
rx+tx bytes over the run (lo: tx, each packet crosses it once) divided by all steps: SSH
handshakes, SFTP, exec channels and callbacks included. ``x raw`` and ``x floor`` are
medians over rounds of the run time divided by chaosrun-raw's / the floor's in the same
round; ``bytes x raw`` is the same for bytes.

Usage: .venv/bin/python bench/bench_transfer.py [--quick] [--reps N] [--workloads 1x10,10x3]
       [--json results.json]        (as root: it makes network namespaces)
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RUNTIME = BENCH / "bench_runtime.py"
FLOOR = BENCH / "floor_asyncssh.py"
PY = sys.executable
MODULE = "file_exists"
SYSTEMS = ["raw", "gzip", "auto", "floor"]
WORKLOADS = [(1, 10), (10, 3)]
QUICK_WORKLOADS = [(1, 5)]
SHAPE = ("tbf", "rate", "100mbit", "burst", "32kbit", "latency", "400ms")


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


# -- outside: the namespaces ----------------------------------------------------------------


@dataclass(frozen=True)
class Network:
    monitor_ns: str
    target_ns: str
    monitor_if: str  # the monitor's end of the veth pair
    monitor_address: str
    target_address: str


@contextlib.contextmanager
def network() -> Iterator[Network]:
    """The monitor's namespace and a target namespace behind a shaped veth pair; removed
    on exit (the veth pair goes with its namespaces)."""
    tag = secrets.token_hex(2)
    prefix = f"10.232.{secrets.randbelow(200) + 20}."
    net = Network(f"crbm{tag}", f"crbt{tag}", f"vbm{tag}", prefix + "1", prefix + "2")
    target_if = f"vbt{tag}"
    made: list[str] = []
    try:
        for ns in (net.monitor_ns, net.target_ns):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", net.monitor_ns, "link", "add", net.monitor_if, "type", "veth", "peer", "name", target_if)
        sh("ip", "-n", net.monitor_ns, "link", "set", target_if, "netns", net.target_ns)
        for ns, dev, address in (
            (net.monitor_ns, net.monitor_if, net.monitor_address),
            (net.target_ns, target_if, net.target_address),
        ):
            sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", *SHAPE)
        yield net
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


# -- inside: the measurement ------------------------------------------------------------------


def counters(device: str) -> int:
    """Bytes that crossed ``device`` so far (this process's namespace): rx + tx, or tx
    alone for ``lo``, where every packet is both."""
    for line in Path("/proc/self/net/dev").read_text().splitlines()[2:]:
        name, _, rest = line.partition(":")
        if name.strip() == device:
            fields = [int(x) for x in rest.split()]
            return fields[8] if device == "lo" else fields[0] + fields[8]
    raise LookupError(f"no interface {device}")


@dataclass
class Site:
    name: str
    device: str  # whose counters count the site's bytes
    bind: str  # the monitor's address the binaries dial
    sshd: Any
    remote_tmp: Path
    inventories: dict[int, Path] = field(default_factory=dict)
    scenarios: dict[tuple[int, str], Path] = field(default_factory=dict)


@dataclass
class Sample:
    site: str
    envs: int
    steps: int
    system: str
    run: float | None
    bytes: int
    ok: bool
    round: int
    note: str = ""
    cpu: float | None = None
    uploads: dict[str, int] = field(default_factory=dict)  # transfer -> count (from the audit log)


def scenario_text(site: Site, steps: int, transfer: str) -> str:
    lines = [
        "version: 1",
        "name: bench-transfer",
        "targets:",
        f"  t: {{ host: {site.sshd.host} }}",
        f"monitor: {{ bind: {site.bind}, callback_timeout: 60s, transfer: {transfer} }}",
        "steps:",
    ]
    for i in range(1, steps + 1):
        lines += [
            f"  - id: s{i}",
            "    target: t",
            f"    probe: {MODULE}",
            "    with: { path: /tmp }",
            "    timeout: 120s",
        ]
    return "\n".join(lines) + "\n"


def inventory_text(site: Site, envs: int) -> str:
    host = {
        "host": site.sshd.host,
        "port": site.sshd.port,
        "user": site.sshd.user,
        "identity": str(site.sshd.identity),
        "known_hosts": str(site.sshd.known_hosts),
        "tmp_dir": str(site.remote_tmp),
    }
    envs_map = {f"env-{i:03d}": {"t": {"host": site.sshd.host}} for i in range(envs)}
    return json.dumps({"defaults": host, "environments": envs_map}, indent=1)


def uploads_in(audit: Path) -> dict[str, int]:
    """How many uploads of the newest run in ``audit`` went each way."""
    logs = sorted(audit.glob("*.jsonl"), key=lambda p: p.stat().st_mtime_ns)
    counts: dict[str, int] = {}
    if logs:
        for line in logs[-1].read_text().splitlines():
            record = json.loads(line)
            if record.get("event") == "deploy":
                counts[record.get("transfer", "?")] = counts.get(record.get("transfer", "?"), 0) + 1
    return counts


def one(site: Site, system: str, envs: int, steps: int, work: Path, binary: Path) -> Sample:
    env = dict(os.environ, CHAOSRUN_KEY=str(work / "keys" / "monitor_ed25519"))
    audit = work / "audit" / site.name
    if system == "floor":
        s = site.sshd
        cmd = [
            PY, str(FLOOR), "--host", s.host, "--port", str(s.port), "--user", s.user, "--identity", str(s.identity),
            "--known-hosts", str(s.known_hosts), "--binary", str(binary), "--tmp-dir", str(site.remote_tmp),
            "--envs", str(envs), "--steps", str(steps), "--bind", site.bind,
        ]  # fmt: skip
    else:
        scenario = site.scenarios[(steps, system)]
        cmd = [PY, str(RUNTIME), "--child-chaosrun", str(scenario), str(site.inventories[envs]), str(audit), str(envs)]
    before = counters(site.device)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    moved = counters(site.device) - before
    try:
        out = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Sample(site.name, envs, steps, system, None, moved, False, 0, res.stderr[-500:])
    ok = bool(out["ok"]) and res.returncode == 0
    note = "; ".join(out.get("errors", [])) if not ok else ""
    uploads = uploads_in(audit) if system != "floor" else {"raw": envs * steps}
    return Sample(site.name, envs, steps, system, out["seconds"], moved, ok, 0, note, out.get("cpu"), uploads)


def unpack_cost(binary: Path) -> dict[str, float]:
    """``gzip -dc`` of the packed module on this machine (what a target pays): ms of 15 runs."""
    data = binary.read_bytes()
    with tempfile.TemporaryDirectory() as d:
        packed = Path(d) / "m.gz"
        packed.write_bytes(gzip.compress(data, 6, mtime=0))
        times = []
        for _ in range(15):
            started = time.perf_counter()
            subprocess.run(f"gzip -dc < {packed} > {d}/m", shell=True, check=True)
            times.append(time.perf_counter() - started)
        return {
            "gzip_dc_ms": round(statistics.median(times) * 1000, 1),
            "gzip_dc_min_ms": round(min(times) * 1000, 1),
            "packed": packed.stat().st_size,
            "size": len(data),
        }


def machine_facts(binary: Path) -> dict[str, Any]:
    sys.path.insert(0, str(BENCH))
    from bench_runtime import versions  # the same facts as the runtime benchmark prints

    facts: dict[str, Any] = versions(None)
    facts["kernel"] = platform.release()
    facts["gzip"] = sh("gzip", "--version").splitlines()[0]
    facts.update(unpack_cost(binary))
    return facts


def inside(args: argparse.Namespace) -> int:
    """The measurement, run in the monitor's namespace."""
    from chaosrun.build import Builder, goarch_for
    from chaosrun.testing import local_sshd

    workloads = [tuple(int(n) for n in w.split("x")) for w in args.workloads.split(",")]
    built = Builder().build(MODULE, "linux", goarch_for(platform.machine()))  # warm cache: no compiler timed
    work = Path(tempfile.mkdtemp(prefix="chaosrun-bench-transfer-"))
    samples: list[Sample] = []
    try:
        with contextlib.ExitStack() as stack:
            loop_sshd = stack.enter_context(local_sshd(work))
            link_sshd = stack.enter_context(local_sshd(work, host=args.target_address, netns=args.target_ns))
            sites = [
                Site("loopback", "lo", "127.0.0.1", loop_sshd, work / "remote-tmp-loopback"),
                Site("100mbit", args.monitor_if, args.monitor_address, link_sshd, work / "remote-tmp-100mbit"),
            ]
            for site in sites:
                site.remote_tmp.mkdir()
                for envs, steps in {(1, 1), *workloads}:  # 1x1: the warm-up
                    inv = work / f"inventory-{site.name}-{envs}.json"
                    inv.write_text(inventory_text(site, envs))
                    site.inventories[envs] = inv
                    for system in SYSTEMS[:3]:
                        path = work / f"scenario-{site.name}-{steps}-{system}.yaml"
                        path.write_text(scenario_text(site, steps, system))
                        site.scenarios[(steps, system)] = path
            facts = machine_facts(built.path)
            print("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()), flush=True)
            print(f"module {MODULE}: {built.size} bytes; {args.reps} round(s); workloads {args.workloads}", flush=True)
            for site in sites:
                for system in SYSTEMS:  # untimed warm-up: page cache, sshd, the packed copy in the build cache
                    one(site, system, 1, 1, work, built.path)
                    _clean(site)
            for rnd in range(args.reps):
                order = SYSTEMS[rnd % len(SYSTEMS) :] + SYSTEMS[: rnd % len(SYSTEMS)]
                for site in sites:
                    for envs, steps in workloads:
                        for system in order:
                            sample = one(site, system, envs, steps, work, built.path)
                            sample.round = rnd
                            samples.append(sample)
                            left = _clean(site)
                            flag = "" if sample.ok else f"  FAILED {sample.note[-300:]!r}"
                            if left:
                                flag += f"  LEFT {left} file(s) on the target"
                            print(
                                f"round {rnd + 1} {site.name:<8} {envs:>2}x{steps:<2} {system:<5} "
                                f"run {_fmt(sample.run)}  {sample.bytes / (envs * steps) / 1e6:.2f} MB/step  "
                                f"{sample.uploads}{flag}",
                                flush=True,
                            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text, data = summarize(samples)
    print()
    print(text)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": facts, "summary": data, "samples": [asdict(s) for s in samples]}, indent=1)
        )
    return 0 if all(s.ok for s in samples) else 1


def _clean(site: Site) -> int:
    left = list(site.remote_tmp.iterdir())
    for path in left:
        path.unlink()
    return len(left)


def _fmt(value: float | None, unit: str = "s", digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(samples: list[Sample]) -> tuple[str, dict[str, Any]]:
    header = (
        "site", "workload", "system", "run median", "per step", "x raw", "x floor", "MB/step", "bytes x raw",
        "uploads", "CPU", "ok",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = []
    data: dict[str, Any] = {}
    keys = sorted({(s.site, s.envs, s.steps) for s in samples}, key=lambda k: (k[0] != "loopback", k[1], k[2]))
    for site, envs, steps in keys:
        picked = {sys_: [s for s in samples if (s.site, s.envs, s.steps, s.system) == (site, envs, steps, sys_)]
                  for sys_ in SYSTEMS}  # fmt: skip
        runs = {name: {s.round: s.run for s in got if s.run} for name, got in picked.items()}
        moved = {name: {s.round: s.bytes for s in got} for name, got in picked.items()}
        for system, got in picked.items():
            if not got:
                continue
            run = _median([s.run for s in got if s.run is not None])
            per_byte = _median([s.bytes / (envs * steps) for s in got])
            ratio = {
                base: _median([s.run / runs[base][s.round] for s in got if s.run and s.round in runs[base]])
                for base in ("raw", "floor")
            }
            bytes_ratio = _median([s.bytes / moved["raw"][s.round] for s in got if moved["raw"].get(s.round)])
            uploads: dict[str, int] = {}
            for s in got:
                for k, v in s.uploads.items():
                    uploads[k] = uploads.get(k, 0) + v
            share = "/".join(f"{k} {v // len(got)}" for k, v in sorted(uploads.items()))
            cpu = _median([s.cpu for s in got if s.cpu is not None])
            rows.append(
                (
                    site, f"{envs}x{steps}", system, _fmt(run), _fmt(run / steps * 1000 if run else None, " ms", 0),
                    _fmt(ratio["raw"], "x", 2), _fmt(ratio["floor"], "x", 2),
                    _fmt(per_byte / 1e6 if per_byte else None, "", 2), _fmt(bytes_ratio, "x", 2), share,
                    _fmt(cpu), str(all(s.ok for s in got)),
                )
            )  # fmt: skip
            data.setdefault(site, {}).setdefault(f"{envs}x{steps}", {})[system] = {
                "run_median": run,
                "per_step": run / steps if run else None,
                "vs_raw": ratio["raw"],
                "vs_floor": ratio["floor"],
                "bytes_per_step": per_byte,
                "bytes_vs_raw": bytes_ratio,
                "uploads": uploads,
                "cpu_median": cpu,
                "runs": [s.run for s in got],
                "ok": all(s.ok for s in got),
            }
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: tuple[str, ...]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    text = "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
    return text, data


def main() -> int:
    p = argparse.ArgumentParser(description="transfer raw|gzip|auto vs. the floor, on loopback and at 100 Mbit/s")
    p.add_argument("--quick", action="store_true", help=f"1 round of {QUICK_WORKLOADS[0][0]}x{QUICK_WORKLOADS[0][1]}")
    p.add_argument("--reps", type=int, default=None, help="rounds (default 3)")
    p.add_argument("--workloads", default=None, help="environments x steps, e.g. 1x10,10x3 (default)")
    p.add_argument("--json", help="write all samples and medians here")
    for hidden in ("--inside", "--monitor-ns", "--target-ns", "--monitor-if", "--monitor-address", "--target-address"):
        p.add_argument(hidden, help=argparse.SUPPRESS, action="store_true" if hidden == "--inside" else "store")
    args = p.parse_args()
    if args.inside:
        return inside(args)
    if os.geteuid() != 0:
        print("bench_transfer.py makes network namespaces: run it as root", file=sys.stderr)
        return 2
    reps = args.reps or (1 if args.quick else 3)
    workloads = args.workloads or ",".join(f"{e}x{s}" for e, s in (QUICK_WORKLOADS if args.quick else WORKLOADS))
    with network() as net:
        cmd = [
            "ip", "netns", "exec", net.monitor_ns, PY, __file__, "--inside", "--reps", str(reps), "--workloads",
            workloads, "--monitor-ns", net.monitor_ns, "--target-ns", net.target_ns, "--monitor-if", net.monitor_if,
            "--monitor-address", net.monitor_address, "--target-address", net.target_address,
            *(["--json", str(Path(args.json).resolve())] if args.json else []),
        ]  # fmt: skip
        return subprocess.run(cmd, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
