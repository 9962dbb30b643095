"""``chaosrun run --resume AUDIT.jsonl``: go on with a run that was cut short.

A run's audit log says which steps ended, on which environment, how (``step_end``) and
with what result (``result``). Resuming runs the same scenario, with the same seed (so
``one_of`` picks the same faults), as a run of its own (``<run>-resume.jsonl``, then
``-resume-2``...; its ``run_start`` names the run it resumes) in which every step that
ended is not run again: its outcome is taken from the log (``step_end`` with ``done_in``)
and later steps see its result as if it had just run. A step that started and never
ended, or was interrupted, runs again: chaos modules are idempotent, so a fault already in
place is found so ("already in place"), not added twice.

A run that ended (sealed after a ``run_end`` that was not interrupted) has nothing to
resume; ``--limit @failed`` re-runs its failed environments instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import EXIT_USAGE, ChaosrunError
from .plan import PlannedStep
from .restore import chain
from .run.model import StepOutcome, StepStatus
from .scenario import Section

__all__ = ["Interrupted", "ResumeError", "done_outcome", "next_resume_id", "read_interrupted"]

INTERRUPTED_REASONS = frozenset({"interrupted", "run interrupted before this step started"})


class ResumeError(ChaosrunError):
    """Nothing to resume, or not this scenario's run (exit 2)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Interrupted:
    """A run cut short: what its log (and those of the runs it resumes) says ended."""

    path: Path
    run_id: str  # of the first run of the chain: resumes are named after it
    resumes: str  # the run this resume goes on from (the newest of the chain)
    seed: int | None
    scenario_sha256: str | None
    done: Mapping[str, Mapping[str, dict[str, Any]]]  # env -> step -> {status, reason, ..., result, done_in}

    def steps_done(self) -> int:
        return sum(len(steps) for steps in self.done.values())


def read_interrupted(path: Path) -> Interrupted:
    """What a cut-short run finished, from its audit log.

    Raises:
        ResumeError: the log is not a run of chaos steps, or its run ended.
        LogError: the log (or one it resumes) cannot be trusted.
    """
    logs = chain(path)
    records, sealed = logs[-1][1], logs[-1][2]
    start = records[0]
    if start.get("section") != Section.STEPS.value:
        raise ResumeError(f"{path} records a {start.get('section')} run, not a run of chaos steps: nothing to resume")
    end = next((r for r in reversed(records) if r.get("event") == "run_end"), None)
    if sealed and end is not None and not end.get("interrupted"):
        raise ResumeError(
            f"{path}: run {start.get('run')} ended ({end.get('ts')}): nothing to resume; "
            "--limit @failed runs its failed environments again"
        )
    done: dict[str, dict[str, dict[str, Any]]] = {}
    for log_path, log, _ in logs:
        run_id = log_path.name.removesuffix(".jsonl")
        results: dict[tuple[str, str], dict[str, Any]] = {}
        for r in log:
            env, step = r.get("env"), r.get("step")
            if not isinstance(env, str) or not isinstance(step, str):
                continue
            if r.get("event") == "result":
                results[(env, step)] = r
            elif r.get("event") == "step_end" and r.get("reason") not in INTERRUPTED_REASONS:
                result = results.get((env, step)) or {}
                done.setdefault(env, {})[step] = {
                    "status": r.get("status"),
                    "reason": r.get("reason") or "",
                    "duration": r.get("duration") or 0.0,
                    "attempts": r.get("attempts") or 0,
                    "points": r.get("points") or 0.0,
                    "result": result.get("result") or {},
                    "changes": result.get("changes") or [],
                    "done_in": r.get("done_in") or run_id,
                }
    seed = start.get("seed")
    first = logs[0][0].name.removesuffix(".jsonl")
    return Interrupted(
        path=path,
        run_id=first,
        resumes=path.name.removesuffix(".jsonl"),
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        scenario_sha256=start.get("scenario_sha256"),
        done=done,
    )


def next_resume_id(past: Interrupted) -> str:
    """``<run>-resume``, then ``<run>-resume-2``...: one audit log per resume."""
    taken = {p.name.removesuffix(".jsonl") for p in past.path.parent.glob(f"{past.run_id}-resume*.jsonl")}
    name, n = f"{past.run_id}-resume", 1
    while name in taken:
        n += 1
        name = f"{past.run_id}-resume-{n}"
    return name


def done_outcome(step: PlannedStep, done: Mapping[str, Any]) -> StepOutcome:
    """The outcome of ``step`` as the interrupted run recorded it."""
    try:
        status = StepStatus(done.get("status"))
    except ValueError:
        status = StepStatus.FAILED
    outcome = StepOutcome.of(step, status, str(done.get("reason") or ""))
    outcome.result = dict(done.get("result") or {})
    outcome.changes = list(done.get("changes") or [])
    outcome.duration = float(done.get("duration") or 0.0)
    outcome.attempts = int(done.get("attempts") or 0)
    outcome.points = float(done.get("points") or 0.0)
    return outcome
