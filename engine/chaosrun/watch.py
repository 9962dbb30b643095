"""``chaosrun verify --watch INTERVAL [--until DURATION]``: grade every environment again
and again while the candidates work, and record per candidate and probe when it first
passed, whether it failed again later, and how it ended.

A pass grades every environment once (``--parallel`` at a time, as a plain ``verify``), so
an environment is never graded twice at once; the next pass starts ``INTERVAL`` later,
jittered by up to a fifth either way so that a room of monitors does not beat in step.
Each pass is a verify of its own, with its own audit log. The exam's clock starts for each
environment at the end of its ``run`` (its ``env_end`` in the run's audit log: the newest
``steps`` log in ``--audit DIR``, or ``--since LOG``); without one, at the watch's start.
``time_to_fix`` is the clock at the end of the first pass in which the probe passed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ChaosrunError
from .plan import Plan
from .run.model import RunOptions, RunReport, StepStatus

__all__ = ["ProbeWatch", "WatchReport", "clock_starts", "run_watch"]


@dataclass
class ProbeWatch:
    """One probe of one environment over the watch."""

    first_passed: float | None = None  # Unix time of the end of the first pass it passed in
    passing: bool = False
    regressed: bool = False  # it passed once and failed again later
    passes: int = 0  # how many passes it passed in


@dataclass
class WatchReport:
    last: RunReport
    passes: int
    started: float
    clock: dict[str, float]  # environment -> Unix time its exam clock started
    clock_source: str
    probes: dict[tuple[str, str], ProbeWatch] = field(default_factory=dict)

    def time_to_fix(self, env: str, step: str) -> float | None:
        w = self.probes.get((env, step))
        if w is None or w.first_passed is None:
            return None
        return round(max(0.0, w.first_passed - self.clock.get(env, self.started)), 1)


def _ts(text: Any) -> float | None:
    try:
        return dt.datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


def clock_starts(audit_dir: Path, since: Path | None) -> tuple[dict[str, float], str]:
    """Each environment's end of ``run``, from ``since`` or the newest ``steps`` audit log in
    ``audit_dir``; ({}, why) when there is none.

    Raises:
        ChaosrunError: ``since`` cannot be read or is not a run's log.
    """
    candidates = (
        [since]
        if since is not None
        else sorted(
            (p for p in audit_dir.glob("*.jsonl") if p.is_file()), key=lambda p: p.stat().st_mtime_ns, reverse=True
        )
    )
    for path in candidates:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            first = json.loads(lines[0]) if lines else {}
        except (OSError, ValueError) as exc:
            if since is not None:
                raise ChaosrunError(f"--since {path}: cannot read it as an audit log: {exc}") from None
            continue
        if first.get("event") != "run_start" or first.get("section") != "steps":
            if since is not None:
                raise ChaosrunError(f"--since {path}: not the audit log of a run (of the scenario's steps)")
            continue
        records: list[Any] = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                break
        if first.get("resumes"):  # a resumed run: an environment's end is its first, in the run it ended in
            from .restore import chain

            records = [r for _, log, _ in chain(path) for r in log]
        ends: dict[str, float] = {}
        for record in records:
            if record.get("event") == "env_end" and (t := _ts(record.get("ts"))) is not None:
                ends.setdefault(str(record.get("env")), t)
        return ends, str(path)
    return {}, ""


def _passed(step: Any) -> bool:
    return bool(step.status is StepStatus.OK and step.points >= step.max_points)


def run_watch(
    plan: Plan,
    options: RunOptions,
    *,
    interval: float,
    until: float,
    clock: Mapping[str, float],
    clock_source: str,
    run_pass: Callable[[Plan, RunOptions], RunReport],
    note: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> WatchReport:
    """Grade ``plan`` every ``interval`` seconds (jittered) for ``until`` seconds, or until a
    pass is interrupted (Ctrl-C); the last pass's report with what each probe did."""
    started = time.time()
    deadline = time.monotonic() + until
    rng = random.Random()
    probes: dict[tuple[str, str], ProbeWatch] = {}
    passes = 0
    while True:
        passes += 1
        base = options.run_id or f"watch-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}"
        report = run_pass(plan, dataclasses.replace(options, run_id=f"{base}-pass-{passes}"))
        now = time.time()
        for env in report.environments:
            for step in env.steps:
                if step.max_points <= 0:
                    continue
                w = probes.setdefault((env.name, step.id), ProbeWatch())
                ok = _passed(step)
                if ok:
                    w.passes += 1
                    if w.first_passed is None:
                        w.first_passed = now
                elif w.first_passed is not None:
                    w.regressed = True
                w.passing = ok
        done = sum(w.passing for w in probes.values())
        note(f"watch pass {passes}: {done} of {len(probes)} probes pass")
        if report.interrupted:
            break
        pause = interval * rng.uniform(0.8, 1.2)
        if time.monotonic() + pause > deadline:
            break
        try:
            sleep(pause)
        except KeyboardInterrupt:
            report.interrupted = True
            break
    return WatchReport(report, passes, started, dict(clock), clock_source, probes)


def watch_as_json(watch: WatchReport) -> dict[str, Any]:
    """What the watch adds to the last pass's report: its passes and, per step, its record."""
    return {
        "passes": watch.passes,
        "started": dt.datetime.fromtimestamp(watch.started, dt.UTC).isoformat(),
        "clock_from": watch.clock_source or "the watch's start (no run log)",
        "steps": {
            f"{env}/{step}": {
                "time_to_fix": watch.time_to_fix(env, step),
                "first_passed_at": (
                    dt.datetime.fromtimestamp(w.first_passed, dt.UTC).isoformat() if w.first_passed else None
                ),
                "regressed": w.regressed,
                "passes": w.passes,
                "passing": w.passing,
            }
            for (env, step), w in sorted(watch.probes.items())
        },
    }


def print_watch(watch: WatchReport, console: Any, *, full: bool | None = None) -> None:
    """The last pass's table, then each probe's time to fix (``verify --watch`` on a terminal)."""
    from .run.progress import print_summary

    print_summary(watch.last, console, full=full)
    for (env_name, step_id), w in sorted(watch.probes.items()):
        fixed = watch.time_to_fix(env_name, step_id)
        said = "never passed" if fixed is None else f"fixed after {_clock(fixed)}"
        if w.regressed:
            said += ", then failed again" + (" (passing at the end)" if w.passing else "")
        console.print(f"{env_name} {step_id}: {said}")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
