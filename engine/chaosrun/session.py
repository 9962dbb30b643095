"""Run stage, terminal side: run one section of a plan with its progress on the terminal,
then print its summary. What ``chaosrun run|verify`` and ``chaosrun demo`` share.

The runtime (trio, asyncssh, rich) is imported inside :func:`run_section`, on first use:
``chaosrun plan`` imports this module for :func:`new_seed` and must stay free of it.
"""

from __future__ import annotations

import dataclasses
import secrets
import sys
from typing import IO, TYPE_CHECKING

from .errors import ChaosrunError

if TYPE_CHECKING:
    from rich.console import Console

    from .plan import Plan
    from .run.model import Reporter
    from .run.runner import RunOptions, RunReport

__all__ = ["new_seed", "run_section"]


def new_seed() -> int:
    """A fresh seed for a plan's ``one_of`` picks; the run prints it, so ``--seed`` can repeat it."""
    return secrets.randbelow(2**31)


def run_section(
    plan: Plan,
    options: RunOptions,
    *,
    plain: bool = False,
    log: IO[str] | None = None,
    console: Console | None = None,
    reporter: Reporter | None = None,
    full: bool | None = None,
) -> RunReport:
    """Run ``options.section`` of ``plan`` on every environment, showing its progress.

    Progress is a live table when stderr is a terminal and ``plain`` is false, else one line
    per event on ``log``. That reporter takes the place of ``options.reporter``; every other
    field of ``options`` reaches the runtime as the caller set it.

    Args:
        plan: from :func:`chaosrun.plan.build_plan`.
        options: the run's options, built by the caller.
        plain: plain lines even on a terminal (``--plain``, or output meant for a program).
        log: where plain lines go (default: stderr).
        console: where the summary table goes once the run is over; None prints none
            (the caller prints the report itself, e.g. as JSON).
        reporter: where progress goes instead of the terminal (``chaosrun.api``'s events).
        full: the summary's every step of every environment (``--full``); None: only when it
            fits on one screen, else the room's summary (chaosrun.run.progress.print_summary).

    Returns:
        The report of the run, interrupted or not.

    Raises:
        ChaosrunError: the run could not start or go on (``MonitorKeyError``,
            ``AuditError``, ``RunError``...). Raised bare even when the runtime's nurseries
            wrapped it in an exception group, so the caller catches one class.
    """
    import trio

    from .run.progress import LiveReporter, PlainReporter, print_summary
    from .run.runner import run_plan

    if reporter is None:
        live = not plain and sys.stderr.isatty()
        reporter = LiveReporter() if live else PlainReporter(log)
    try:
        report = trio.run(run_plan, plan, dataclasses.replace(options, reporter=reporter))
    except BaseExceptionGroup as group:
        error = _chaosrun_error(group)
        if error is None:
            raise
        raise error from None
    finally:
        if isinstance(reporter, LiveReporter):
            reporter.stop()
    if console is not None:
        print_summary(report, console, full=full)
    return report


def _chaosrun_error(group: BaseExceptionGroup[BaseException]) -> ChaosrunError | None:
    """The first error in ``group`` when it holds nothing but chaosrun's own errors, else None."""
    matched, rest = group.split(ChaosrunError)
    if matched is None or rest is not None:
        return None
    leaf: BaseException = matched
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf if isinstance(leaf, ChaosrunError) else None
