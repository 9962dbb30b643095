"""chaosrun: agentless chaos engine for hands-on Linux certification exams.

The public surface, one stage each: ``load_scenario`` (parse + lint), ``load_inventory``,
``build_plan`` (plan), ``run_plan`` (run; imported on first use, since it brings the SSH
and trio runtime that lint and plan never need).
"""

from typing import TYPE_CHECKING, Any

from ._source import ScenarioError, ScenarioErrors, Span
from .inventory import Inventory, load_inventory
from .lint import load_scenario
from .plan import Plan, build_plan
from .scenario import Scenario

if TYPE_CHECKING:
    from .run.runner import RunOptions, RunReport, run_plan

__all__ = [
    "Inventory",
    "Plan",
    "RunOptions",
    "RunReport",
    "Scenario",
    "ScenarioError",
    "ScenarioErrors",
    "Span",
    "build_plan",
    "load_inventory",
    "load_scenario",
    "run_plan",
]
__version__ = "0.1.0"

_LAZY = {"run_plan", "RunOptions", "RunReport"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from .run import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'chaosrun' has no attribute {name!r}")
