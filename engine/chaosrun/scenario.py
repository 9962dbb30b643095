"""The typed scenario: what parse produces and lint, plan and run consume.

Frozen dataclasses only; every node keeps the Span it came from so that any later stage
can point at the YAML that caused a problem.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._spans import Node, Span

if TYPE_CHECKING:
    from .expr import Expr

DEFAULT_TIMEOUT = 60.0
DEFAULT_CALLBACK_TIMEOUT = 30.0
DEFAULT_PORTS = (20000, 60999)

_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float | None:
    """``"500ms"`` -> 0.5, ``"5m"`` -> 300.0; None when the text is not a duration.

    The one duration rule of the language: ``wait:``, ``timeout:``, a module's duration
    parameters and the duration literals of expressions all read it.
    """
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match:
        return None
    if match.group(2) == "ms":  # 1500ms is 1.5 exactly, not 1500 * 0.001
        return float(match.group(1)) / 1000
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


class StepKind(enum.Enum):
    CHAOS = "chaos"
    PROBE = "probe"
    WAIT = "wait"
    ONE_OF = "one_of"


class Origin(enum.Enum):
    """Where a probe runs (``from:``): on the target, as a module binary, or on the monitor,
    which reaches the target over the network as anyone else would."""

    TARGET = "target"
    MONITOR = "monitor"


class Section(enum.Enum):
    STEPS = "steps"
    VERIFY = "verify"


class Transfer(enum.Enum):
    """How a module's binary travels to a target (``monitor.transfer``, ``--transfer``):
    as it is, gzip-compressed and unpacked by the exec wrapper, or whichever of the two
    is faster on the target's measured link (``run/transfer.py``)."""

    AUTO = "auto"
    RAW = "raw"
    GZIP = "gzip"


@dataclass(frozen=True)
class TargetSpec:
    """How to reach one role's host (after defaults)."""

    role: str
    host: str
    span: Span
    port: int = 22
    user: str = "root"
    identity: str | None = None
    known_hosts: str | None = None
    insecure: bool = False
    tmp_dir: str = "/tmp"

    def as_scope(self) -> dict[str, Any]:
        """What ``target.*`` means in expressions."""
        return {"host": self.host, "port": self.port, "user": self.user, "role": self.role}


@dataclass(frozen=True)
class MonitorSettings:
    bind: str = "127.0.0.1"
    advertise: str | None = None
    ports: tuple[int, int] = DEFAULT_PORTS
    callback_timeout: float = DEFAULT_CALLBACK_TIMEOUT
    callback: str = "direct"
    transfer: Transfer = Transfer.AUTO

    @property
    def dial_address(self) -> str:
        return self.advertise or self.bind


@dataclass(frozen=True)
class Step:
    """One step of ``steps`` or ``verify`` (or an option of a ``one_of``)."""

    id: str
    span: Span
    kind: StepKind
    section: Section
    module: str | None = None
    module_span: Span | None = None
    target: str | None = None
    target_span: Span | None = None
    params: Mapping[str, Any] = field(default_factory=dict)  # strings with ${} are Templates
    params_node: Node | None = None
    needs: tuple[str, ...] | None = None  # None: runs after the step above it
    needs_spans: tuple[Span, ...] = ()
    when: Expr | None = None
    expect: Expr | None = None
    timeout: float = DEFAULT_TIMEOUT
    retries: int = 0
    points: float = 0.0
    wait: float | None = None
    options: tuple[Step, ...] = ()
    spread: bool = False  # one_of: options handed out evenly across environments
    group: str | None = None  # id of the enclosing one_of
    description: str = ""
    keys: Mapping[str, Span] = field(default_factory=dict)  # span of each key as written
    origin: Origin = Origin.TARGET  # `from:`; lint allows monitor on probes that declare it


@dataclass(frozen=True)
class Repair:
    """A repair ``chaosrun test`` applies: the scenario's ``solution`` (the reference
    repair) or one of its ``shortcuts`` (a wrong repair that must not earn full points).
    ``scripts`` maps a role to the shell run on that role's machine."""

    name: str
    scripts: Mapping[str, str]
    span: Span
    role_spans: Mapping[str, Span] = field(default_factory=dict)
    description: str = ""


GUARD_KINDS = ("path", "firewall", "unit", "selinux", "sudoers", "pam", "tool", "ports")


@dataclass(frozen=True)
class Guard:
    """What must stay as in the baseline on one role's machine (``guards:``).

    ``kind`` is one of :data:`GUARD_KINDS`; ``subject`` is the path, unit or tool it
    names ("" for the others). Broken, it takes ``penalty`` points off the environment.
    """

    kind: str
    target: str
    subject: str
    penalty: float
    span: Span
    description: str = ""
    widening: bool = True  # path: also no mode, owner or ACL wider than the baseline

    @property
    def label(self) -> str:
        return f"{self.kind} {self.subject}" if self.subject else self.kind


@dataclass(frozen=True)
class Scenario:
    file: str
    name: str
    description: str
    targets: Mapping[str, TargetSpec]
    monitor: MonitorSettings
    vars: Mapping[str, Any]
    steps: tuple[Step, ...]
    verify: tuple[Step, ...]
    sha256: str
    base_dir: str  # folder of the file: relative identity/known_hosts paths start here
    solution: Repair | None = None
    shortcuts: tuple[Repair, ...] = ()
    guards: tuple[Guard, ...] = ()

    def all_steps(self) -> list[Step]:
        """Every step, option and probe, in file order."""
        out: list[Step] = []

        def walk(steps: tuple[Step, ...]) -> None:
            for step in steps:
                out.append(step)
                walk(step.options)

        walk(self.steps)
        walk(self.verify)
        return out
