"""The terminal's view of a room: live counts with failing environments first, and a
one-screen summary at the end of a big run (the full table on request)."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from chaosrun.run.integrity import Signal
from chaosrun.run.model import EnvOutcome, RunReport, StepOutcome, StepStatus
from chaosrun.run.progress import LiveReporter, print_summary
from chaosrun.scenario import Section, StepKind

STEPS = ("fill", "kill", "break")


def _outcome(step: str, status: StepStatus, seconds: float, reason: str = "") -> StepOutcome:
    return StepOutcome(step, step, StepKind.PROBE, "file_exists", status, reason, duration=seconds, max_points=1)


def _room(n: int) -> RunReport:
    """``n`` environments; every 10th fails ``kill``, every 25th is suspect, cand-007 is slowest."""
    envs = []
    for i in range(n):
        name = f"cand-{i:03d}"
        steps = [
            _outcome("fill", StepStatus.OK, 1.0 + (40 if i == 7 else i % 3)),
            _outcome("kill", StepStatus.FAILED if i % 10 == 3 else StepStatus.OK, 0.5, "expect result.ok is false"),
            _outcome("break", StepStatus.SKIPPED if i % 10 == 3 else StepStatus.OK, 0.2),
        ]
        signals = [Signal("fill", "binary_killed", "killed by signal KILL")] if i % 25 == 11 else []
        envs.append(EnvOutcome(name, steps, signals))
    return RunReport("run-1", Section.VERIFY, Path("audit/run-1-verify.jsonl"), 1, envs)


def _render(report: RunReport, *, full: bool | None = None, height: int = 40) -> list[str]:
    out = io.StringIO()
    print_summary(report, Console(file=out, width=140, height=height, color_system=None), full=full)
    return out.getvalue().splitlines()


def test_a_big_room_ends_on_one_screen_worst_first() -> None:
    lines = _render(_room(200))
    assert len(lines) <= 40 + 3  # the screen, and the closing lines
    text = "\n".join(lines)
    assert "by step" in text
    kill = next(line for line in lines if line.lstrip("│ ").startswith("kill"))
    assert "180" in kill and "20" in kill  # ok and failed counts of the step
    fill = next(line for line in lines if line.lstrip("│ ").startswith("fill"))
    assert "cand-007 41.00s" in fill  # the slowest environment of the step
    listed = [line.strip() for line in lines if line.startswith("  cand-")]
    assert listed[0].startswith("cand-011 ") and "SUSPECT (binary_killed)" in listed[0]  # suspect first
    assert any(line.startswith("cand-003 0/3: kill failed: expect result.ok is false") for line in listed)
    assert "more (--full shows every step of every environment)" in text
    assert lines[-1].startswith("FAILED: 200 environment(s) (180 ok, 20 failed, 8 suspect), ")


def test_the_full_table_is_there_on_request_and_for_a_small_room() -> None:
    assert len(_render(_room(200), full=True)) > 800
    small = "\n".join(_render(_room(4)))
    assert "by step" not in small and "cand-003" in small and "expect result.ok is false" in small


def test_the_live_view_counts_and_puts_failing_environments_first() -> None:
    out = io.StringIO()
    console = Console(file=out, width=140, height=14, color_system=None)
    live = LiveReporter(console)
    live.rows = {f"cand-{i:03d}": {} for i in range(30)}
    live.steps = list(STEPS)
    live.finished = {f"cand-{i:03d}" for i in range(10)}
    live.seen = {f"cand-{i:03d}" for i in range(14)}
    live.failed = {"cand-004", "cand-012"}
    live.running = {("cand-012", "kill"): 0.0, ("cand-013", "fill"): 1.0}
    assert live.counts() == {"done": 9, "failed": 2, "running": 3, "waiting": 16}
    console.print(live._table())
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("9 done · 3 running · 2 failed · 16 waiting  of 30")
    rows = [line.split()[0] for line in lines if line.startswith("cand-")]
    assert rows[:2] == ["cand-004", "cand-012"]  # failing first
    assert rows[2:5] == ["cand-010", "cand-011", "cand-013"]  # then running
    assert len(rows) == 14 - 8  # cut to the screen
    assert any(line.startswith("... 24 more") for line in lines)
    assert any(line.startswith("longest running: cand-012 kill") for line in lines)
