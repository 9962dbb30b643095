"""-v, -q and --log-file on a real run against the test sshd: what an operator reads."""

from __future__ import annotations

from e2e_support import Exam

SCENARIO = """\
version: 1
name: logging
targets:
  web: {host: 127.0.0.1}
verify:
  - {id: here, target: web, probe: file_exists, with: {path: "%(root)s"}, expect: result.exists, points: 1}
"""


def test_verbose_shows_every_audit_record_and_the_log_file_keeps_them(exam: Exam) -> None:
    scenario = exam.workdir / "s.yml"
    scenario.write_text(SCENARIO % {"root": exam.sandbox})
    inventory = exam.inventory(["web"])
    log = exam.workdir / "chaosrun.log"

    done = exam.chaosrun("verify", scenario, "-i", inventory, "--plain", "-v", "--log-file", log)
    assert done.code == 0, done.stderr
    events = [r["event"] for r in done.audit]
    for event in ("run_start", "listen", "deploy", "exec", "result", "step_end", "run_end"):
        assert event in events
        assert any(f" {event}" in line for line in done.stderr.splitlines() if line.startswith("chaosrun: ")), event
    deploy = next(line for line in done.stderr.splitlines() if " deploy " in line)
    assert deploy.startswith("chaosrun: cand-001 here deploy ") and '"module": "file_exists"' not in deploy
    assert 'module="file_exists"' in deploy and "sha256=" in deploy
    in_file = log.read_text()
    assert in_file.count(" DEBUG ") >= len(done.audit)  # every record, and the command line
    assert "cand-001 here step_end" in in_file and "exit status 0" in in_file

    done = exam.chaosrun("verify", scenario, "-i", inventory, "--plain")
    assert done.code == 0 and " deploy " not in done.stderr and "here ok" in done.stderr  # progress lines

    done = exam.chaosrun("verify", scenario, "-i", inventory, "-q")
    assert (done.code, done.stderr) == (0, "")  # the report on stdout, nothing else
    assert "1/1" in done.stdout
