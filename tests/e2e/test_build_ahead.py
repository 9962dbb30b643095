"""``chaosrun build`` ahead of exam day, and a run on a cold build cache: it builds (and
says so) before it connects anywhere, and a missing Go toolchain stops it before that."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from e2e_support import Exam

from chaosrun.build import Builder

SCENARIO = """\
version: 1
name: ahead
targets:
  web: {host: 127.0.0.1}
steps:
  - {id: mark, target: web, chaos: write_file, with: {path: "%(root)s/mark", content: "x"}}
verify:
  - {id: here, target: web, probe: file_exists, with: {path: "%(root)s/mark"}, expect: result.exists, points: 1}
"""


@pytest.fixture
def cold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty build cache of the test's own (Go's own compile cache stays warm)."""
    cache = tmp_path / "build-cache"
    monkeypatch.setenv("CHAOSRUN_CACHE", str(cache))
    return cache


def test_build_fills_the_cache_for_a_scenario_and_then_finds_it_there(exam: Exam, cold: Path) -> None:
    scenario = exam.workdir / "s.yml"
    scenario.write_text(SCENARIO % {"root": exam.sandbox})
    done = exam.chaosrun("build", scenario, "--format", "json")
    assert done.code == 0, done.stderr
    report = json.loads(done.stdout)
    built = sorted(b["module"] for b in report["built"])
    assert built == ["file_exists", "guard", "restore", "write_file"]  # restore: to undo the chaos
    assert {b["goarch"] for b in report["built"]} == {"amd64"} and report["cached"] == []
    assert "building 4 modules for linux/amd64 (0 cached)" in done.stderr
    assert all(Builder(cache_dir=cold).is_cached(m) for m in built)

    done = exam.chaosrun("build", scenario)
    assert done.code == 0 and done.stderr == ""  # nothing to build: nothing said
    assert done.stdout.startswith("4 modules for linux/amd64: 0 built, 4 already built, 0 failed, in ")


def test_build_wants_scenarios_or_all_and_known_architectures(exam: Exam, cold: Path) -> None:
    done = exam.chaosrun("build")
    assert (done.code, done.stderr) == (2, "chaosrun: chaosrun build wants SCENARIO files or --all\n")
    done = exam.chaosrun("build", "--all", "--arch", "vax")
    assert done.code == 2 and done.stderr.startswith("chaosrun: --arch vax: unsupported machine architecture 'vax'")
    scenario = exam.workdir / "bad.yml"
    scenario.write_text("version: 1\nname: x\nsteps:\n  - {id: a, target: web, chaos: nope}\n")
    done = exam.chaosrun("build", scenario)
    assert done.code == 1 and f"{scenario}:4:" in done.stdout  # lint's errors, file:line:col


def test_a_run_on_a_cold_cache_builds_first_and_says_so_before_it_connects(exam: Exam, cold: Path) -> None:
    scenario = exam.workdir / "s.yml"
    scenario.write_text(SCENARIO % {"root": exam.sandbox})
    done = exam.chaosrun("run", scenario, "-i", exam.inventory(["web"]), "--plain", "-v")
    assert done.code == 0, done.stderr
    lines = done.stderr.splitlines()
    building = next(i for i, line in enumerate(lines) if "building 2 modules for linux/amd64 (0 cached)" in line)
    first_record = next(i for i, line in enumerate(lines) if " run_start " in line)
    assert building < first_record  # built before the audit log opened, let alone a connection
    builds = {r["module"]: r["cached"] for r in done.events("build")}
    assert builds == {"write_file": True, "guard": True}  # the run found them built


def test_a_missing_go_toolchain_stops_the_run_before_it_connects(
    exam: Exam, cold: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAOSRUN_GO", str(exam.workdir / "no-go"))
    scenario = exam.workdir / "s.yml"
    scenario.write_text(SCENARIO % {"root": exam.sandbox})
    with socket.create_server(("127.0.0.1", 0)) as target:  # a "candidate" that counts connections
        target.settimeout(0.5)
        inventory = exam.inventory(["web"], port=target.getsockname()[1])
        done = exam.chaosrun("run", scenario, "-i", inventory)
        with pytest.raises(TimeoutError):
            target.accept()
    assert done.code == 1
    assert done.stderr.startswith("chaosrun: Go toolchain not found"), done.stderr
    assert done.audit_path is None  # no run started
