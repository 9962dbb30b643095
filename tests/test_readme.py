"""The README's two commands are true: the test command is what CI runs, and the install +
demo command works on this machine and ends with full points. Its scenario example lints."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from chaosrun.cli import lint_files

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

INSTALL_AND_DEMO = "bash scripts/install && .venv/bin/chaosrun demo"
TEST = "bash scripts/test"


def fenced_blocks(text: str, lang: str) -> list[str]:
    """The bodies of the ```lang blocks of a Markdown text, in order."""
    return [m.group(1).strip() for m in re.finditer(rf"^```{lang}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)]


def script_commands(path: Path) -> list[str]:
    """The commands a small bash script runs: no comments, no `set`, no `cd`."""
    commands = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith(("set ", "cd ")):
            continue
        commands.append(line)
    return commands


def test_the_readme_gives_exactly_the_install_demo_and_test_commands() -> None:
    blocks = fenced_blocks(README.read_text(), "sh")
    assert blocks[:2] == [INSTALL_AND_DEMO, TEST]


def test_the_readme_test_command_is_exactly_what_ci_runs() -> None:
    test_command = fenced_blocks(README.read_text(), "sh")[1]
    assert script_commands(REPO / ".ci" / "run") == [test_command]
    # ... and that command runs the Go tests and the whole Python suite, e2e included.
    script = shlex.split(test_command)[1]
    steps = "\n".join(script_commands(REPO / script))
    assert "bash scripts/install" in steps
    assert re.search(r"go.* vet ./\.\.\.", steps) and re.search(r"go.* test .*\./\.\.\.", steps)
    pytest_line = next(line for line in steps.splitlines() if "-m pytest" in line)
    assert " -m 'not" not in pytest_line and '-m "not' not in pytest_line and " -k " not in pytest_line


def test_the_readme_scenario_example_passes_lint(tmp_path: Path) -> None:
    (example,) = [b for b in fenced_blocks(README.read_text(), "yaml") if b.startswith("# yaml-language-server")]
    path = tmp_path / "web-outage.yaml"
    path.write_text(example + "\n")
    assert [str(e) for e in lint_files([str(path)])] == []


@pytest.mark.e2e
def test_the_readme_install_and_demo_command_runs_and_ends_with_full_points() -> None:
    command = fenced_blocks(README.read_text(), "sh")[0]
    audit = REPO / "audit"  # the demo's default audit folder, relative to where it runs
    existed = audit.exists()
    before = set(audit.iterdir()) if existed else set()
    try:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:  # the demo's audit logs are this test's litter
        if audit.exists():
            for path in set(audit.iterdir()) - before:
                path.unlink()
            if not existed:
                shutil.rmtree(audit, ignore_errors=True)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    last = done.stdout.strip().splitlines()[-1]
    found = re.search(r"(\d+)/(\d+) points after", last)
    assert last.startswith("demo passed") and found, last
    assert found.group(1) == found.group(2) != "0", last
