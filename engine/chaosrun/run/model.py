"""Run stage, the data model: how steps, environments and runs end, the run's options,
and where live progress goes. Plain data: no I/O, no transport."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ChaosrunError
from ..plan import Plan, PlannedStep
from ..scenario import Section, StepKind, Transfer
from .integrity import Signal

if TYPE_CHECKING:
    from ..build import Builder
    from ..resume import Interrupted
    from ..shortcuts import Baseline
    from .connection import Connector

__all__ = [
    "EnvOutcome",
    "NullReporter",
    "Reporter",
    "RunError",
    "RunOptions",
    "RunReport",
    "Shortcut",
    "StepFailed",
    "StepOutcome",
    "StepStatus",
]


class RunError(ChaosrunError):
    """The run as a whole cannot go on (not one step's problem)."""


class StepFailed(ChaosrunError):
    """A step attempt failed for a reason worth showing to the operator."""


class StepStatus(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    SKIPPED = "skipped"


@dataclass
class StepOutcome:
    """How one step ended in one environment."""

    id: str
    slot: str
    kind: StepKind
    module: str | None
    status: StepStatus
    reason: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    changes: list[Any] = field(default_factory=list)
    duration: float = 0.0
    attempts: int = 0
    points: float = 0.0  # awarded
    max_points: float = 0.0

    @classmethod
    def of(cls, step: PlannedStep, status: StepStatus, reason: str = "") -> StepOutcome:
        """An outcome for ``step`` that has not run (yet): no result, no points awarded."""
        max_points = step.points if step.section is Section.VERIFY else 0.0
        return cls(step.id, step.slot, step.kind, step.module, status, reason, max_points=max_points)

    @property
    def ok(self) -> bool:
        return self.status is StepStatus.OK

    def as_scope(self) -> dict[str, Any]:
        """What ``steps.ID`` means in expressions."""
        return {"ok": self.ok, "status": self.status.value, "result": self.result, "duration": self.duration}


@dataclass(frozen=True)
class Shortcut:
    """What a candidate widened or switched off beyond the fault, found by comparing a
    machine with its baseline from before the run's chaos (``chaosrun.shortcuts``).

    ``guard`` is the label of the scenario's guard it breaks, if any; ``penalty`` is that
    guard's, counted once per guard (0 on the other shortcuts that break the same guard).
    """

    role: str
    kind: str
    subject: str
    detail: str
    guard: str | None = None
    penalty: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "kind": self.kind,
            "subject": self.subject,
            "detail": self.detail,
            "guard": self.guard,
            "penalty": self.penalty,
        }


@dataclass
class EnvOutcome:
    """How one environment ended: its steps, what makes its result suspect, and the
    shortcuts its guard pass found.

    ``zeroed`` is why its points were set to 0 (``--strict`` on a suspect environment).
    ``guarded`` says whether shortcuts were looked for (a baseline was there), or why not.
    """

    name: str
    steps: list[StepOutcome] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    zeroed: str | None = None
    shortcuts: list[Shortcut] = field(default_factory=list)
    guarded: str = ""  # "" not looked for; "ok" compared; else why it could not be

    @property
    def ok(self) -> bool:
        return all(s.status in (StepStatus.OK, StepStatus.SKIPPED) for s in self.steps)

    @property
    def integrity(self) -> str:
        """``suspect`` when anything was seen that an honest run would not show, else ``ok``."""
        return "suspect" if self.signals else "ok"

    @property
    def penalty(self) -> float:
        """Points the broken guards take off."""
        return sum(s.penalty for s in self.shortcuts)

    @property
    def points(self) -> float:
        if self.zeroed:
            return 0.0
        return max(0.0, sum(s.points for s in self.steps) - self.penalty)

    @property
    def max_points(self) -> float:
        return sum(s.max_points for s in self.steps)


@dataclass
class RunReport:
    run_id: str
    section: Section
    audit_path: Path | None
    seed: int
    environments: list[EnvOutcome]
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(e.ok for e in self.environments)


class Reporter(Protocol):
    """Where live progress goes (terminal, plain log, or nothing)."""

    def run_started(self, plan: Plan, section: Section, audit_path: Path) -> None: ...
    def step_started(self, env: str, step: PlannedStep) -> None: ...
    def step_finished(self, env: str, outcome: StepOutcome) -> None: ...
    def env_finished(self, env: EnvOutcome) -> None: ...


class NullReporter:
    def run_started(self, plan: Plan, section: Section, audit_path: Path) -> None: ...
    def step_started(self, env: str, step: PlannedStep) -> None: ...
    def step_finished(self, env: str, outcome: StepOutcome) -> None: ...
    def env_finished(self, env: EnvOutcome) -> None: ...


@dataclass(frozen=True)
class RunOptions:
    """How to run a plan.

    ``connector`` says how targets are reached: None is SSH (``run.ssh.SshConnector``);
    ``run.local.LocalConnector`` runs the modules as local processes (tests).
    """

    audit_dir: Path
    section: Section = Section.STEPS
    parallel: int = 20
    connect_timeout: float = 10.0
    hello_timeout: float = 5.0
    builder: Builder | None = None
    reporter: Reporter = field(default_factory=NullReporter)
    run_id: str | None = None
    key_path: Path | None = None  # monitor's Ed25519 key; None: signing.default_key_path()
    connector: Connector | None = None
    strict: bool = False  # a suspect environment scores 0 (verify --strict)
    reboot: bool = False  # reboot every target before grading (verify --reboot)
    boot_timeout: float = 300.0  # seconds a rebooted target has to answer again
    restores: str | None = None  # the run this one undoes (chaosrun restore): its run_start says so
    resume: Interrupted | None = None  # the run this one goes on with (run --resume): its ended steps are not run
    baseline: Baseline | None = None  # verify: the run's baselines, for the guard pass (None: no guard pass)
    take_baseline: bool = True  # run: each machine's posture before the first chaos step
    transfer: Transfer | None = None  # how binaries travel (--transfer); None: the scenario's monitor.transfer
    # given, once the run is under way, a function that stops it from any thread as Ctrl-C
    # does (chaosrun.api, chaosrun serve)
    on_start: Callable[[Callable[[], None]], None] | None = None
