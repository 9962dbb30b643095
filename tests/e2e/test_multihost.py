"""Several hosts per environment and an exam room of environments, over real interfaces.

Each test host is a network namespace with its own address and sshd (netns_support);
the monitor listens on the bridge address in the root namespace, so every callback
crosses a veth and ``monitor.bind``/``monitor.advertise`` are exercised for real.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Exam
from netns_support import ExamNetwork, exam_network

from chaosrun.run.audit import verify_file


@pytest.fixture
def network(tmp_path: Path) -> Iterator[ExamNetwork]:
    with exam_network(tmp_path, 2) as net:
        yield net


def host_entry(exam: Exam, server: object, **extra: object) -> dict[str, object]:
    s = server  # LocalSshd
    return {
        "host": s.host,
        "port": s.port,
        "user": s.user,  # type: ignore[attr-defined]
        "identity": str(s.identity),
        "known_hosts": str(s.known_hosts),  # type: ignore[attr-defined]
        "tmp_dir": str(exam.remote_tmp),
        **extra,
    }


TWO_ROLES = """\
version: 1
name: two-roles
targets:
  web: {host: 127.0.0.1}
  db: {host: 127.0.0.1}
monitor:
  bind: %(monitor)s
  advertise: %(monitor)s
vars:
  root: ""
  db_host: 127.0.0.1
  squatter: postgres
steps:
  - id: db_port_taken
    target: db
    chaos: occupy_port
    with: {port: 5432, address: "${target.host}", process_name: "${vars.squatter}"}
  - id: web_logs_full
    target: web
    chaos: fill_disk
    needs: []
    with: {path: "${vars.root}/web/var/log/big.log", size_mb: 2}
verify:
  - id: web_reaches_db
    target: web
    probe: port_open
    with: {host: "${vars.db_host}", port: 5432}
    expect: result.open
    points: 5
  - id: db_runs_squatter
    target: db
    probe: process_running
    with: {name: "${vars.squatter}"}
    expect: result.running
    points: 5
"""


def test_a_two_role_scenario_runs_across_namespaces_and_callbacks_cross_a_real_interface(
    exam: Exam, network: ExamNetwork
) -> None:
    (exam.sandbox / "web/var/log").mkdir(parents=True)
    web, db = network.hosts
    scenario = exam.workdir / "two.yaml"
    scenario.write_text(TWO_ROLES % {"monitor": network.monitor_address})
    inventory = exam.workdir / "inv.yml"
    inventory.write_text(
        json.dumps({"environments": {"cand-001": {"web": host_entry(exam, web.sshd), "db": host_entry(exam, db.sshd)}}})
    )
    squatter = "pg-" + secrets.token_hex(3)
    args = [
        "-i",
        str(inventory),
        "--plain",
        "--var",
        f"root={exam.sandbox}",
        "--var",
        f"db_host={db.address}",
        "--var",
        f"squatter={squatter}",
    ]
    r = exam.chaosrun("run", scenario, *args)
    pid = next(int(e["result"]["pid"]) for e in r.events("result") if e["step"] == "db_port_taken")
    try:
        assert r.code == 0, r.stdout + r.stderr
        peers = {e["step"]: e["peer"].rsplit(":", 1)[0] for e in r.events("callback_accepted")}
        assert peers == {"db_port_taken": db.address, "web_logs_full": web.address}
        listens = {e["address"].rsplit(":", 1)[0] for e in r.events("listen")}
        assert listens == {network.monitor_address}
        assert (exam.sandbox / "web/var/log/big.log").stat().st_size == 2 * 1024 * 1024
        g = exam.chaosrun("verify", scenario, *args)
        assert g.code == 0, g.stdout
        assert {e["step"]: e["points"] for e in g.events("step_end")} == {"web_reaches_db": 5, "db_runs_squatter": 5}
        assert verify_file(g.audit_path).ok  # type: ignore[arg-type]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # the squatter lived in db's namespace: the port is not taken in ours
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))


ROOM = """\
version: 1
name: exam-room
targets:
  host: {host: 127.0.0.1}
monitor:
  bind: %(monitor)s
  callback_timeout: 20s
vars:
  root: ""
steps:
  - id: slow
    probe: command
    when: env.name == "cand-slow"
    timeout: 3s
    with: {command: "sleep 60", timeout_ms: 120000}
  - id: mark
    probe: command
    needs: []
    with: {command: "echo ${env.name}"}
  - id: exists
    probe: file_exists
    with: {path: "${vars.root}/${env.name}"}
  - id: done
    probe: command
    with: {command: "true"}
"""


class Sampler(threading.Thread):
    """Peak RSS and open file descriptors of this process while a run goes on."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop, self.max_fds, self.max_rss_kb = threading.Event(), 0, 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.max_fds = max(self.max_fds, len(os.listdir("/proc/self/fd")))
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.max_rss_kb = max(self.max_rss_kb, int(line.split()[1]))
            time.sleep(0.05)


ROOM_SIZE = 1000
HOSTS = 40  # namespaces, each with its own sshd: 25 candidates per sshd
#: Environments at once. All 1,002 at once would be 1,002 SSH handshakes together on these 2
#: cores (the sshds' and the monitor's), past the 10 s connect timeout; an operator bounds
#: them with --parallel the same way (docs/guide-operators.md, "Parallelism").
PARALLEL = 250
#: The room's scenario up to ``mark``: one step per candidate (and ``slow``, skipped but for
#: cand-slow) keeps the test at ~1.5 minutes here; most of a step's cost is the sshd's and the
#: module's, not the monitor's, and what the test is about is a room of 1,000 at once.
ROOM_OF_1000 = ROOM.split("  - id: exists\n")[0]


def test_a_thousand_environments_run_at_once_and_one_failing_host_is_isolated(exam: Exam, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    (tmp_path / "net").mkdir()
    with exam_network(tmp_path / "net", HOSTS) as net:
        envs: dict[str, object] = {}
        for i in range(ROOM_SIZE):
            name = f"cand-{i:04d}"
            envs[name] = {"host": host_entry(exam, net.hosts[i % HOSTS].sshd)}
        envs["cand-slow"] = {"host": host_entry(exam, net.hosts[0].sshd)}
        envs["cand-down"] = {"host": host_entry(exam, net.hosts[0].sshd, host=net.unused_address(), port=22)}
        inventory = exam.workdir / "room.yml"
        inventory.write_text(json.dumps({"environments": envs}))
        scenario = exam.workdir / "room.yaml"
        scenario.write_text(ROOM_OF_1000 % {"monitor": net.monitor_address})
        sampler = Sampler()
        base_rss = int(
            next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:")).split()[1]
        )
        sampler.start()
        t0 = time.monotonic()
        r = exam.chaosrun(
            "run",
            scenario,
            "-i",
            inventory,
            "--parallel",
            str(PARALLEL),
            "--plain",
            "--var",
            f"root={exam.sandbox}",
        )
        took = time.monotonic() - t0
        sampler.stop.set()
        sampler.join()
    status: dict[str, dict[str, str]] = {}
    reasons: dict[str, str] = {}
    for e in r.events("step_end"):
        status.setdefault(e["env"], {})[e["step"]] = e["status"]
        if e["status"] != "ok" and e["status"] != "skipped":
            reasons.setdefault(e["env"], e.get("reason") or "")
    good = {f"cand-{i:04d}" for i in range(ROOM_SIZE)}
    want = {"slow": "skipped", "mark": "ok"}
    bad = sorted(n for n in good if status.get(n) != want)
    assert not bad, (len(bad), [(n, status.get(n), reasons.get(n)) for n in bad[:5]])
    assert status["cand-slow"] == {**want, "slow": "timeout"}
    assert status["cand-down"]["mark"] == "failed"
    assert r.code == 1  # two environments failed, on purpose
    assert verify_file(r.audit_path).ok  # type: ignore[arg-type]
    print(
        f"\n{ROOM_SIZE + 2} environments x 1 step: {took:.1f}s, peak fds {sampler.max_fds} (limit {soft}), "
        f"peak RSS {sampler.max_rss_kb / 1024:.0f} MiB (+{(sampler.max_rss_kb - base_rss) / 1024:.0f} MiB)"
    )
    # bounded: a few descriptors per environment, and memory well under a GiB
    assert sampler.max_fds < 8 * (ROOM_SIZE + 2)
    assert sampler.max_rss_kb - base_rss < 1024 * 1024
