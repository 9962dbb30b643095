"""chaosrun: agentless chaos engine for hands-on Linux certification exams."""

from ._source import ScenarioError, ScenarioErrors, Span

__all__ = ["ScenarioError", "ScenarioErrors", "Span"]
__version__ = "0.1.0"
