"""Benchmark: one exam shared by ``chaosrun worker`` processes through PostgreSQL.

On this machine only: a throwaway PostgreSQL cluster (Debian's package, as the tests start
it: tests/e2e/postgres_support.py), one local OpenSSH sshd on 127.0.0.1 standing for every
candidate machine, and ``chaosrun serve``. The exam: E environments x 3 steps (chmod, the
``command`` probe running ``true``, chmod), every environment on that one sshd.

Configurations, each on a fresh server (and database):

  sqlite      ``chaosrun serve --data`` alone: the run in the server's process, as before --db
  db-serve    ``serve --db`` with no worker attached: the server runs it as its own worker
  db-1w       ``serve --db`` and one ``chaosrun worker --parallel P``
  db-2w       ``serve --db`` and two workers, ``--parallel P/2`` each (the same total)

Figures: wall time from the POST of the run to its ``operation_ended`` on the event stream
(what a client sees), the events the stream carried, and which worker ran how many
environments. Two workers on one 2-core machine share its CPU with the server, PostgreSQL
and the sshd: this measures the protocol's overhead, not a fleet's speed-up.

Usage: .venv/bin/python bench/bench_workers.py [--envs 40] [--parallel 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from postgres_support import postgres_cluster  # noqa: E402
from server_support import Server, token  # noqa: E402

from chaosrun.server.pg import PostgresStore  # noqa: E402
from chaosrun.testing import local_sshd  # noqa: E402

SCENARIO = """\
version: 1
name: bench
targets:
  web: {host: 127.0.0.1}
vars:
  root: "%(root)s"
steps:
  - {id: lock, target: web, chaos: chmod, with: {path: "${vars.root}/${env.name}", mode: "0600"}}
  - {id: probe, target: web, probe: command, with: {command: "true"}}
  - {id: mark, target: web, chaos: chmod, with: {path: "${vars.root}/${env.name}", mode: "0644"}}
"""


def _inventory(sshd: Any, envs: list[str], uploads: Path) -> str:
    host = {"host": sshd.host, "port": sshd.port, "user": sshd.user, "identity": str(sshd.identity),
            "known_hosts": str(sshd.known_hosts), "tmp_dir": str(uploads)}  # fmt: skip
    return json.dumps({"defaults": host, "environments": {e: {"web": {"host": sshd.host}} for e in envs}})


def _worker(url: str, folder: Path, name: str, parallel: int) -> subprocess.Popen[str]:
    folder.mkdir(parents=True)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chaosrun",
            "worker",
            "--db",
            url,
            "--audit",
            str(folder / "audit"),
            "--name",
            name,
            "--parallel",
            str(parallel),
        ],  # fmt: skip
        stdout=(folder / "worker.log").open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )


def one(config: str, root: Path, sshd: Any, pg: Any, envs: int, parallel: int) -> dict[str, Any]:
    work = root / config
    sandbox, uploads = work / "sandbox", work / "uploads"
    sandbox.mkdir(parents=True)
    uploads.mkdir()
    names = [f"cand-{i:04}" for i in range(envs)]
    for name in names:
        (sandbox / name).write_text("x\n")
    url = pg.create_database() if config != "sqlite" else None
    db = ("--db", url) if url else ()
    server = Server(work / "data", dict(os.environ))
    server.operator = token(server.data, "olga", "operator", *db)
    server.proctor = token(server.data, "pete", "proctor", *db)
    workers: list[subprocess.Popen[str]] = []
    if url and config != "db-serve":
        count = 2 if config == "db-2w" else 1
        workers = [_worker(url, work / f"w{i}", f"w{i}", parallel // count) for i in range(count)]
        store = PostgresStore(url, work)
        while len(store.workers()) < count:
            time.sleep(0.1)
        store.close()
    server.start(*db)
    try:
        with server.client() as http:
            body = {"scenario": SCENARIO % {"root": sandbox}, "inventory": _inventory(sshd, names, uploads)}
            ex = http.post("/v1/exams", json=body).json()
            started = time.monotonic()
            http.post(f"/v1/exams/{ex['id']}/run", json={})
            events = server.events(ex["id"], timeout=1800)
            wall = time.monotonic() - started
        ended = events[-1]
        by = Counter(e.get("worker", "serve") for e in events if e["type"] == "env_ended")
        return {"config": config, "envs": envs, "steps": envs * 3, "parallel": parallel, "wall_s": round(wall, 2),
                "per_env_ms": round(wall / envs * 1000, 1), "events": len(events), "ok": ended.get("ok"),
                "envs_by_worker": dict(sorted(by.items()))}  # fmt: skip
    finally:
        server.stop()
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=int, default=40)
    parser.add_argument("--parallel", type=int, default=20)
    parser.add_argument("--configs", default="sqlite,db-serve,db-1w,db-2w")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        root = Path(tmp)
        os.environ["CHAOSRUN_KEY"] = str(root / "monitor_ed25519")
        with local_sshd(root) as sshd, postgres_cluster() as pg:
            one("warm-up", root, sshd, pg, 2, 2)  # the Go build cache, the key
            for config in args.configs.split(","):
                result = one(config, root, sshd, pg, args.envs, args.parallel)
                print(json.dumps(result), flush=True)
                results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
