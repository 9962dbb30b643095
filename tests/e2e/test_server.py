"""``chaosrun serve`` driving a whole exam over HTTP against the test sshd: tokens and roles,
an exam from text (lint errors as 422 with line and column), run, live events over SSE,
the report as JSON and CSV, a repair showing as points after verify, a suspect candidate,
the audit logs verified, and what survives a restart of the server (and what a server
killed mid-run leaves: an interrupted run, resumed and then restored)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_support import Exam
from server_support import Server, serving

ENVS = ("cand-001", "cand-002", "cand-003")

SCENARIO = """\
version: 1
name: room
targets:
  web: {host: 127.0.0.1}
vars:
  root: "%(root)s"
steps:
  - {id: lock, target: web, chaos: chmod, with: {path: "${vars.root}/${env.name}/key", mode: "0000"}}
  - {id: pause, target: web, probe: command, with: {command: "sleep %(pause)s"}}
verify:
  - id: key
    target: web
    probe: file_mode
    with: {path: "${vars.root}/${env.name}/key"}
    expect: result.mode == "0644"
    points: 2
  - id: honest
    target: web
    probe: command
    timeout: 2s
    # cand-002's machine stops the probe's binary: an integrity signal, not a grade
    with: {command: 'test "${env.name}" != cand-002 || kill -STOP $PPID; true'}
    expect: true
    points: 1
"""


@pytest.fixture
def server(exam: Exam, tmp_path: Path) -> Iterator[Server]:
    yield from serving(tmp_path)


def _exam_text(exam: Exam, pause: float = 0.2) -> dict[str, str]:
    for env in ENVS:
        (exam.sandbox / env).mkdir(exist_ok=True)
        (exam.sandbox / env / "key").write_text("k\n")
        (exam.sandbox / env / "key").chmod(0o644)
    inventory = exam.inventory(["web"], envs=ENVS)
    return {"scenario": SCENARIO % {"root": exam.sandbox, "pause": pause}, "inventory": inventory.read_text()}


def test_tokens_roles_and_lint_errors(server: Server, exam: Exam) -> None:
    with server.client("") as anonymous, server.client("chr_not-a-token") as wrong:
        assert anonymous.get("/v1/exams").status_code == 401
        refused = wrong.get("/v1/exams")
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        assert "error" in refused.json()
    with server.client(server.proctor) as proctor:
        assert proctor.get("/v1/whoami").json() == {"name": "pete", "role": "proctor"}
        assert proctor.get("/v1/exams").json() == {"exams": []}
        acting = proctor.post("/v1/exams", json=_exam_text(exam))
        assert acting.status_code == 403 and "only an operator" in acting.json()["error"]
    with server.client() as http:
        assert http.get("/v1/whoami").json() == {"name": "olga", "role": "operator"}
        bad = http.post("/v1/exams", json={"scenario": "version: 1\nname: x\nsteps:\n  - {id: a, chaos: nope}\n"})
        assert bad.status_code == 422, bad.text
        errors = bad.json()["errors"]
        assert errors and all(e["file"] == "scenario" and e["line"] >= 1 and e["column"] >= 1 for e in errors)
        assert any("nope" in e["message"] for e in errors), errors
        assert http.post("/v1/exams", content=b"{not json").status_code == 422
        assert http.post("/v1/exams", json={"scenario_path": "/etc/passwd"}).status_code == 422  # no --files
        assert http.get("/v1/exams").json() == {"exams": []}  # nothing half-made
        assert not list((server.data / "exams").glob("*")) if (server.data / "exams").exists() else True
        # a token kept only as its digest
        assert server.operator.encode() not in (server.data / "chaosrun.db").read_bytes()


def test_a_whole_exam_over_http(server: Server, exam: Exam) -> None:
    with server.client() as http:
        created = http.post("/v1/exams", json=_exam_text(exam, pause=1))
        assert created.status_code == 201, created.text
        ex = created.json()
        assert ex["state"] == "created" and ex["environments"] == 3 and ex["name"] == "room"
        assert created.headers["location"] == f"/v1/exams/{ex['id']}"

        bad = http.post(f"/v1/exams/{ex['id']}/run", json={"transfer": "zip"})
        assert bad.status_code == 422 and "transfer must be one of auto, raw, gzip" in bad.json()["error"]
        run = http.post(f"/v1/exams/{ex['id']}/run", json={"transfer": "gzip"})
        assert run.status_code == 202, run.text
        op = run.json()
        assert op["kind"] == "run" and op["state"] == "running" and op["params"]["by"] == "olga"
        busy = http.post(f"/v1/exams/{ex['id']}/verify", json={})
        assert busy.status_code == 409 and op["id"] in busy.json()["error"]
        assert http.get(f"/v1/exams/{ex['id']}").json()["state"] == "busy"

        events = server.events(ex["id"])
        kinds = [e["type"] for e in events]
        assert kinds[0] == "exam_created" and kinds[1] == "operation_started" and kinds[-1] == "operation_ended"
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        ended = {(e["env"], e["step"]): e for e in events if e["type"] == "step_ended"}
        assert set(ended) == {(env, step) for env in ENVS for step in ("lock", "pause")}
        assert all(e["status"] == "ok" for e in ended.values())
        done = server.wait(ex["id"], op["id"])
        assert done["state"] == "done" and done["ok"] is True and done["audit"].endswith(".jsonl")
        deploys = [json.loads(line) for line in Path(done["audit"]).read_text().splitlines()]
        assert {r["transfer"] for r in deploys if r["event"] == "deploy"} == {"gzip"}  # as the operator said
        assert all((exam.sandbox / env / "key").stat().st_mode & 0o777 == 0 for env in ENVS)

        # cand-001 repairs; verify grades everyone
        (exam.sandbox / "cand-001" / "key").chmod(0o644)
        verify = http.post(f"/v1/exams/{ex['id']}/verify", json={"strict": False})
        assert verify.status_code == 202, verify.text
        server.wait(ex["id"], verify.json()["id"])
        report = http.get(f"/v1/exams/{ex['id']}/report").json()
        assert report["section"] == "verify"
        by_env = {e["name"]: e for e in report["environments"]}
        assert by_env["cand-001"]["points"] == 3 and by_env["cand-003"]["points"] == 1
        assert by_env["cand-002"]["integrity"] == "suspect"
        assert {s["signal"] for s in by_env["cand-002"]["signals"]} == {"binary_stopped"}
        assert by_env["cand-001"]["integrity"] == by_env["cand-003"]["integrity"] == "ok"
        csv = http.get(f"/v1/exams/{ex['id']}/report", headers={"Accept": "text/csv"})
        assert csv.headers["content-type"].startswith("text/csv")
        assert csv.text.splitlines()[0].startswith("environment,step,status,points")
        assert sum(1 for line in csv.text.splitlines() if line.startswith("cand-")) == 6

        room = http.get(f"/v1/exams/{ex['id']}/room").json()
        rows = {r["name"]: r for r in room["environments"]}
        assert [s["id"] for s in room["steps"]] == ["lock", "pause", "key", "honest"]
        assert rows["cand-001"]["cells"]["key"]["points"] == 2 and rows["cand-002"]["integrity"] == "suspect"
        assert rows["cand-003"]["cells"]["lock"]["status"] == "ok"  # the run's cells stay beside the grading's
        detail = http.get(f"/v1/exams/{ex['id']}/environments/cand-002").json()
        assert {s["id"] for s in detail["steps"]} == {"key", "honest"}
        assert any(e["type"] == "env_graded" for e in detail["events"])
        assert detail["audit"] and all(r["env"] == "cand-002" for a in detail["audit"] for r in a["records"])
        assert http.get(f"/v1/exams/{ex['id']}/environments/cand-999").status_code == 404

        logs = http.get(f"/v1/exams/{ex['id']}/audit").json()["logs"]
        assert len(logs) == 2 and all(log["verification"]["ok"] for log in logs), logs
        raw = http.get(f"/v1/exams/{ex['id']}/audit/{logs[0]['name']}")
        assert raw.status_code == 200 and raw.text.startswith("{")
        assert http.get(f"/v1/exams/{ex['id']}/audit/..%2Fchaosrun.db").status_code == 404

        # restore one candidate
        restore = http.post(f"/v1/exams/{ex['id']}/restore", json={"limit": "cand-003"})
        assert server.wait(ex["id"], restore.json()["id"])["state"] == "done"
        assert (exam.sandbox / "cand-003" / "key").stat().st_mode & 0o777 == 0o644
        assert (exam.sandbox / "cand-002" / "key").stat().st_mode & 0o777 == 0
        last_seq = room["seq"]

    # a restart keeps the exam, its operations and its events
    server.stop()
    server.start()
    with server.client(server.proctor) as http:
        again = http.get(f"/v1/exams/{ex['id']}").json()
        assert again["state"] == "restored"
        assert [o["kind"] for o in http.get(f"/v1/exams/{ex['id']}/operations").json()["operations"]] == [
            "run",
            "verify",
            "restore",
        ]
        replay = server.events(ex["id"], after=last_seq)
        assert replay[0]["seq"] == last_seq + 1 and replay[-1]["type"] == "operation_ended"
        assert http.get(f"/v1/exams/{ex['id']}/report").json()["environments"][0]["name"] == "cand-001"
    with server.client() as http:  # nothing of ours left on the machines
        done = http.post(f"/v1/exams/{ex['id']}/restore", json={})
        assert server.wait(ex["id"], done.json()["id"])["state"] == "done"


def test_a_server_killed_mid_run_leaves_an_interrupted_run_that_resumes(server: Server, exam: Exam) -> None:
    with server.client() as http:
        ex = http.post("/v1/exams", json=_exam_text(exam, pause=20)).json()
        op = http.post(f"/v1/exams/{ex['id']}/run", json={}).json()
        _wait_for_step(http, ex["id"], "pause")
    server.stop(signal.SIGKILL)
    server.start()
    with server.client() as http:
        lost = http.get(f"/v1/exams/{ex['id']}/operations/{op['id']}").json()
        assert lost["state"] == "interrupted" and "server stopped" in lost["error"] and lost["audit"]
        assert http.get(f"/v1/exams/{ex['id']}").json()["state"] == "interrupted"
        resumed = http.post(f"/v1/exams/{ex['id']}/run", json={"resume": True})
        assert resumed.status_code == 202, resumed.text
        done = server.wait(ex["id"], resumed.json()["id"])
        assert done["state"] == "done" and done["ok"], done
        again = http.post(f"/v1/exams/{ex['id']}/run", json={"resume": True})
        assert again.status_code == 422 and "no interrupted run" in again.json()["error"]
        restore = http.post(f"/v1/exams/{ex['id']}/restore", json={})
        assert server.wait(ex["id"], restore.json()["id"])["state"] == "done"
        assert all((exam.sandbox / env / "key").stat().st_mode & 0o777 == 0o644 for env in ENVS)


def test_a_stop_ends_the_run_as_ctrl_c_does_and_seals_its_log(server: Server, exam: Exam) -> None:
    with server.client() as http:
        ex = http.post("/v1/exams", json=_exam_text(exam, pause=30)).json()
        op = http.post(f"/v1/exams/{ex['id']}/run", json={}).json()
        _wait_for_step(http, ex["id"], "pause")
        with server.client(server.proctor) as proctor:
            assert proctor.post(f"/v1/exams/{ex['id']}/operations/{op['id']}/stop").status_code == 403
        started = time.monotonic()
        assert http.post(f"/v1/exams/{ex['id']}/operations/{op['id']}/stop").status_code == 202
        done = server.wait(ex["id"], op["id"])
        assert done["state"] == "stopped" and time.monotonic() - started < 20
        rows = http.get(f"/v1/exams/{ex['id']}/room").json()["environments"]
        assert all(r["state"] != "running" for r in rows)  # nothing left looking under way
        assert {r["cells"]["pause"]["status"] for r in rows} <= {"interrupted", "failed", "timeout"}
        logs = http.get(f"/v1/exams/{ex['id']}/audit").json()["logs"]
        assert logs and all(log["verification"]["ok"] for log in logs), logs
        bad = http.post(f"/v1/exams/{ex['id']}/watch", json={"interval": "soon"})
        assert bad.status_code == 422 and "interval" in bad.json()["error"]
        assert http.post(f"/v1/exams/{ex['id']}/run", json={"seed": "x"}).status_code == 422
        assert http.post(f"/v1/exams/{ex['id']}/verify", json={"resume": True}).status_code == 422
        assert http.post(f"/v1/exams/{ex['id']}/dance", json={}).status_code == 404


def _wait_for_step(http: httpx.Client, exam: str, step: str, timeout: float = 60) -> None:
    """Until ``step`` has started in every environment (their events, as the detail view
    shows them): a stop before that would find some still waiting, not interrupted."""
    deadline = time.monotonic() + timeout
    for env in ENVS:
        while not any(
            e["type"] == "step_started" and e["step"] == step
            for e in http.get(f"/v1/exams/{exam}/environments/{env}").json()["events"]
        ):
            assert time.monotonic() < deadline, f"{step} never started in {env}"
            time.sleep(0.1)
