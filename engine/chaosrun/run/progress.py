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

from rich.console import Console
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
    """A live table in the terminal: one row per environment, one cell per step."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        self.console = console or Console(stderr=True)
        self.rows: dict[str, dict[str, str]] = {}
        self.steps: list[str] = []
        self.live: Live | None = None

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False)
        table.add_column("environment")
        shown = self.steps[:12]
        for sid in shown:
            table.add_column(sid, overflow="ellipsis", max_width=14)
        rows = list(self.rows.items())
        for name, cells in rows[:40]:
            table.add_row(name, *[Text.from_markup(cells.get(s, "[dim]·[/dim]")) for s in shown])
        if len(rows) > 40:
            done = sum(1 for _, c in rows if c.get("_done"))
            table.add_row(Text(f"... {len(rows) - 40} more ({done} of {len(rows)} done)"))
        return table

    def run_started(self, plan: Plan, section: Section, audit_path: Path) -> None:
        env = plan.environments[0] if plan.environments else None
        steps = (env.verify if section is Section.VERIFY else env.steps) if env else ()
        self.steps = [s.id for s in steps]
        self.rows = {e.name: {} for e in plan.environments}
        what = "verify" if section is Section.VERIFY else "run"
        self.console.print(Text(_headline(what, plan, audit_path)))
        self.live = Live(self._table(), console=self.console, refresh_per_second=8, transient=True)
        self.live.start()

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._table())

    def step_started(self, env: str, step: PlannedStep) -> None:
        self.rows.setdefault(env, {})[step.slot] = "[cyan]running[/cyan]"
        self._refresh()

    def step_finished(self, env: str, outcome: StepOutcome) -> None:
        self.rows.setdefault(env, {})[outcome.slot] = f"[{STYLE[outcome.status]}]{outcome.status.value}[/]"
        self._refresh()

    def env_finished(self, env: EnvOutcome) -> None:
        self.rows.setdefault(env.name, {})["_done"] = "1"
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


def print_summary(report: RunReport, console: Console) -> None:
    console.print(summary_table(report))
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
    console.print(
        Text(
            f"{state}: {len(report.environments)} environment(s), {parts or 'no steps'}; audit log {report.audit_path}"
        )
    )
