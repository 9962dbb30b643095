"""``--limit`` on a real run: re-running only the environments a past run failed, each with
the fault it had, against the test sshd."""

from __future__ import annotations

import json
from pathlib import Path

from e2e_support import Exam

SCENARIO = """\
version: 1
name: limit
targets:
  web: {host: 127.0.0.1}
vars:
  root: "%(root)s"
steps:
  - id: lock
    target: web
    chaos: chmod
    with: {path: "${vars.root}/${env.name}/key", mode: "0600"}
  - id: pick
    spread: true
    one_of:
      - {id: two, target: web, chaos: chmod, with: {path: "${vars.root}/${env.name}/key", mode: "0640"}}
      - {id: three, target: web, chaos: chmod, with: {path: "${vars.root}/${env.name}/key", mode: "0604"}}
"""

ENVS = ("cand-001", "cand-002", "cand-003")


def _ran(result: object, kind: str = "step_start") -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in result.events(kind):  # type: ignore[attr-defined]
        out.setdefault(r["env"], set()).add(r["step"])
    return out


def test_limit_failed_reruns_exactly_the_failed_environments_with_their_own_picks(exam: Exam) -> None:
    for env in ("cand-001", "cand-003"):  # cand-002 has no key: its first step fails
        (exam.sandbox / env).mkdir()
        (exam.sandbox / env / "key").write_text("k\n")
    scenario = exam.workdir / "limit.yml"
    scenario.write_text(SCENARIO % {"root": exam.sandbox})
    inventory = exam.inventory(["web"], envs=ENVS)
    first = exam.chaosrun("run", scenario, "-i", inventory, "--plain", "--seed", "7")
    assert first.code == 1, first.stderr
    ends = {r["env"]: r["ok"] for r in first.events("env_end")}
    assert ends == {"cand-001": True, "cand-002": False, "cand-003": True}
    picks = {env: steps - {"lock"} for env, steps in _ran(first).items() if env != "cand-002"}

    # cand-002 repaired by the operator; only it runs again
    (exam.sandbox / "cand-002").mkdir()
    (exam.sandbox / "cand-002" / "key").write_text("k\n")
    again = exam.chaosrun("run", scenario, "-i", inventory, "--plain", "--limit", "@failed")
    assert again.code == 0, again.stdout + again.stderr
    assert "seed 7, the past run's" in again.stderr  # no --seed: the failed run's own
    assert "--limit @failed: 1 of 3 environments (cand-002)" in again.stderr
    assert {r["env"] for r in again.events("env_end")} == {"cand-002"}
    # spread deals the options over the whole inventory, and the limit applies after: each
    # environment gets what the plan of all three gives it, in every run
    full = exam.chaosrun("plan", scenario, "-i", inventory, "--seed", "7", "--format", "json")
    dealt = {e["name"]: e["picks"]["pick"] for e in json.loads(full.stdout)["environments"]}
    assert sorted(dealt.values()) in (["three", "two", "two"], ["three", "three", "two"])  # spread, not all alike
    assert _ran(again)["cand-002"] == {"lock", dealt["cand-002"]}
    assert picks == {env: {dealt[env]} for env in ("cand-001", "cand-003")}
    third = exam.chaosrun("run", scenario, "-i", inventory, "--plain", "--seed", "7", "--limit", "cand-00[13]")
    assert third.code == 0 and {env: s - {"lock"} for env, s in _ran(third).items()} == picks

    # a name the inventory does not have: exit 2, nothing run
    bad = exam.chaosrun("run", scenario, "-i", inventory, "--plain", "--limit", "cand-004")
    assert bad.code == 2 and "no environment 'cand-004' in the inventory" in bad.stderr
    assert exam.leftovers() == []


def test_limit_on_verify_grades_only_the_suspect_or_named_ones(exam: Exam, tmp_path: Path) -> None:
    scenario = exam.workdir / "v.yml"
    scenario.write_text(
        "version: 1\nname: v\ntargets:\n  web: {host: 127.0.0.1}\nverify:\n"
        f"  - {{id: key, target: web, probe: file_exists, with: {{path: '{exam.sandbox}/x'}}, expect: true, points: 1}}\n"
    )
    inventory = exam.inventory(["web"], envs=ENVS)
    graded = exam.chaosrun("verify", scenario, "-i", inventory, "--plain", "--limit", "cand-003,cand-001")
    assert graded.code == 0, graded.stderr
    assert {r["env"] for r in graded.events("env_end")} == {"cand-001", "cand-003"}
    none = exam.chaosrun("verify", scenario, "-i", inventory, "--plain", "--limit", "@suspect")
    assert none.code == 2 and "selects no environment (the past run has none @suspect)" in none.stderr


def test_limit_on_test_runs_the_self_test_on_the_named_environments_only(exam: Exam) -> None:
    for env in ENVS:
        (exam.sandbox / env).mkdir()
        (exam.sandbox / env / "key").write_text("k\n")
        (exam.sandbox / env / "key").chmod(0o644)
    scenario = exam.workdir / "t.yml"
    scenario.write_text(
        "version: 1\nname: t\ntargets:\n  web: {host: 127.0.0.1}\n"
        f"vars:\n  root: '{exam.sandbox}'\n"
        "steps:\n  - {id: lock, target: web, chaos: chmod, with: {path: '${vars.root}/${env.name}/key', mode: '0000'}}\n"
        "verify:\n  - id: key\n    target: web\n    probe: file_mode\n"
        "    with: {path: '${vars.root}/${env.name}/key'}\n    expect: result.mode == \"0644\"\n    points: 1\n"
        f"solution:\n  web: chmod 0644 {exam.sandbox}/cand-00*/key\n"
    )
    inventory = exam.inventory(["web"], envs=ENVS)
    audit = exam.workdir / "audit"
    done = exam.chaosrun("test", scenario, "-i", inventory, "--limit", "cand-002", "--audit", audit, "--format", "json")
    # every phase passes on cand-002 alone, but the reboot: the test sshd is the monitor's machine
    phases = {f"{p['track']}/{p['phase']}": p for p in json.loads(done.stdout)["phases"]}
    failed = [name for name, p in phases.items() if not p["ok"]]
    assert failed == ["solution/reboot"] and "does not reboot the monitor" in phases["solution/reboot"]["detail"]
    assert phases["solution/broken"]["ok"] and phases["solution/fixed"]["ok"]
    logs = sorted(audit.rglob("*.jsonl"))
    assert logs
    touched = {r["env"] for log in logs for r in map(json.loads, log.read_text().splitlines()) if "env" in r}
    assert touched == {"cand-002"}, [log.name for log in logs]
    assert (exam.sandbox / "cand-001" / "key").stat().st_mode & 0o777 == 0o644  # never touched
    assert (exam.sandbox / "cand-003" / "key").stat().st_mode & 0o777 == 0o644

    bad = exam.chaosrun("test", scenario, "-i", inventory, "--limit", "cand-9", "--audit", audit)
    assert bad.code == 2 and "no environment 'cand-9' in the inventory" in bad.stderr
    assert exam.leftovers() == []
