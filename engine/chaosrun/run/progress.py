"""Live progress and the final summary, for a terminal (rich) or a plain log.

Text that came from a target (module errors, results) is shown through rich's Text,
never as markup, and control characters are stripped: a candidate cannot paint the
examiner's terminal.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import IO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..plan import Plan, PlannedStep
from ..scenario import Section
from .model import EnvOutcome, RunReport, StepOutcome, StepStatus

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]|\x1b\[[0-9;?]*[A-Za-z]")
STYLE = {StepStatus.OK: "green", StepStatus.FAILED: "red", StepStatus.TIMEOUT: "magenta", StepStatus.SKIPPED: "yellow"}


def safe(text: str, limit: int = 300) -> str:
    """Untrusted text made printable: no escapes, no control characters, bounded."""
    text = _CONTROL.sub("", text.replace("\n", " ").replace("\r", " "))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _headline(what: str, plan: Plan, audit_path: Path) -> str:
    envs = len(plan.environments)
    return f"{what} {plan.scenario.name}: {envs} environment(s), seed {plan.seed}, audit {audit_path}"


class PlainReporter:
    """One line per event: for logs, CI, and anything that is not a terminal."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()

    def _say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.2f}s] {text}", file=self.stream, flush=True)

    def run_started(self, plan: Plan, section: Section, audit_path: Path) -> None:
        what = "verify" if section is Section.VERIFY else "run"
        self._say(_headline(what, plan, audit_path))

    def step_started(self, env: str, step: PlannedStep) -> None:
        host = f" on {step.target.host}" if step.target else ""
        self._say(f"{env}: {step.id} ({step.kind.value} {step.module}{host}) started")

    def step_finished(self, env: str, outcome: StepOutcome) -> None:
        reason = f": {safe(outcome.reason)}" if outcome.reason else ""
        self._say(f"{env}: {outcome.id} {outcome.status.value} ({outcome.duration:.2f}s){reason}")

    def env_finished(self, env: EnvOutcome) -> None:
        self._say(f"{env.name}: {'ok' if env.ok else 'FAILED'}")


class LiveReporter(PlainReporter):
    """A live view of the room in the terminal: counts, then one row per environment
    (failing ones first, then running, then the rest), cut to the screen's height, then
    the steps running longest."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        self.console = console or Console(stderr=True)
        self.rows: dict[str, dict[str, str]] = {}
        self.steps: list[str] = []
        self.live: Live | None = None
        self.failed: set[str] = set()
        self.finished: set[str] = set()
        self.running: dict[tuple[str, str], float] = {}  # (env, slot) -> monotonic start
        self.seen: set[str] = set()

    def counts(self) -> dict[str, int]:
        """Environments done (all ok so far), failed (a step failed), running, waiting."""
        running = {env for env, _ in self.running} | (self.seen - self.finished)
        done = self.finished - self.failed
        return {
            "done": len(done),
            "failed": len(self.failed),
            "running": len(running - self.failed),
            "waiting": len(self.rows) - len(done | self.failed | running),
        }

    def _order(self) -> list[str]:
        def rank(name: str) -> int:
            if name in self.failed:
                return 0
            if name in self.seen and name not in self.finished:
                return 1
            return 2 if name in self.finished else 3

        return sorted(self.rows, key=rank)  # stable: inventory order within each rank

    def _table(self) -> Group:
        counts = self.counts()
        room = max(5, self.console.size.height - 8)
        table = Table(box=None, pad_edge=False)
        title = Text.assemble(
            (f"{counts['done']} done", "green"),
            " · ",
            (f"{counts['running']} running", "cyan"),
            " · ",
            (f"{counts['failed']} failed", "bold red" if counts["failed"] else ""),
            " · ",
            f"{counts['waiting']} waiting",
            f"  of {len(self.rows)}",
        )
        table.add_column("environment")
        shown = self.steps[:12]
        for sid in shown:
            table.add_column(sid, overflow="ellipsis", max_width=14)
        order = self._order()
        for name in order[:room]:
            cells = self.rows[name]
            table.add_row(name, *[Text.from_markup(cells.get(s, "[dim]·[/dim]")) for s in shown])
        if len(order) > room:
            table.add_row(Text(f"... {len(order) - room} more", style="dim"))
        now = time.monotonic()
        slow = sorted(self.running.items(), key=lambda item: item[1])[:3]
        if not slow:
            return Group(title, table)
        longest = "longest running: " + ", ".join(f"{e} {s} {now - t:.0f}s" for (e, s), t in slow)
        return Group(title, table, Text(longest, style="dim"))

    def run_started(self, plan: Plan, section: Section, audit_path: Path) -> None:
        env = plan.environments[0] if plan.environments else None
        steps = (env.verify if section is Section.VERIFY else env.steps) if env else ()
        self.steps = [s.id for s in steps]
        self.rows = {e.name: {} for e in plan.environments}
        what = "verify" if section is Section.VERIFY else "run"
        self.console.print(Text(_headline(what, plan, audit_path)))
        self.live = Live(self._table(), console=self.console, refresh_per_second=4, transient=True)
        self.live.start()

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._table())

    def step_started(self, env: str, step: PlannedStep) -> None:
        self.seen.add(env)
        self.running[(env, step.slot)] = time.monotonic()
        self.rows.setdefault(env, {})[step.slot] = "[cyan]running[/cyan]"
        self._refresh()

    def step_finished(self, env: str, outcome: StepOutcome) -> None:
        self.running.pop((env, outcome.slot), None)
        if outcome.status in (StepStatus.FAILED, StepStatus.TIMEOUT):
            self.failed.add(env)
        self.rows.setdefault(env, {})[outcome.slot] = f"[{STYLE[outcome.status]}]{outcome.status.value}[/]"
        self._refresh()

    def env_finished(self, env: EnvOutcome) -> None:
        self.finished.add(env.name)
        if not env.ok:
            self.failed.add(env.name)
        self._refresh()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def summary_table(report: RunReport) -> Table:
    """The end-of-run table: every step of every environment, with reasons."""
    verify = report.section is Section.VERIFY
    table = Table(title=f"{'verify' if verify else 'run'} {report.run_id}", show_lines=False)
    table.add_column("environment")
    table.add_column("step")
    table.add_column("status")
    table.add_column("time", justify="right")
    if verify:
        table.add_column("points", justify="right")
    table.add_column("reason")
    for env in report.environments:
        for i, s in enumerate(env.steps):
            row = [
                Text(env.name if i == 0 else ""),
                Text(s.id),
                Text(s.status.value, style=STYLE[s.status]),
                Text(f"{s.duration:.2f}s"),
            ]
            if verify:
                row.append(Text(f"{s.points:g}/{s.max_points:g}"))
            row.append(Text(safe(s.reason, 120)))
            table.add_row(*row)
        for signal in env.signals:
            row = [Text(""), Text(signal.step), Text("SUSPECT", style="bold red"), Text("")]
            if verify:
                row.append(Text(""))
            row.append(Text(safe(f"{signal.signal}: {signal.detail}", 120), style="red"))
            table.add_row(*row)
        for cut in env.shortcuts:
            row = [Text(""), Text(cut.role), Text("SHORTCUT", style="bold yellow"), Text("")]
            if verify:
                row.append(Text(f"-{cut.penalty:g}" if cut.penalty else ""))
            guard = f" (guard {cut.guard})" if cut.guard else ""
            row.append(Text(safe(f"{cut.kind}: {cut.detail}{guard}", 120), style="yellow"))
            table.add_row(*row)
        if verify:
            table.add_row(
                Text(""),
                Text("total", style="bold"),
                Text("SUSPECT" if env.signals else "", style="bold red"),
                Text(""),
                Text(f"{env.points:g}/{env.max_points:g}", style="bold"),
                Text(safe(env.zeroed or "", 120)),
            )
    return table


def room_summary(report: RunReport, room: int) -> Table:
    """The one-screen summary of a big room: each step's counts and times, then the
    environments that failed or are suspect (at most ``room`` rows of them)."""
    verify = report.section is Section.VERIFY
    table = Table(title=f"{'verify' if verify else 'run'} {report.run_id}: by step", show_lines=False)
    for column in ("step", "ok", "failed", "timeout", "skipped", "median", "slowest"):
        table.add_column(column, justify="left" if column in ("step", "slowest") else "right")
    by_step: dict[str, list[tuple[str, StepOutcome]]] = {}
    for env in report.environments:
        for s in env.steps:
            by_step.setdefault(s.id, []).append((env.name, s))
    for sid, rows in by_step.items():
        n = {status: sum(1 for _, s in rows if s.status is status) for status in StepStatus}
        ran = sorted((s.duration, name) for name, s in rows if s.status is not StepStatus.SKIPPED)
        median = f"{ran[len(ran) // 2][0]:.2f}s" if ran else ""
        slowest = f"{ran[-1][1]} {ran[-1][0]:.2f}s" if ran else ""
        table.add_row(
            Text(sid),
            Text(str(n[StepStatus.OK]), style="green" if n[StepStatus.OK] else ""),
            Text(str(n[StepStatus.FAILED]), style="red" if n[StepStatus.FAILED] else ""),
            Text(str(n[StepStatus.TIMEOUT]), style="magenta" if n[StepStatus.TIMEOUT] else ""),
            Text(str(n[StepStatus.SKIPPED])),
            Text(median),
            Text(slowest),
        )
    return table


def failing_lines(report: RunReport, room: int) -> list[Text]:
    """One line per environment that failed, is suspect or took a shortcut, worst first."""
    bad = [e for e in report.environments if not e.ok or e.signals or e.shortcuts]
    bad.sort(key=lambda e: (not e.signals, e.ok, e.name))
    lines: list[Text] = []
    for env in bad[:room]:
        first = next((s for s in env.steps if s.status in (StepStatus.FAILED, StepStatus.TIMEOUT)), None)
        parts = []
        if env.signals:
            parts.append(f"SUSPECT ({env.signals[0].signal})")
        if first is not None:
            parts.append(f"{first.id} {first.status.value}: {safe(first.reason, 100)}")
        if env.shortcuts:
            parts.append(f"shortcut {env.shortcuts[0].kind}")
        points = f" {env.points:g}/{env.max_points:g}" if report.section is Section.VERIFY else ""
        style = "red" if env.signals or not env.ok else "yellow"
        lines.append(Text(f"  {env.name}{points}: " + "; ".join(parts), style=style))
    if len(bad) > room:
        lines.append(Text(f"  ... and {len(bad) - room} more (--full shows every step of every environment)"))
    return lines


def print_summary(report: RunReport, console: Console, *, full: bool | None = None) -> None:
    """The end of a run: every step of every environment (``full``, or when it fits on
    one screen), else the room's summary: steps' counts, then failing environments first."""
    rows = sum(len(e.steps) + len(e.signals) + len(e.shortcuts) + 1 for e in report.environments)
    height = console.size.height
    if full or (full is None and rows <= max(20, height - 6)):
        console.print(summary_table(report))
    else:
        console.print(room_summary(report, height))
        failing = failing_lines(report, max(5, height - len({s.id for e in report.environments for s in e.steps}) - 12))
        if failing:
            console.print(Text("failing, suspect or with shortcuts, worst first:", style="bold"))
            for line in failing:
                console.print(line)
    counts: dict[str, int] = {}
    for env in report.environments:
        for s in env.steps:
            counts[s.status.value] = counts.get(s.status.value, 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    state = "interrupted" if report.interrupted else ("ok" if report.ok else "FAILED")
    suspect = [e.name for e in report.environments if e.signals]
    if suspect:
        names = ", ".join(suspect[:10]) + (f" and {len(suspect) - 10} more" if len(suspect) > 10 else "")
        console.print(Text(f"SUSPECT, review before grading: {names}", style="bold red"))
    cut = [e.name for e in report.environments if e.shortcuts]
    if cut:
        names = ", ".join(cut[:10]) + (f" and {len(cut) - 10} more" if len(cut) > 10 else "")
        console.print(Text(f"SHORTCUTS taken: {names}", style="bold yellow"))
    envs = report.environments
    tally = f"{sum(1 for e in envs if e.ok)} ok, {sum(1 for e in envs if not e.ok)} failed, {len(suspect)} suspect"
    console.print(
        Text(f"{state}: {len(envs)} environment(s) ({tally}), {parts or 'no steps'}; audit log {report.audit_path}")
    )
