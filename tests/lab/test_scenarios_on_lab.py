"""Every example in scenarios/ is a real exam: ``chaosrun test`` passes for it on fresh lab
VMs against the real system paths (``root: ""``): its chaos breaks what its probes grade,
its solution earns full points also after a reboot, each other ``one_of`` option is caught,
each shortcut is refused after a reboot, and every graded probe fails somewhere.

Driven through the command line exactly as an author runs it, with ``--format json``. The
self-tests run two at a time (each on VMs of its own): on a 2-core machine under TCG two
together took 196 s where one after the other took 316 s (the guests wait on each other's
I/O and SSH round trips, not only on CPU).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from lab_support import chaosrun

from chaosrun.lab import Image
from chaosrun.lint import load_scenario
from chaosrun.run.audit import verify_file

pytestmark = [pytest.mark.lab, pytest.mark.e2e]

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.yaml"))
TOGETHER = 2


@pytest.fixture(scope="module")
def self_tests(
    lab_image: Image, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[Path, tuple[Path, Future[subprocess.CompletedProcess[str]]]]]:
    """Every example's ``chaosrun test``, started on first use, TOGETHER at a time."""
    with ThreadPoolExecutor(TOGETHER) as pool:
        started = {}
        for path in SCENARIOS:
            folder = tmp_path_factory.mktemp(path.stem)
            argv = ("test", str(path), "--format", "json", "--quiet", "--audit", str(folder))
            started[path] = (folder, pool.submit(chaosrun, *argv, cwd=folder))
        yield started


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_the_example_passes_its_self_test_on_lab_vms(
    self_tests: dict[Path, tuple[Path, Future[subprocess.CompletedProcess[str]]]], path: Path
) -> None:
    scenario = load_scenario(path)
    assert scenario.solution is not None, f"{path.name} has no solution"
    tmp_path, running = self_tests[path]
    done = running.result()
    assert done.stdout, done.stderr
    report = json.loads(done.stdout)
    failed = [f"{p['track']}/{p['phase']}: {p['detail']}" for p in report["phases"] if not p["ok"]]
    assert done.returncode == 0 and report["ok"], "\n".join(failed) + "\n" + done.stderr[-3000:]
    phases = {(p["track"], p["phase"]) for p in report["phases"]}
    expected = {("solution", n) for n in ("chaos", "broken", "repair", "fixed", "reboot")}
    expected |= {(s.name, n) for s in scenario.shortcuts for n in ("chaos", "repair", "reboot")}
    expected.add(("all", "coverage"))
    assert expected <= phases, sorted(phases)
    for p in report["phases"]:
        if p["phase"] == "fixed" or (p["track"] == "solution" and p["phase"] == "reboot"):
            assert p["points"] == p["max_points"] > 0
        if p["phase"] == "broken" or (p["track"] != "solution" and p["phase"] == "reboot"):
            assert p["points"] < p["max_points"]
        if p["audit"]:
            assert verify_file(Path(p["audit"])).ok, p["audit"]
    # nothing of the labs is left: each track's lab was taken down
    assert not list(tmp_path.rglob("*.qcow2")), list(tmp_path.rglob("*"))
    print(f"chaosrun test {path.name}: {report['seconds']} s, {len(report['phases'])} phases")
