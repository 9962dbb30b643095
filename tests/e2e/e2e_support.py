"""Helpers for end-to-end runs: an inventory that points a scenario's roles at the test
sshd, a per-test remote temp dir (where binaries must not be left), and a way to see
which TCP ports this process still listens on."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaosrun.cli import main
from chaosrun.lint import load_scenario
from chaosrun.testing import LocalSshd

REPO = Path(__file__).resolve().parents[2]


def listening_ports(pid: int | None = None) -> set[int]:
    """TCP ports in LISTEN state owned by process ``pid`` (default: this one)."""
    pid = pid or os.getpid()
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            next(fh)
            for line in fh:
                parts = line.split()
                if parts[3] == "0A" and parts[9] in inodes:
                    ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def servers_inventory(servers: Sequence[LocalSshd], folder: Path, role: str = "web") -> Path:
    """An inventory of one environment per server (``cand-0``, ``cand-1``...), each with
    ``role`` on that server and an upload folder of its own (``folder/remote-tmp-N``)."""
    envs = {}
    for i, s in enumerate(servers):
        upload = folder / f"remote-tmp-{i}"
        upload.mkdir(exist_ok=True)
        envs[f"cand-{i}"] = {
            role: {
                "host": s.host,
                "port": s.port,
                "user": s.user,
                "identity": str(s.identity),
                "known_hosts": str(s.known_hosts),
                "tmp_dir": str(upload),
            }
        }
    inventory = folder / "inventory.yml"
    inventory.write_text(json.dumps({"environments": envs}))
    return inventory


@dataclass
class RunResult:
    code: int
    stdout: str
    stderr: str
    audit: list[dict[str, Any]] = field(default_factory=list)
    audit_path: Path | None = None

    def events(self, name: str) -> list[dict[str, Any]]:
        """The records of one event, the guard pass's own steps left out (a run takes a
        baseline before its first chaos step: chaosrun.shortcuts)."""
        return [r for r in self.audit if r["event"] == name and not str(r.get("step", "")).startswith("guard:")]

    def step_end(self, step: str) -> dict[str, Any]:
        found = [r for r in self.events("step_end") if r["step"] == step]
        assert len(found) == 1, f"{step}: {found}"
        return found[0]


@dataclass
class Exam:
    """A candidate's machine for one test: the shared sshd, a sandbox, a remote temp dir."""

    sshd: LocalSshd
    sandbox: Path
    remote_tmp: Path
    workdir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def inventory(self, roles: Sequence[str], *, envs: Sequence[str] = ("cand-001",), **overrides: Any) -> Path:
        host = {
            "host": self.sshd.host,
            "port": self.sshd.port,
            "user": self.sshd.user,
            "identity": str(self.sshd.identity),
            "known_hosts": str(self.sshd.known_hosts),
            "tmp_dir": str(self.remote_tmp),
            **overrides,
        }
        data = {"defaults": host, "environments": {e: {r: {"host": host["host"]} for r in roles} for e in envs}}
        path = self.workdir / f"inventory-{len(list(self.workdir.glob('inventory-*')))}.yml"
        path.write_text(json.dumps(data))
        return path

    def roles_of(self, scenario: Path) -> list[str]:
        s = load_scenario(scenario)
        return sorted(set(s.targets) | {st.target for st in s.all_steps() if st.target})

    def chaosrun(self, *args: str | Path) -> RunResult:
        """Run the CLI in this process; return exit code, output and the newest audit log."""
        audit_dir = self.workdir / "audit"
        before = set(audit_dir.glob("*.jsonl")) if audit_dir.exists() else set()
        out, err = io.StringIO(), io.StringIO()
        argv = [str(a) for a in args]
        if argv and argv[0] in ("run", "verify") and "--audit" not in argv:
            argv += ["--audit", str(audit_dir)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        new = sorted(set(audit_dir.glob("*.jsonl")) - before) if audit_dir.exists() else []
        records = [json.loads(line) for line in new[-1].read_text().splitlines()] if new else []
        return RunResult(code, out.getvalue(), err.getvalue(), records, new[-1] if new else None)

    def sleeper(self, name: str) -> subprocess.Popen[bytes]:
        """A process the test owns, under a unique name, for kill/process modules to act on."""
        exe = self.workdir / name
        shutil.copy("/bin/sleep", exe)
        proc = subprocess.Popen([str(exe), "300"])
        self.processes.append(proc)
        return proc

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.remote_tmp.iterdir())
