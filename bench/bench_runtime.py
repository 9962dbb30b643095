"""Benchmark the run stage: chaosrun vs. the asyncssh floor vs. tuned Ansible, on loopback.

Every system does the same work per step against the same throwaway OpenSSH sshd on
127.0.0.1 (chaosrun.testing.local_sshd, ``SetEnv SHLVL=1``): copy the ``file_exists``
module binary to a fresh temp path, execute it, delete it. Each environment ("host") is an
inventory entry with its own SSH connection; steps run one after the other inside an
environment, environments run at once.

  chaosrun  ``chaosrun run`` (the CLI's ``main()``, plain reporter, audit log, signing) in
            a child process; the binary dials back and reports through the callback.
  floor     bench/floor_asyncssh.py: asyncssh on plain asyncio, listener + SFTP copy +
            exec with the step config on stdin + callback + delete, nothing else.
  ansible   ansible-playbook (installed into bench/.venv-ansible on first use): copy +
            command (the binary, config on stdin) + file state=absent per step; tuned:
            pipelining, ControlMaster/ControlPersist (one master per host), forks >= hosts,
            gathering explicit, strategy free, interpreter fixed (no discovery).

Workloads (environments x steps): 1x1, 1x10, 20x3, 100x1, interleaved over repetitions
(the order of the systems rotates each round). The module is built before anything is
timed (warm cache), so the compiler is not measured.

Figures:
  run      seconds inside the child process, imports excluded: chaosrun's main() call, the
           floor's asyncio main. This is what the 1.3x target compares.
  process  wall seconds of the whole child process (interpreter start, imports, run): what
           an operator waits for; the only figure Ansible has.
  rss      peak resident set size of the child process (getrusage ru_maxrss).

Usage: .venv/bin/python bench/bench_runtime.py [--quick] [--reps N] [--only chaosrun,floor]
       [--workloads 1x10,20x3] [--json results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
FLOOR = BENCH / "floor_asyncssh.py"
ANSIBLE_VENV = BENCH / ".venv-ansible"
ANSIBLE_REQUIREMENT = "ansible-core==2.19.*"
PY = sys.executable
MODULE = "file_exists"
WORKLOADS = [(1, 1), (1, 10), (20, 3), (100, 1)]
SYSTEMS = ["chaosrun", "floor", "ansible", "floor-mr4"]  # floor-mr4: only with --only
ENGINES: dict[str, str] = {}  # system name -> folder put first on PYTHONPATH (--engine)


# -- child: chaosrun ----------------------------------------------------------------------


def child_chaosrun(scenario: str, inventory: str, audit: str, parallel: int) -> None:
    """Run the CLI's main() in this (fresh) process; print timing and peak RSS as JSON."""
    # Import everything the run uses before the clock starts (process time counts them).
    import rich.console  # noqa: F401
    import trio  # noqa: F401

    import chaosrun.run.progress  # noqa: F401
    import chaosrun.run.runner  # noqa: F401
    import chaosrun.run.ssh  # noqa: F401
    from chaosrun.cli import main

    argv = ["run", scenario, "-i", inventory, "--plain", "--seed", "1", "--audit", audit, "--parallel", str(parallel)]
    sink = open(os.devnull, "w")  # noqa: SIM115
    cpu = time.process_time()
    started = time.perf_counter()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        code = main(argv)
    seconds = time.perf_counter() - started
    out = {
        "seconds": seconds,
        "cpu": time.process_time() - cpu,
        "ok": code == 0,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    print(json.dumps(out), file=sys.__stdout__, flush=True)


# -- setup ----------------------------------------------------------------------------------


def ensure_ansible() -> Path:
    """ansible-playbook from bench/.venv-ansible, installed there (pip) if missing."""
    playbook = ANSIBLE_VENV / "bin" / "ansible-playbook"
    if not playbook.exists():
        print(f"installing {ANSIBLE_REQUIREMENT} into {ANSIBLE_VENV} ...", flush=True)
        subprocess.run([PY, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        subprocess.run([str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q", ANSIBLE_REQUIREMENT], check=True)
    return playbook


def versions(playbook: Path | None) -> dict[str, str]:
    import asyncssh
    import trio

    out = {
        "python": platform.python_version(),
        "asyncssh": asyncssh.__version__,
        "trio": trio.__version__,
        "cpus": str(os.cpu_count()),
    }
    ssh = subprocess.run(["/usr/sbin/sshd", "-V"], capture_output=True, text=True)
    out["openssh"] = (ssh.stderr or ssh.stdout).split(",")[0].strip()
    with contextlib.suppress(OSError):
        out["os"] = "Debian " + Path("/etc/debian_version").read_text().strip()
    if playbook is not None:
        res = subprocess.run([str(playbook), "--version"], capture_output=True, text=True)
        out["ansible"] = res.stdout.splitlines()[0].strip() if res.stdout else "?"
    return out


@dataclass
class Fixture:
    sshd: Any
    work: Path
    remote_tmp: Path
    binary: Path
    sha256: str
    scenarios: dict[int, Path] = field(default_factory=dict)
    inventories: dict[int, Path] = field(default_factory=dict)


def scenario_text(steps: int) -> str:
    lines = [
        "version: 1",
        "name: bench",
        "description: benchmark, file_exists probes in sequence",
        "targets:",
        "  t: { host: 127.0.0.1 }",
        "monitor: { bind: 127.0.0.1, callback_timeout: 30s }",
        "steps:",
    ]
    for i in range(1, steps + 1):
        lines += [f"  - id: s{i}", "    target: t", f"    probe: {MODULE}", "    with: { path: /tmp }"]
    return "\n".join(lines) + "\n"


def inventory_text(fx: Fixture, envs: int) -> str:
    host = {
        "host": fx.sshd.host,
        "port": fx.sshd.port,
        "user": fx.sshd.user,
        "identity": str(fx.sshd.identity),
        "known_hosts": str(fx.sshd.known_hosts),
        "tmp_dir": str(fx.remote_tmp),
    }
    data = {"defaults": host, "environments": {f"env-{i:03d}": {"t": {"host": fx.sshd.host}} for i in range(envs)}}
    return json.dumps(data, indent=1)


# -- ansible --------------------------------------------------------------------------------


def ansible_files(fx: Fixture, envs: int, steps: int, run_dir: Path) -> tuple[Path, Path, Path]:
    cp = run_dir / "cp"
    cp.mkdir(parents=True)
    inv = run_dir / "hosts.ini"
    rows = ["[envs]"]
    for i in range(envs):
        # Its own ControlPath per inventory host: every environment its own SSH connection
        # (the default path hashes host/port/user, which all entries share here).
        rows.append(
            f"env-{i:03d} ansible_host={fx.sshd.host} ansible_port={fx.sshd.port} ansible_user={fx.sshd.user} "
            f"ansible_control_path={cp}/{i:03d}"
        )
    inv.write_text("\n".join(rows) + "\n")
    cfg = run_dir / "ansible.cfg"
    cfg.write_text(
        "\n".join(
            [
                "[defaults]",
                f"forks = {max(envs, 5)}",
                "gathering = explicit",
                "strategy = free",
                "interpreter_python = /usr/bin/python3",
                f"private_key_file = {fx.sshd.identity}",
                "retry_files_enabled = False",
                f"remote_tmp = {fx.remote_tmp}/.ansible-remote",
                f"local_tmp = {run_dir}/local-tmp",
                "stdout_callback = ansible.builtin.default",
                "[ssh_connection]",
                "pipelining = True",
                "ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o IdentitiesOnly=yes "
                f"-o UserKnownHostsFile={fx.sshd.known_hosts} -o StrictHostKeyChecking=yes -o BatchMode=yes",
                "transfer_method = sftp",
            ]
        )
        + "\n"
    )
    config_line = json.dumps({"v": 1})  # the binary reads it, finds no monitor and exits (status 2)
    tasks: list[dict[str, Any]] = []
    for s in range(1, steps + 1):
        dest = f"{fx.remote_tmp}/ans-{{{{ inventory_hostname }}}}-{s}"
        tasks += [
            {"name": f"copy {s}", "ansible.builtin.copy": {"src": str(fx.binary), "dest": dest, "mode": "0700"}},
            {
                "name": f"exec {s}",
                "ansible.builtin.command": {"argv": [dest], "stdin": config_line},
                "register": f"r{s}",
                "failed_when": f"r{s}.rc not in [0, 1, 2]",
                "changed_when": False,
            },
            {"name": f"delete {s}", "ansible.builtin.file": {"path": dest, "state": "absent"}},
        ]
    play = [{"hosts": "envs", "gather_facts": False, "tasks": tasks}]
    book = run_dir / "play.yml"
    book.write_text(json.dumps(play, indent=1))  # JSON is YAML
    return inv, cfg, book


def stop_masters(run_dir: Path) -> None:
    """Ask this run's ControlMaster processes to exit (they are ours: started by this run)."""
    for sock in sorted((run_dir / "cp").glob("*")):
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True, check=False)


# -- runs -----------------------------------------------------------------------------------


@dataclass
class Sample:
    system: str
    envs: int
    steps: int
    run: float | None  # in-process seconds (None for ansible)
    process: float  # wall seconds of the child process
    maxrss_kb: int | None
    ok: bool
    note: str = ""
    cpu: float | None = None  # CPU seconds (user+sys, all threads) of the child during "run"
    round: int = 0


def _child_env(fx: Fixture) -> dict[str, str]:
    env = dict(os.environ)
    env["CHAOSRUN_KEY"] = str(fx.work / "keys" / "monitor_ed25519")
    env.pop("PYTHONTRACEMALLOC", None)
    return env


def run_chaosrun(fx: Fixture, envs: int, steps: int, system: str = "chaosrun", engine: str | None = None) -> Sample:
    """``engine``: a folder holding another ``chaosrun`` package (``--engine``), put first on
    the child's PYTHONPATH, to compare versions of the engine in one go."""
    audit = fx.work / "audit"
    cmd = [PY, __file__, "--child-chaosrun", str(fx.scenarios[steps]), str(fx.inventories[envs]), str(audit), str(envs)]
    env = _child_env(fx)
    if engine:
        env["PYTHONPATH"] = engine
    started = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    try:
        out = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Sample(system, envs, steps, None, wall, None, False, res.stderr[-500:])
    return Sample(
        system,
        envs,
        steps,
        out["seconds"],
        wall,
        out["maxrss_kb"],
        out["ok"] and res.returncode == 0,
        cpu=out.get("cpu"),
    )


def run_floor(fx: Fixture, envs: int, steps: int, system: str = "floor", extra: tuple[str, ...] = ()) -> Sample:
    s = fx.sshd
    cmd = [
        PY,
        str(FLOOR),
        "--host",
        s.host,
        "--port",
        str(s.port),
        "--user",
        s.user,
        "--identity",
        str(s.identity),
        "--known-hosts",
        str(s.known_hosts),
        "--binary",
        str(fx.binary),
        "--tmp-dir",
        str(fx.remote_tmp),
        "--envs",
        str(envs),
        "--steps",
        str(steps),
        *extra,
    ]
    started = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(fx))
    wall = time.perf_counter() - started
    try:
        out = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Sample(system, envs, steps, None, wall, None, False, res.stderr[-500:])
    errors = "; ".join(out.get("errors", []))
    return Sample(system, envs, steps, out["seconds"], wall, out["maxrss_kb"], out["ok"], errors, cpu=out.get("cpu"))


def run_ansible(fx: Fixture, playbook: Path, envs: int, steps: int) -> Sample:
    run_dir = Path(tempfile.mkdtemp(prefix="ans-", dir=fx.work))
    inv, cfg, book = ansible_files(fx, envs, steps, run_dir)
    env = _child_env(fx)
    env.update({"ANSIBLE_CONFIG": str(cfg), "ANSIBLE_HOME": str(run_dir / "home"), "ANSIBLE_NOCOLOR": "1"})
    started = time.perf_counter()
    try:
        res = subprocess.run(
            [str(playbook), "-i", str(inv), str(book)], capture_output=True, text=True, env=env, cwd=run_dir
        )
        wall = time.perf_counter() - started
    finally:
        stop_masters(run_dir)
    # Every host must have run all 3 tasks per step: "ok=N" in the PLAY RECAP, nothing failed.
    recap = re.findall(r"^(env-\d+)\s*:\s*ok=(\d+)\s.*?failed=(\d+)", res.stdout, re.M)
    complete = len(recap) == envs and all(int(ok) == 3 * steps and failed == "0" for _, ok, failed in recap)
    note = "" if res.returncode == 0 and complete else (res.stdout[-800:] + res.stderr[-400:])
    return Sample("ansible", envs, steps, None, wall, None, res.returncode == 0 and complete, note)


def leftovers(fx: Fixture) -> list[str]:
    return sorted(p.name for p in fx.remote_tmp.iterdir() if p.name != ".ansible-remote")


# -- report ---------------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: float | None, unit: str = "s", digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def summarize(
    samples: list[Sample], workloads: list[tuple[int, int]], systems: list[str]
) -> tuple[str, dict[str, Any]]:
    """One row per workload and system. ``x floor`` is the median over rounds of this
    system's run time divided by the floor's in the same round (robust to load that comes
    and goes on a shared machine); ``ansible / it`` compares whole-process wall times."""
    rows = []
    data: dict[str, Any] = {}
    header = (
        "workload",
        "system",
        "run median",
        "run min",
        "x floor (paired)",
        "process median",
        "ansible / it",
        "CPU (run)",
        "peak RSS",
        "n",
        "ok",
    )
    for envs, steps in workloads:
        key = f"{envs}x{steps}"
        data[key] = {}
        picked = {s: [x for x in samples if x.system == s and x.envs == envs and x.steps == steps] for s in systems}
        floor_by_round = {x.round: x.run for x in picked.get("floor", []) if x.run}
        ansible_proc = median([x.process for x in picked.get("ansible", [])])
        for system in systems:
            got = picked[system]
            if not got:
                continue
            run = median([x.run for x in got if x.run is not None])
            proc = median([x.process for x in got])
            cpu = median([x.cpu for x in got if x.cpu is not None])
            rss = max((x.maxrss_kb for x in got if x.maxrss_kb), default=None)
            pairs = [x.run / floor_by_round[x.round] for x in got if x.run and floor_by_round.get(x.round)]
            ratio_floor = median(pairs)
            ratio_ans = ansible_proc / proc if ansible_proc and proc and system != "ansible" else None
            min_run = min((x.run for x in got if x.run is not None), default=None)
            rss_text = "-" if rss is None else f"{rss / 1024:.0f} MiB"
            rows.append(
                (
                    key,
                    system,
                    fmt(run),
                    fmt(min_run),
                    fmt(ratio_floor, "x", 2),
                    fmt(proc),
                    fmt(ratio_ans, "x", 1),
                    fmt(cpu),
                    rss_text,
                    str(len(got)),
                    str(all(x.ok for x in got)),
                )
            )
            data[key][system] = {
                "run_median": run,
                "run_min": min_run,
                "vs_floor_paired": ratio_floor,
                "process_median": proc,
                "ansible_over_this": ratio_ans,
                "cpu_median": cpu,
                "peak_rss_kb": rss,
                "n": len(got),
                "runs": [x.run for x in got],
                "processes": [x.process for x in got],
                "ok": all(x.ok for x in got),
            }
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"  # noqa: E731
    text = "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
    return text, data


# -- main -----------------------------------------------------------------------------------


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child-chaosrun":
        child_chaosrun(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return 0
    p = argparse.ArgumentParser(description="chaosrun vs. asyncssh floor vs. Ansible, on a loopback sshd")
    p.add_argument("--quick", action="store_true", help="2 rounds (Ansible: 1), for a quick look")
    p.add_argument("--reps", type=int, default=None, help="rounds (default 7; Ansible gets min(rounds, 3))")
    p.add_argument(
        "--only",
        default="chaosrun,floor,ansible",
        help="systems, comma-separated: chaosrun,floor,ansible (and floor-mr4: the floor with chaosrun's "
        "4 SFTP writes in flight)",
    )
    p.add_argument("--workloads", default=",".join(f"{e}x{s}" for e, s in WORKLOADS), help="e.g. 1x10,20x3")
    p.add_argument("--json", type=Path, help="write all samples and medians here")
    p.add_argument(
        "--engine",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="also run the chaosrun package found in DIR (a copy of engine/), as system chaosrun-LABEL",
    )
    args = p.parse_args()
    systems = [s for s in SYSTEMS if s in args.only.split(",")]
    for item in args.engine:
        label, _, folder = item.partition("=")
        ENGINES[f"chaosrun-{label}"] = str(Path(folder).resolve())
        systems.insert(0, f"chaosrun-{label}")
    workloads = [tuple(int(n) for n in w.split("x")) for w in args.workloads.split(",")]
    reps = args.reps or (2 if args.quick else 7)
    ansible_reps = 1 if args.quick else min(reps, 3)

    need_fds = max(e for e, _ in workloads) * 8 + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need_fds:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need_fds, 4096)), hard))

    playbook = ensure_ansible() if "ansible" in systems else None

    from chaosrun.build import Builder, goarch_for
    from chaosrun.testing import local_sshd

    binary = Builder().build(MODULE, "linux", goarch_for(platform.machine()))  # warm the cache now
    work = Path(tempfile.mkdtemp(prefix="chaosrun-bench-"))
    samples: list[Sample] = []
    try:
        with local_sshd(work) as sshd:
            remote_tmp = work / "remote-tmp"
            remote_tmp.mkdir()
            fx = Fixture(sshd, work, remote_tmp, binary.path, binary.sha256)
            for envs, steps in {(1, 1), *workloads}:  # 1x1: the warm-up
                fx.scenarios.setdefault(steps, work / f"bench-{steps}.yaml").write_text(scenario_text(steps))
                fx.inventories.setdefault(envs, work / f"inventory-{envs}.json").write_text(inventory_text(fx, envs))
            info = versions(playbook)
            print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
            print(
                f"module {MODULE}: {binary.size} bytes, cached={binary.cached}; sshd 127.0.0.1:{sshd.port}; "
                f"{reps} rounds (ansible {ansible_reps})",
                flush=True,
            )
            # One untimed warm-up of each system (page cache, sshd, ~/.cache, pyc files).
            for system in systems:
                _one(system, fx, playbook, 1, 1)
            for rnd in range(reps):
                order = systems[rnd % len(systems) :] + systems[: rnd % len(systems)]
                for envs, steps in workloads:
                    for system in order:
                        if system == "ansible" and rnd >= ansible_reps:
                            continue
                        sample = _one(system, fx, playbook, envs, steps)
                        sample.round = rnd
                        samples.append(sample)
                        left = leftovers(fx)
                        flag = "" if sample.ok else f"  FAILED {sample.note[-300:]!r}"
                        if left:
                            flag += f"  LEFT {len(left)} file(s) on the target"
                            for name in left:
                                (remote_tmp / name).unlink()
                        print(
                            f"round {rnd + 1} {envs:>3}x{steps:<2} {system:<8} run {fmt(sample.run)}  "
                            f"process {fmt(sample.process)}{flag}",
                            flush=True,
                        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text, data = summarize(samples, workloads, systems)
    print()
    print(text)
    if args.json:
        args.json.write_text(
            json.dumps({"machine": info, "summary": data, "samples": [s.__dict__ for s in samples]}, indent=1)
        )
    return 0 if all(s.ok for s in samples) else 1


def _one(system: str, fx: Fixture, playbook: Path | None, envs: int, steps: int) -> Sample:
    if system == "chaosrun":
        return run_chaosrun(fx, envs, steps)
    if system in ENGINES:
        return run_chaosrun(fx, envs, steps, system, ENGINES[system])
    if system == "floor":
        return run_floor(fx, envs, steps)
    if system == "floor-mr4":
        return run_floor(fx, envs, steps, system, ("--max-requests", "4"))
    assert playbook is not None
    return run_ansible(fx, playbook, envs, steps)


if __name__ == "__main__":
    sys.exit(main())
