"""Run stage, integrity: the signals that make an environment's result ``suspect``.

The candidate is root on the target, so an on-target result can lie. chaosrun never
grades a lie silently: whatever it sees that an honest run would not show (a binary killed
or stopped mid-step, a connection to a step's port that failed to authenticate, a step far
slower than the same step elsewhere...) becomes a :class:`Signal` of that environment, in
the audit log, the report and the summary table. Points are still computed; a suspect
environment is flagged for review, and ``chaosrun verify --strict`` scores it 0.

Signal names are stable strings, listed in ``SIGNALS`` and in docs/security.md.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["SIGNALS", "Signal", "timing_outliers"]

SIGNALS: Mapping[str, str] = {
    "binary_killed": "the module binary was killed by a signal before it reported",
    "binary_lingered": "the module binary was still running seconds after its result",
    "binary_stopped": "the module binary was stopped (SIGSTOP, a tracer) mid-step",
    "binary_swapped": "the binary that ran, or was about to run, is not the one uploaded",
    "callback_flooded": "the callback sent more than the monitor's byte limits allow",
    "callback_rejected": "a connection to the step's callback port failed to authenticate",
    "params_altered": "the binary ran with other parameters than the monitor sent",
    "result_without_binary": "a result came, but the binary chaosrun started did not deliver it",
    "timing_outlier": "the step took far longer than the same step in the other environments",
    "token_reused": "a second connection proved the step's one-time token (its config was taken)",
}

# A step is a timing outlier when it took more than FACTOR times the median of the same
# step across environments, and at least SLACK seconds more: a loaded monitor slows
# every environment alike, a candidate holding one binary slows one.
OUTLIER_FACTOR = 4.0
OUTLIER_SLACK = 5.0
OUTLIER_MIN_ENVS = 3


@dataclass(frozen=True)
class Signal:
    """Something seen in one step that an honest run would not show."""

    step: str
    signal: str  # a key of SIGNALS, or a tamper sensor's name
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"step": self.step, "signal": self.signal, "detail": self.detail}


def timing_outliers(durations: Mapping[str, Mapping[str, float]]) -> Iterable[tuple[str, Signal]]:
    """``(environment, signal)`` for each step far slower than its median across environments.

    Args:
        durations: environment -> step id -> seconds, for steps that ran (not skipped).
    """
    by_step: dict[str, list[float]] = {}
    for steps in durations.values():
        for step, seconds in steps.items():
            by_step.setdefault(step, []).append(seconds)
    for env, steps in durations.items():
        for step, seconds in steps.items():
            samples = by_step[step]
            if len(samples) < OUTLIER_MIN_ENVS:
                continue
            median = statistics.median(samples)
            if seconds > OUTLIER_FACTOR * median and seconds - median > OUTLIER_SLACK:
                detail = f"{seconds:.1f}s against a median of {median:.1f}s over {len(samples)} environments"
                yield env, Signal(step, "timing_outlier", detail)
