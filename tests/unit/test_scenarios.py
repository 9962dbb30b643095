"""Every example in scenarios/ is a test input: it lints clean, says what it is, and plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaosrun.lint import check_scenario_text, load_scenario
from chaosrun.plan import build_plan, format_plan, plan_as_json

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted([*(ROOT / "scenarios").glob("*.yaml"), *(ROOT / "scenarios").glob("*.yml")])
SCHEMA_LINE = "# yaml-language-server: $schema=../schemas/scenario.schema.json"


def test_there_are_example_scenarios() -> None:
    assert len(SCENARIOS) >= 5


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_example_lints_clean(path: Path) -> None:
    _, errors = check_scenario_text(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert [str(e) for e in errors] == []


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_example_opens_with_the_schema_line_and_a_header_comment(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == SCHEMA_LINE
    header = [line for line in lines[1:] if line.startswith("#")]
    assert lines[1].startswith("#") and len(header) >= 2, "say what the scenario breaks and how it is graded"
    assert any(len(line.strip("# ")) > 20 for line in header)


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_example_plans_with_several_seeds(path: Path) -> None:
    scenario = load_scenario(path)
    for seed in range(1, 6):
        plan = build_plan(scenario, seed=seed)
        (env,) = plan.environments
        assert len(env.steps) == len(scenario.steps)
        assert len(env.verify) == len(scenario.verify)
        assert format_plan(plan).startswith(f"plan for {scenario.name} ")
        assert plan_as_json(plan)["seed"] == seed
        for step in (*env.steps, *env.verify):
            if step.module is not None:
                assert step.target is not None, f"{step.id} has no host"


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_example_grades_something(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.steps, "an example breaks something"
    assert scenario.verify and sum(p.points for p in scenario.verify) > 0, "and grades the repair"
