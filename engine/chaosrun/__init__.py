"""chaosrun: agentless chaos engine for hands-on Linux certification exams.

The public surface, one stage each: ``load_scenario`` (parse + lint), ``load_inventory``,
``build_plan`` (plan), ``run_plan`` (run). Each is imported on first use (PEP 562): the
package itself loads nothing, so ``chaosrun --version`` and a shell's TAB stay quick, and
lint and plan never load the SSH and trio runtime they do not need.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._spans import ScenarioError, ScenarioErrors, Span
    from .inventory import Inventory, load_inventory
    from .lint import load_scenario
    from .plan import Plan, build_plan
    from .run.runner import RunOptions, RunReport, run_plan
    from .scenario import Scenario

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

_WHERE = {
    "ScenarioError": "._spans",
    "ScenarioErrors": "._spans",
    "Span": "._spans",
    "Inventory": ".inventory",
    "load_inventory": ".inventory",
    "load_scenario": ".lint",
    "Plan": ".plan",
    "build_plan": ".plan",
    "Scenario": ".scenario",
    "run_plan": ".run.runner",
    "RunOptions": ".run.runner",
    "RunReport": ".run.runner",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'chaosrun' has no attribute {name!r}")
    return getattr(import_module(where, __name__), name)
