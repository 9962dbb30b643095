"""``env.vars.NAME``: an environment's own variables from its inventory, in conditions and
templates; lint accepts any name, plan checks each against every environment."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from chaosrun import ScenarioErrors
from chaosrun.inventory import load_inventory, parse_inventory
from chaosrun.lint import check_scenario_text, load_scenario
from chaosrun.plan import build_plan, format_plan, plan_as_json

SCENARIO = """\
version: 1
name: t
targets:
  web: { host: 127.0.0.1 }
steps:
  - id: seat
    chaos: kill_process
    with: { name: "app-${env.vars.seat}" }
  - id: room_b
    chaos: kill_process
    when: env.vars.room == "B"
    with: { name: "${env.vars['room']}" }
"""


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_lint_accepts_any_env_vars_name_and_still_rejects_other_env_fields() -> None:
    _, errors = check_scenario_text(SCENARIO, "s.yaml")
    assert errors == []
    _, errors = check_scenario_text(SCENARIO.replace("env.vars.room", "env.var.room"), "s.yaml")
    assert [str(e) for e in errors] == [
        "s.yaml:11:11: unknown name 'env.var' (env has name, vars) (did you mean 'vars'?)"
    ]


def test_a_chaosrun_inventory_gives_each_environment_its_vars(tmp_path: Path) -> None:
    scenario = load_scenario(_write(tmp_path, "s.yaml", SCENARIO))
    inventory = _write(
        tmp_path,
        "inv.yaml",
        """\
        environments:
          cand-001: { vars: { seat: 12, room: B }, web: { host: 10.0.1.11 } }
          cand-002: { vars: { seat: 13, room: C }, web: { host: 10.0.2.11 } }
        """,
    )
    plan = build_plan(scenario, seed=1, inventory=load_inventory(inventory))
    one, two = plan.environments
    assert dict(one.vars) == {"seat": 12, "room": "B"} and sorted(one.targets) == ["web"]  # vars is no role
    assert [s.params["name"] for s in one.steps] == ["app-12", "B"]
    assert [s.static_skip for s in two.steps] == [False, True]  # room C: known false at plan time
    assert "  vars: seat=12 room=B\n" in format_plan(plan)
    assert plan_as_json(plan)["environments"][1]["vars"] == {"seat": 13, "room": "C"}


def test_vars_of_an_environment_must_be_a_mapping(tmp_path: Path) -> None:
    _, errors = parse_inventory("environments:\n  e: { vars: [1], web: { host: h } }\n", "inv.yaml")
    assert [str(e) for e in errors] == ["inv.yaml:2:14: environments.e.vars: expected mapping, got list"]


def test_a_var_the_scenario_reads_and_an_environment_lacks_is_an_error_at_the_expression(tmp_path: Path) -> None:
    scenario = load_scenario(_write(tmp_path, "s.yaml", SCENARIO))
    rows = "".join(f"cand-{i:03},web,10.0.0.{i},{'' if i > 1 else 5}\n" for i in range(1, 9))
    inventory = _write(tmp_path, "room.csv", "env,role,host,var.seat\n" + rows)
    with pytest.raises(ScenarioErrors) as info:
        build_plan(scenario, seed=1, inventory=load_inventory(inventory))
    assert [str(e) for e in info.value.errors] == [
        f"{tmp_path}/s.yaml:8:26: env.vars.seat is not set in environments cand-002, cand-003, cand-004, cand-005, "
        "cand-006 and 2 more (give every environment this variable in the inventory)",
        f"{tmp_path}/s.yaml:11:11: env.vars.room is not set in environments cand-001, cand-002, cand-003, cand-004, "
        "cand-005 and 3 more (give every environment this variable in the inventory)",
        f"{tmp_path}/s.yaml:12:22: env.vars.room is not set in environments cand-001, cand-002, cand-003, cand-004, "
        "cand-005 and 3 more (give every environment this variable in the inventory)",
    ]


def test_without_an_inventory_env_vars_has_nothing_to_read(tmp_path: Path) -> None:
    scenario = load_scenario(_write(tmp_path, "s.yaml", SCENARIO))
    with pytest.raises(ScenarioErrors) as info:
        build_plan(scenario, seed=1)
    assert str(info.value.errors[0]).startswith(
        f"{tmp_path}/s.yaml:8:26: env.vars.seat is not set in environment default"
    )


def test_per_group_hosts_that_disagree_on_a_var_make_it_an_error_only_where_it_is_read(tmp_path: Path) -> None:
    scenario = load_scenario(_write(tmp_path, "s.yaml", SCENARIO))
    inventory = _write(
        tmp_path,
        "hosts.ini",
        """\
        [cand1]
        a seat=1 room=B port=80 chaosrun_role=web
        b seat=2 room=B port=5432 chaosrun_role=mon
        """,
    )
    with pytest.raises(ScenarioErrors) as info:
        build_plan(scenario, seed=1, inventory=load_inventory(inventory, env_per="group"))
    # `port` differs too, but nothing reads it; `room` is the same on both
    assert [str(e) for e in info.value.errors] == [
        f"{tmp_path}/s.yaml:8:26: env.vars.seat has no one value in environment 'cand1': "
        f"host 'a' has 1 ({inventory}:2:8), host 'b' has 2 ({inventory}:3:8)",
    ]
