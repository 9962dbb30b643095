"""``verify --watch``: grading again and again while a candidate repairs, against the test
sshd: when each probe first passed (from the end of the run), what failed again later."""

from __future__ import annotations

import json
import threading
import time

from e2e_support import Exam

SCENARIO = """\
version: 1
name: watch
targets:
  web: {host: 127.0.0.1}
steps:
  - {id: start, target: web, chaos: write_file, with: {path: "%(root)s/${env.name}/started", content: "x"}}
verify:
  - id: fixed
    target: web
    probe: file_exists
    with: {path: "%(root)s/${env.name}/fixed"}
    expect: result.exists
    points: 2
  - id: kept
    target: web
    probe: file_exists
    with: {path: "%(root)s/${env.name}/kept"}
    expect: result.exists
    points: 1
"""


def test_a_repair_made_during_the_watch_is_recorded_with_its_time(exam: Exam) -> None:
    for env in ("cand-1", "cand-2"):
        (exam.sandbox / env).mkdir()
        (exam.sandbox / env / "kept").write_text("k")  # passes at first, is broken later
    scenario = exam.workdir / "w.yml"
    scenario.write_text(SCENARIO % {"root": exam.sandbox})
    inventory = exam.inventory(["web"], envs=("cand-1", "cand-2"))
    ran = exam.chaosrun("run", scenario, "-i", inventory, "--plain")
    assert ran.code == 0, ran.stderr
    run_end = time.time()

    def repair() -> None:  # cand-1 fixes its fault 2 s into the watch, and breaks "kept"
        time.sleep(2)
        (exam.sandbox / "cand-1" / "fixed").write_text("f")
        (exam.sandbox / "cand-1" / "kept").unlink()

    helper = threading.Thread(target=repair)
    helper.start()
    started = time.time()
    done = exam.chaosrun(
        "verify", scenario, "-i", inventory, "--plain", "--watch", "1s", "--until", "6s", "--format", "json"
    )
    helper.join()
    took = time.time() - started
    report = json.loads(done.stdout)
    assert done.code == 1, done.stderr  # cand-2 never fixed anything
    watch = report["watch"]
    assert 3 <= watch["passes"] <= 8 and took < 15, (watch["passes"], took)
    assert watch["clock_from"].endswith(".jsonl")  # the run's log: the clock starts at its end
    fixed = watch["steps"]["cand-1/fixed"]
    assert fixed["passing"] and not fixed["regressed"]
    assert 2 <= fixed["time_to_fix"] <= (time.time() - run_end) + 1, fixed
    assert watch["steps"]["cand-2/fixed"] == {
        "time_to_fix": None, "first_passed_at": None, "regressed": False, "passes": 0, "passing": False,
    }  # fmt: skip
    kept = watch["steps"]["cand-1/kept"]
    assert kept["regressed"] and not kept["passing"] and kept["time_to_fix"] is not None, kept
    steps = {(e["name"], s["id"]): s for e in report["environments"] for s in e["steps"]}
    assert steps[("cand-1", "fixed")]["time_to_fix"] == fixed["time_to_fix"]
    assert steps[("cand-1", "fixed")]["points"] == 2 and steps[("cand-2", "fixed")]["points"] == 0
    # one audit log per pass, each a verify of its own
    logs = [p for p in (exam.workdir / "audit").glob("*-pass-*.jsonl")]
    assert len(logs) == watch["passes"], logs
    assert "watch pass 1: " in done.stderr and " of 4 probes pass" in done.stderr
    assert exam.leftovers() == []


def test_watch_refuses_reboot_and_bad_durations(exam: Exam) -> None:
    scenario = exam.workdir / "w.yml"
    scenario.write_text(SCENARIO % {"root": exam.sandbox})
    inventory = exam.inventory(["web"], envs=("cand-1",))
    done = exam.chaosrun("verify", scenario, "-i", inventory, "--watch", "1s", "--reboot")
    assert done.code == 2 and "does not take --reboot" in done.stderr
    done = exam.chaosrun("verify", scenario, "-i", inventory, "--watch", "soon")
    assert done.code == 2 and "--watch wants a duration" in done.stderr
    done = exam.chaosrun("verify", scenario, "-i", inventory, "--watch", "1s", "--since", str(scenario))
    assert done.code == 1 and "--since" in done.stderr and "cannot read it as an audit log" in done.stderr


def test_the_text_report_says_each_probes_time_to_fix(exam: Exam) -> None:
    (exam.sandbox / "cand-1").mkdir()
    (exam.sandbox / "cand-1" / "kept").write_text("k")
    scenario = exam.workdir / "w.yml"
    scenario.write_text(SCENARIO % {"root": exam.sandbox})
    inventory = exam.inventory(["web"], envs=("cand-1",))
    done = exam.chaosrun("verify", scenario, "-i", inventory, "--plain", "--watch", "1s", "--until", "1500ms")
    assert done.code == 1
    assert "the exam clock starts with the watch" in done.stderr  # no run log here
    assert "cand-1 fixed: never passed" in done.stdout
    assert "cand-1 kept: fixed after 0m0" in done.stdout, done.stdout
