"""Past one machine: ``chaosrun serve --db`` on a real PostgreSQL server (postgres_support.py)
and ``chaosrun worker`` processes running an exam's environments against the test sshd.

Two workers share one exam: every environment is run once, by one of them, and both take
some; the events they write reach the server's event stream. A worker killed with ``kill
-9`` mid-run: once its lease runs out the other takes its environments over, and no step
that ended runs again (counted in both workers' audit logs: one ``deploy`` per ended step).
A server with no worker attached runs the exam itself, stops it when asked, and resumes it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_support import Exam
from server_support import Server, serving

from chaosrun.auditcheck import verify_audit_log
from chaosrun.server.pg import PostgresStore

STEPS = ("lock", "pause", "mark")

SCENARIO = """\
version: 1
name: fleet
targets:
  web: {host: 127.0.0.1}
vars:
  root: "%(root)s"
steps:
  - {id: lock, target: web, chaos: chmod, with: {path: "${vars.root}/${env.name}/key", mode: "0000"}}
  # a pause the test can cut short: the file `fast` beside the candidates' folders
  - {id: pause, target: web, probe: command, with: {command: "test -e ${vars.root}/fast || sleep %(pause)s"}}
  - {id: mark, target: web, chaos: chmod, with: {path: "${vars.root}/${env.name}/mark", mode: "0600"}}
verify:
  - id: key
    target: web
    probe: file_mode
    with: {path: "${vars.root}/${env.name}/key"}
    expect: result.mode == "0644"
    points: 2
"""


@dataclass
class Worker:
    """One ``chaosrun worker`` process with its own audit folder and signing key."""

    name: str
    folder: Path
    proc: subprocess.Popen[str]

    @property
    def key(self) -> Path:
        return self.folder / "key"

    def logs(self) -> list[Path]:
        return sorted((self.folder / "audit").rglob("*.jsonl"))

    def records(self) -> list[dict[str, Any]]:
        out = []
        for path in self.logs():
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):  # the last line of a log whose worker was killed mid-write
                    out.append({**json.loads(line), "log": path.name})
        return out

    def output(self) -> str:
        return (self.folder / "worker.log").read_text()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
        w.proc.wait()


def _start(workers: list[Worker], url: str, tmp_path: Path, name: str, *extra: str) -> Worker:
    folder = tmp_path / name
    folder.mkdir()
    log = (folder / "worker.log").open("w")
    proc = subprocess.Popen(
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
            "--key",
            str(folder / "key"),
            *extra,
        ],  # fmt: skip
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    worker = Worker(name, folder, proc)
    workers.append(worker)
    return worker


def _attached(url: str, tmp_path: Path, *names: str, timeout: float = 30) -> None:
    store = PostgresStore(url, tmp_path)
    try:
        deadline = time.monotonic() + timeout
        while not set(names) <= {w["name"] for w in store.workers()}:
            assert time.monotonic() < deadline, f"workers {names} never attached"
            time.sleep(0.1)
    finally:
        store.close()


def _exam_text(exam: Exam, envs: list[str], pause: float, **host: str) -> dict[str, str]:
    for env in envs:
        (exam.sandbox / env).mkdir(exist_ok=True)
        for name in ("key", "mark"):
            (exam.sandbox / env / name).write_text("k\n")
            (exam.sandbox / env / name).chmod(0o644)
    inventory = exam.inventory(["web"], envs=envs, **host)
    return {"scenario": SCENARIO % {"root": exam.sandbox, "pause": pause}, "inventory": inventory.read_text()}


def _server(tmp_path: Path, url: str) -> Iterator[Server]:
    yield from serving(tmp_path, db=url)


def _ended(events: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """How often each (environment, step) ended, as the event stream says."""
    return Counter(
        (e["env"], e["step"])
        for e in events
        if e["type"] == "step_ended" and e["reason"] not in ("interrupted", "run interrupted before this step started")
    )


def _deploys(*ws: Worker) -> Counter[tuple[str, str]]:
    """How often each (environment, step)'s binary was deployed, in all these workers' logs."""
    return Counter(
        (r["env"], r["step"]) for w in ws for r in w.records() if r.get("event") == "deploy" and r["step"] in STEPS
    )


def test_two_workers_share_an_exam_and_run_each_environment_once(
    exam: Exam, pg_url: str, tmp_path: Path, workers: list[Worker]
) -> None:
    envs = [f"cand-{i}" for i in range(8)]
    one = _start(workers, pg_url, tmp_path, "w1", "--parallel", "2", "--transfer", "gzip")  # w1's link is slow
    two = _start(workers, pg_url, tmp_path, "w2", "--parallel", "2")
    _attached(pg_url, tmp_path, "w1", "w2")
    for server in _server(tmp_path, pg_url):
        with server.client() as http:
            ex = http.post("/v1/exams", json=_exam_text(exam, envs, pause=1)).json()
            refused = http.post(f"/v1/exams/{ex['id']}/run", json={"transfer": "raw"})
            assert refused.status_code == 422 and "its own --transfer" in refused.json()["error"]
            started = time.monotonic()
            op = http.post(f"/v1/exams/{ex['id']}/run", json={}).json()
            assert op["state"] == "running", op
            busy = http.post(f"/v1/exams/{ex['id']}/verify", json={})
            assert busy.status_code == 409, busy.text
            events = server.events(ex["id"])
            took = time.monotonic() - started
            done = server.wait(ex["id"], op["id"])
            assert done["state"] == "done" and done["ok"] is True, done
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            assert _ended(events) == Counter({(env, step): 1 for env in envs for step in STEPS})
            sent = {w.name: {r["transfer"] for r in w.records() if r.get("event") == "deploy"} for w in (one, two)}
            assert sent == {"w1": {"gzip"}, "w2": {"raw"}}, sent  # each worker's own; loopback: auto is raw
            by = {e["worker"] for e in events if e["type"] in ("step_started", "step_ended", "env_ended")}
            assert by == {"w1", "w2"}, by  # the server ran none of it itself
            rows = {r["name"]: r for r in http.get(f"/v1/exams/{ex['id']}/room").json()["environments"]}
            assert all(rows[env]["state"] == "done" and rows[env]["cells"]["mark"]["status"] == "ok" for env in envs)
            report = http.get(f"/v1/exams/{ex['id']}/report").json()
            assert [e["name"] for e in report["environments"]] == envs and report["ok"] is True

            # the grading goes to the workers too
            (exam.sandbox / "cand-3" / "key").chmod(0o644)
            verify = http.post(f"/v1/exams/{ex['id']}/verify", json={})
            assert server.wait(ex["id"], verify.json()["id"])["state"] == "done"
            graded = {e["name"]: e["points"] for e in http.get(f"/v1/exams/{ex['id']}/report").json()["environments"]}
            assert graded == {env: (2 if env == "cand-3" else 0) for env in envs}
            refused = http.post(f"/v1/exams/{ex['id']}/restore", json={})
            assert refused.status_code == 422 and "workers' machines" in refused.json()["error"]

    store = PostgresStore(pg_url, tmp_path)
    work = store.work(op["id"])
    store.close()
    assert {w["claimed_by"] for w in work} == {"w1", "w2"} and all(w["claims"] == 1 for w in work)
    assert _deploys(one, two) == Counter({(env, step): 1 for env in envs for step in STEPS})
    ran = {  # in the run's logs (not the verify's)
        w.name: {r["env"] for r in w.records() if r["event"] == "env_start" and "-verify" not in r["log"]}
        for w in (one, two)
    }
    assert not ran["w1"] & ran["w2"] and ran["w1"] | ran["w2"] == set(envs)
    for w in (one, two):  # each worker's logs, sealed with its own key
        assert w.logs() and all(verify_audit_log(p, w.key).ok for p in w.logs())
        w.proc.send_signal(signal.SIGTERM)
        assert w.proc.wait(30) == 0, w.output()
    assert all((exam.sandbox / env / "mark").stat().st_mode & 0o777 == 0o600 for env in envs)
    split = {w: len(envs) for w, envs in ran.items()}
    print(f"two workers, 8 environments x 3 steps (pause 1 s), --parallel 2 each: {took:.1f} s, {split}")


def test_a_worker_killed_mid_run_is_taken_over_and_no_ended_step_runs_again(
    exam: Exam, pg_url: str, tmp_path: Path, workers: list[Worker]
) -> None:
    envs = [f"cand-{i}" for i in range(6)]
    lease = ("--lease", "3s", "--parallel", "3")
    dead = _start(workers, pg_url, tmp_path, "w1", *lease)
    other = _start(workers, pg_url, tmp_path, "w2", *lease)
    _attached(pg_url, tmp_path, "w1", "w2")
    for server in _server(tmp_path, pg_url):
        with server.client() as http:
            # a monitor killed mid-step may leave its binary behind (restore removes it): not in the
            # folder the exam fixture checks
            uploads = tmp_path / "uploads"
            uploads.mkdir()
            ex = http.post("/v1/exams", json=_exam_text(exam, envs, pause=3, tmp_dir=str(uploads))).json()
            op = http.post(f"/v1/exams/{ex['id']}/run", json={}).json()
            deadline = time.monotonic() + 60
            while not any(r.get("event") == "deploy" and r.get("step") == "pause" for r in dead.records()):
                assert time.monotonic() < deadline and dead.proc.poll() is None, dead.output()
                time.sleep(0.05)
            time.sleep(1)  # lock ended, pause under way (3 s)
            dead.proc.kill()  # SIGKILL: no goodbye, its leases just stop being renewed
            dead.proc.wait()
            killed = time.monotonic()
            store = PostgresStore(pg_url, tmp_path)
            held = {w["env"] for w in store.work(op["id"]) if w["claimed_by"] == "w1" and w["state"] == "claimed"}
            ended_there = {  # on w1, before the kill
                (env, step)
                for env, steps in store.ended_steps(op["id"], envs).items()
                for step, row in steps.items()
                if row["worker"] == "w1"
            }
            assert held and ended_there, "w1 held nothing when it was killed"
            events = server.events(ex["id"], timeout=120)
            done = server.wait(ex["id"], op["id"])
            took = time.monotonic() - killed
            assert done["state"] == "done" and done["ok"] is True, (done, other.output())
            work = {w["env"]: w for w in store.work(op["id"])}
            store.close()
    assert all(work[env]["claimed_by"] == "w2" and work[env]["claims"] == 2 for env in held), work
    assert _ended(events) == Counter({(env, step): 1 for env in envs for step in STEPS})
    deploys = _deploys(dead, other)
    for key in ended_there:  # ended on w1, never run again by w2
        assert deploys[key] == 1, (key, deploys)
    # only the step in flight at the kill runs again (chaos modules are idempotent)
    twice = {key for key, n in deploys.items() if n > 1}
    assert twice <= {(env, "pause") for env in held} and all(n <= 2 for n in deploys.values()), deploys
    assert set(deploys) == {(env, step) for env in envs for step in STEPS}
    # the takeover's log names the dead worker's log it goes on from, and takes lock's end from it
    starts = [r for r in other.records() if r.get("event") == "run_start" and r.get("resumes")]
    assert starts and {s["resumes"] for s in starts} <= {Path(p).stem for p in (r["log"] for r in dead.records())}
    resumed = [r for r in other.records() if r.get("event") == "step_end" and r.get("done_in")]
    assert {(r["env"], r["step"]) for r in resumed} == {k for k in ended_there if k[0] in held}
    assert all((exam.sandbox / env / "mark").stat().st_mode & 0o777 == 0o600 for env in envs)
    assert all((exam.sandbox / env / "key").stat().st_mode & 0o777 == 0 for env in envs)
    print(
        f"kill -9 of the worker holding {len(held)} environments (lease 3 s), {len(ended_there)} steps ended there: "
        f"the run ended {took:.1f} s after the kill; twice: {sorted(twice)}"
    )


def test_a_server_with_no_worker_runs_the_exam_itself_stops_and_resumes_it(
    exam: Exam, pg_url: str, tmp_path: Path
) -> None:
    envs = ["cand-1", "cand-2"]
    for server in _server(tmp_path, pg_url):
        with server.client() as http:
            ex = http.post("/v1/exams", json=_exam_text(exam, envs, pause=30)).json()
            op = http.post(f"/v1/exams/{ex['id']}/run", json={}).json()
            deadline = time.monotonic() + 60
            while not any(
                e["type"] == "step_started" and e["step"] == "pause"
                for e in http.get(f"/v1/exams/{ex['id']}/environments/cand-1").json()["events"]
            ):
                assert time.monotonic() < deadline, server.output()
                time.sleep(0.1)
            asked = time.monotonic()
            assert http.post(f"/v1/exams/{ex['id']}/operations/{op['id']}/stop").status_code == 202
            stopped = server.wait(ex["id"], op["id"])
            assert stopped["state"] == "stopped" and time.monotonic() - asked < 20, stopped
            room = http.get(f"/v1/exams/{ex['id']}/room").json()
            assert all(r["state"] != "running" for r in room["environments"])
            # the stopped run goes on where it stopped: lock is not run again
            (exam.sandbox / "cand-1" / "key").chmod(0o644)  # were lock run again, this would go back to 0000
            (exam.sandbox / "fast").touch()
            resumed = http.post(f"/v1/exams/{ex['id']}/run", json={"resume": True})
            assert resumed.status_code == 202, resumed.text
            events = server.events(ex["id"], after=room["seq"])
            done = server.wait(ex["id"], resumed.json()["id"])
            assert done["state"] == "done" and done["ok"] is True, done
            assert (exam.sandbox / "cand-1" / "key").stat().st_mode & 0o777 == 0o644
            by = {e.get("worker") for e in events if e["type"] == "step_ended"}
            assert len(by) == 1 and next(iter(by)).startswith("serve-"), by
            logs = http.get(f"/v1/exams/{ex['id']}/audit").json()["logs"]
            assert len(logs) >= 2 and all(log["verification"]["ok"] for log in logs), logs


def test_worker_and_serve_want_a_postgresql_url(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from chaosrun.cli import main

    assert main(["worker", "--db", str(tmp_path / "x.db")]) == 2
    assert "--db wants a PostgreSQL URL" in capsys.readouterr().err
    assert main(["worker", "--db", "postgresql://nobody@127.0.0.1:1/x", "--lease", "0s"]) == 2
    assert "--lease" in capsys.readouterr().err
    assert main(["token", "list", "--db", "mysql://x"]) == 2
