"""``--format csv`` and ``--format junit`` of verify (and run): the same report as the JSON,
for a grade book and for an author's CI, from a real verify against the test sshd."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET

from e2e_support import Exam

from chaosrun.reports import CSV_COLUMNS

SCENARIO = """\
version: 1
name: formats
targets:
  web: {host: 127.0.0.1}
verify:
  - {id: here, target: web, probe: file_exists, with: {path: "%(root)s/${env.name}"}, expect: result.exists, points: 3}
  - id: mode
    target: web
    probe: file_mode
    needs: [here]
    with: {path: "%(root)s/${env.name}"}
    expect: result.mode == "0755"
    points: 2
"""


def test_csv_and_junit_say_what_the_json_says(exam: Exam) -> None:
    (exam.sandbox / "cand-001").mkdir(mode=0o755)
    (exam.sandbox / "cand-001").chmod(0o755)
    scenario = exam.workdir / "f.yml"
    scenario.write_text(SCENARIO % {"root": exam.sandbox})
    inventory = exam.inventory(["web"], envs=("cand-001", "cand-002"))
    as_json = json.loads(exam.chaosrun("verify", scenario, "-i", inventory, "--format", "json").stdout)

    done = exam.chaosrun("verify", scenario, "-i", inventory, "--format", "csv")
    assert done.code == 1, done.stderr  # cand-002 has no folder
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert tuple(rows[0]) == CSV_COLUMNS
    got = {(r["environment"], r["step"]): (r["status"], r["points"], r["max_points"]) for r in rows}
    assert got == {
        ("cand-001", "here"): ("ok", "3", "3"),
        ("cand-001", "mode"): ("ok", "2", "2"),
        ("cand-002", "here"): ("failed", "0", "3"),
        ("cand-002", "mode"): ("skipped", "0", "2"),
    }
    want = {
        (e["name"], s["id"]): (s["status"], f"{s['points']:g}") for e in as_json["environments"] for s in e["steps"]
    }
    assert {k: v[:2] for k, v in got.items()} == want
    failed = next(r for r in rows if r["environment"] == "cand-002" and r["step"] == "here")
    assert failed["reason"].startswith("expect result.exists is false"), failed
    assert {r["integrity"] for r in rows} == {"ok"}

    done = exam.chaosrun("verify", scenario, "-i", inventory, "--format", "junit")
    root = ET.fromstring(done.stdout)
    assert (root.tag, root.get("tests"), root.get("failures"), root.get("skipped")) == ("testsuites", "4", "1", "1")
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"cand-001", "cand-002"}
    failure = suites["cand-002"].find("testcase[@name='here']/failure")
    assert failure is not None and failure.get("message", "").startswith("expect result.exists is false")
    assert failure.text == "points 0 of 3"
    assert suites["cand-002"].find("testcase[@name='mode']/skipped") is not None
    assert suites["cand-001"].find("properties/property[@name='points']").get("value") == "5.0"  # type: ignore[union-attr]
    assert exam.leftovers() == []
