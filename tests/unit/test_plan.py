"""Plan stage: order and parallel levels, one_of picks, resolved parameters, inventories."""

from __future__ import annotations

import contextlib
import io
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from chaosrun import ScenarioErrors
from chaosrun.cli import main
from chaosrun.expr import Template, iter_templates
from chaosrun.inventory import load_inventory
from chaosrun.lint import load_scenario
from chaosrun.plan import EnvPlan, Plan, PlannedStep, build_plan, format_plan, pick_option
from chaosrun.scenario import Scenario, StepKind


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _scenario(tmp_path: Path, body: str, targets: str = "web: { host: 127.0.0.1 }") -> Scenario:
    text = f"version: 1\nname: t\ntargets:\n  {targets}\n" + textwrap.dedent(body)
    return load_scenario(_write(tmp_path, "s.yaml", text))


def _by_id(env: EnvPlan) -> dict[str, PlannedStep]:
    return {s.slot: s for s in (*env.steps, *env.verify)}


ORDER = """\
steps:
  - { id: a, wait: 1s }
  - { id: b, wait: 1s }
  - { id: c, wait: 1s, needs: [] }
  - { id: d, wait: 1s, needs: [b, c] }
  - { id: e, wait: 1s }
  - { id: f, wait: 1s, needs: [g] }
  - { id: g, wait: 1s, needs: [] }
"""


def test_a_step_without_needs_runs_after_the_step_above_it(tmp_path: Path) -> None:
    steps = _by_id(build_plan(_scenario(tmp_path, ORDER), seed=1).environments[0])
    assert (steps["a"].after, steps["a"].explicit_needs) == ((), False)
    assert (steps["b"].after, steps["b"].explicit_needs) == (("a",), False)
    assert (steps["e"].after, steps["e"].explicit_needs) == (("d",), False)


def test_needs_lists_what_a_step_waits_for_and_empty_needs_waits_for_nothing(tmp_path: Path) -> None:
    steps = _by_id(build_plan(_scenario(tmp_path, ORDER), seed=1).environments[0])
    assert (steps["c"].after, steps["c"].explicit_needs) == ((), True)
    assert (steps["d"].after, steps["d"].explicit_needs) == (("b", "c"), True)


def test_levels_group_the_steps_that_may_run_together(tmp_path: Path) -> None:
    env = build_plan(_scenario(tmp_path, ORDER), seed=1).environments[0]
    levels = {s.slot: s.level for s in env.steps}
    assert levels == {"a": 1, "b": 2, "c": 1, "d": 3, "e": 4, "f": 2, "g": 1}


def test_a_level_follows_needs_that_point_further_down_the_file(tmp_path: Path) -> None:
    env = build_plan(_scenario(tmp_path, ORDER), seed=1).environments[0]
    assert _by_id(env)["f"].level == _by_id(env)["g"].level + 1


def test_a_long_chain_of_needs_gets_increasing_levels(tmp_path: Path) -> None:
    lines = ["steps:"] + [f"  - {{ id: s{i}, wait: 1ms, needs: [s{i + 1}] }}" for i in range(1500)]
    lines.append("  - { id: s1500, wait: 1ms, needs: [] }")
    env = build_plan(_scenario(tmp_path, "\n".join(lines) + "\n"), seed=1).environments[0]
    assert _by_id(env)["s0"].level == 1501


PICK = """\
steps:
  - id: pick
    one_of:
      - { id: opt_a, chaos: kill_process, with: { name: a } }
      - { id: opt_b, chaos: kill_process, with: { name: b } }
      - { id: opt_c, chaos: kill_process, with: { name: c } }
  - { id: later, wait: 1s }
"""


def _picked(plan: Plan) -> dict[str, str]:
    return {env.name: dict(plan.picks[env.name])["pick"] for env in plan.environments}


def test_one_of_picks_one_option_and_lists_the_others_as_skipped(tmp_path: Path) -> None:
    plan = build_plan(_scenario(tmp_path, PICK), seed=7)
    step = plan.environments[0].steps[0]
    assert step.slot == "pick" and step.id in {"opt_a", "opt_b", "opt_c"}
    assert set(step.skipped_options) == {"opt_a", "opt_b", "opt_c"} - {step.id}
    assert plan.picks["default"] == {"pick": step.id}
    assert plan.environments[0].steps[1].after == ("pick",)


def test_one_of_picks_are_the_same_for_the_same_seed(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, PICK)
    first = [_picked(build_plan(scenario, seed=s)) for s in range(20)]
    again = [_picked(build_plan(scenario, seed=s)) for s in range(20)]
    assert first == again


def test_one_of_picks_vary_across_seeds(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, PICK)
    assert len({_picked(build_plan(scenario, seed=s))["default"] for s in range(30)}) == 3


def test_one_of_picks_vary_across_environments_with_one_seed(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, PICK)
    envs = "".join(f"  cand-{i:03}: {{ web: {{ host: 10.0.0.{i} }} }}\n" for i in range(1, 31))
    inventory = load_inventory(_write(tmp_path, "inv.yaml", "environments:\n" + envs))
    picks = _picked(build_plan(scenario, seed=5, inventory=inventory))
    assert len(picks) == 30 and len(set(picks.values())) == 3


def test_pick_option_is_a_pure_function_of_seed_env_and_group() -> None:
    assert pick_option(1, "cand-001", "pick", 5) == pick_option(1, "cand-001", "pick", 5)
    assert {pick_option(1, f"cand-{i}", "pick", 5) for i in range(50)} == set(range(5))


def test_a_one_of_when_and_its_options_when_both_apply(tmp_path: Path) -> None:
    scenario = _scenario(
        tmp_path,
        """\
        vars: { enabled: true }
        steps:
          - id: pick
            when: vars.enabled
            one_of:
              - { id: only, chaos: kill_process, when: env.name == "default", with: { name: a } }
        """,
    )
    step = build_plan(scenario, seed=1).environments[0].steps[0]
    assert step.when is not None
    assert str(step.when) == 'vars.enabled and env.name == "default"'
    assert step.when.evaluate({"vars": {"enabled": False}, "env": {"name": "default"}}) is False
    assert step.when.evaluate({"vars": {"enabled": True}, "env": {"name": "default"}}) is True


PARAMS = """\
vars: { service: nginx, port: 8080 }
steps:
  - id: first
    chaos: kill_process
    with: { name: "${vars.service}", signal: KILL }
  - id: squat
    chaos: occupy_port
    with:
      port: ${vars.port}
      address: ${target.host}
      process_name: "${env.name}/${target.role}:${target.port}"
      duration: ${steps.first.result.matched}
"""


def test_static_parameters_are_resolved_with_their_types(tmp_path: Path) -> None:
    env = build_plan(_scenario(tmp_path, PARAMS, "web: { host: 10.1.1.1, port: 2222 }"), seed=1).environments[0]
    params = _by_id(env)["squat"].params
    assert params["port"] == 8080
    assert params["address"] == "10.1.1.1"
    assert params["process_name"] == "default/web:2222"
    assert _by_id(env)["first"].params == {"name": "nginx", "signal": "KILL"}
    assert not any(iter_templates(_by_id(env)["first"].params))


def test_parameters_that_read_steps_stay_templates_for_run_time(tmp_path: Path) -> None:
    env = build_plan(_scenario(tmp_path, PARAMS), seed=1).environments[0]
    step = _by_id(env)["squat"]
    template = step.params["duration"]
    assert isinstance(template, Template)
    assert template.source == "${steps.first.result.matched}"
    assert any(iter_templates(step.params))


def test_each_environment_gets_its_own_target_and_env_values(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, PARAMS)
    inventory = load_inventory(
        _write(
            tmp_path,
            "inv.yaml",
            """\
            environments:
              cand-001: { web: { host: 10.0.1.11 } }
              cand-002: { web: { host: 10.0.2.11, port: 2222 } }
            """,
        )
    )
    plan = build_plan(scenario, seed=1, inventory=inventory)
    got = {
        e.name: (_by_id(e)["squat"].params["address"], _by_id(e)["squat"].params["process_name"])
        for e in plan.environments
    }
    assert got == {"cand-001": ("10.0.1.11", "cand-001/web:22"), "cand-002": ("10.0.2.11", "cand-002/web:2222")}


# --------------------------------------------------------------------------- inventories


def test_inventory_merge_is_scenario_then_defaults_then_environment(tmp_path: Path) -> None:
    scenario = _scenario(
        tmp_path / "scen",
        "steps:\n  - { id: p, wait: 1s }\n",
        "web: { host: 127.0.0.1, port: 2200, user: alice, identity: scen_key, known_hosts: scen_kh, tmp_dir: /scen }",
    )
    inventory = load_inventory(
        _write(
            tmp_path / "inv",
            "inv.yaml",
            """\
            defaults: { user: bob, identity: keys/exam_ed25519 }
            environments:
              cand-001: { web: { host: 10.0.1.11 } }
              cand-002: { web: { host: 10.0.2.11, user: carol, identity: /abs/key, port: 2222 } }
            """,
        )
    )
    plan = build_plan(scenario, seed=1, inventory=inventory)
    one, two = (env.targets["web"] for env in plan.environments)
    inv_dir = (tmp_path / "inv").resolve()
    scen_dir = (tmp_path / "scen").resolve()
    # defaults beat the scenario; the scenario fills what the inventory leaves out
    assert (one.host, one.port, one.user, one.tmp_dir) == ("10.0.1.11", 2200, "bob", "/scen")
    assert one.identity == str(inv_dir / "keys" / "exam_ed25519")
    assert one.known_hosts == str(scen_dir / "scen_kh")
    # the environment's own entry beats both
    assert (two.host, two.port, two.user, two.identity) == ("10.0.2.11", 2222, "carol", "/abs/key")


def test_relative_paths_resolve_against_the_file_that_names_them(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path / "a", "steps: []\n", "web: { host: h, identity: k1, known_hosts: ../kh }")
    env = build_plan(scenario, seed=1).environments[0]
    assert env.targets["web"].identity == str((tmp_path / "a" / "k1").resolve())
    assert env.targets["web"].known_hosts == str((tmp_path / "kh").resolve())
    inventory = load_inventory(
        _write(tmp_path / "b" / "c", "inv.yaml", "environments:\n  e1: { web: { host: h, identity: ../id } }\n")
    )
    env = build_plan(scenario, seed=1, inventory=inventory).environments[0]
    assert env.targets["web"].identity == str((tmp_path / "b" / "id").resolve())


def test_a_tilde_in_a_key_path_is_the_home_folder(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, "steps: []\n", "web: { host: h, identity: ~/.ssh/exam }")
    env = build_plan(scenario, seed=1).environments[0]
    assert env.targets["web"].identity == os.path.expanduser("~/.ssh/exam")


def test_an_environment_without_a_host_for_a_role_is_an_error_naming_it(tmp_path: Path) -> None:
    scenario = _scenario(
        tmp_path,
        "steps:\n  - { id: k, target: web, chaos: kill_process, with: { name: x } }\n"
        "  - { id: d, target: db, chaos: kill_process, with: { name: y } }\n",
        "web: { host: 127.0.0.1 }\n  db: { host: 127.0.0.2 }",
    )
    inventory = load_inventory(
        _write(
            tmp_path,
            "inv.yaml",
            """\
            environments:
              cand-001: { web: { host: 10.0.1.11 }, db: { host: 10.0.1.12 } }
              cand-002: { web: { host: 10.0.2.11 } }
            """,
        )
    )
    with pytest.raises(ScenarioErrors) as info:
        build_plan(scenario, seed=1, inventory=inventory)
    assert str(info.value) == f"{tmp_path / 'inv.yaml'}:3:3: environment 'cand-002' has no host for role 'db'"


def test_extra_roles_in_an_inventory_do_not_change_the_default_target(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, "steps:\n  - { id: k, chaos: kill_process, with: { name: '${target.host}' } }\n")
    inventory = load_inventory(
        _write(tmp_path, "inv.yaml", "environments:\n  e1: { web: { host: 10.0.0.1 }, db: { host: 10.0.0.2 } }\n")
    )
    step = build_plan(scenario, seed=1, inventory=inventory).environments[0].steps[0]
    assert step.target is not None and step.target.role == "web"
    assert step.params == {"name": "10.0.0.1"}


def test_a_role_with_no_host_and_no_inventory_is_an_error_at_the_step(tmp_path: Path) -> None:
    text = "version: 1\nname: t\nsteps:\n  - { id: k, target: db, chaos: kill_process, with: { name: x } }\n"
    path = _write(tmp_path, "s.yaml", text)
    with pytest.raises(ScenarioErrors) as info:
        build_plan(load_scenario(path), seed=1)
    assert str(info.value) == f"{path}:4:22: role 'db' has no host: define it under targets or give an inventory (-i)"


def test_without_an_inventory_there_is_one_environment_named_default(tmp_path: Path) -> None:
    plan = build_plan(_scenario(tmp_path, "steps: []\n"), seed=1)
    assert [e.name for e in plan.environments] == ["default"]


# --------------------------------------------------------------------------- CLI output


def _plan_cli(*argv: str, cwd: Path) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["plan", *argv])
    return code, out.getvalue()


SMALL = """\
version: 1
name: small
targets:
  web: { host: 10.0.0.5, user: exam }
vars:
  port: 8080
steps:
  - id: kill_web
    target: web
    chaos: kill_process
    with: { name: nginx, signal: KILL }
    retries: 1
  - id: squat
    target: web
    chaos: occupy_port
    needs: []
    with: { port: "${vars.port}" }
    timeout: 20s
  - id: pick
    needs: [kill_web, squat]
    when: steps.kill_web.ok
    one_of:
      - { id: perms, target: web, chaos: kill_process, with: { name: "${steps.kill_web.result.signal}" } }
      - { id: owner, target: web, chaos: stop_service, with: { service: nginx } }
  - id: pause
    wait: 2s
verify:
  - id: answers
    target: web
    probe: port_open
    with: { port: 80 }
    expect: result.open == true
    points: 5
"""


def test_plan_text_output_is_readable(tmp_path: Path) -> None:
    _write(tmp_path, "small.yaml", SMALL)
    code, out = _plan_cli("small.yaml", "--seed", "4", cwd=tmp_path)
    assert code == 0
    picked = "perms" if "perms            chaos" in out else "owner"
    other = {"perms": "owner", "owner": "perms"}[picked]
    pick_lines = {
        "perms": [
            "      perms            chaos kill_process on web (exam@10.0.0.5:22)",
            "            with name=${steps.kill_web.result.signal}",
        ],
        "owner": [
            "      owner            chaos stop_service on web (exam@10.0.0.5:22)",
            "            with service=nginx",
        ],
    }[picked]
    sha = build_plan(load_scenario(tmp_path / "small.yaml"), seed=4).scenario.sha256[:12]
    assert out.splitlines() == [
        f"plan for small (small.yaml, sha256 {sha}), seed 4",
        "monitor: listen on 127.0.0.1, dial 127.0.0.1, ports 20000-60999, callback timeout 30s",
        "",
        "environment default",
        "  web: exam@10.0.0.5:22",
        "  steps:",
        "    stage 1 (2 in parallel)",
        "      kill_web         chaos kill_process on web (exam@10.0.0.5:22)",
        "            with name=nginx signal=KILL",
        "            timeout 1m; retries 1",
        "      squat            chaos occupy_port on web (exam@10.0.0.5:22)",
        "            with port=8080",
        "            timeout 20s",
        "    stage 2",
        *pick_lines,
        f"            needs kill_web, squat; picked by one_of pick; skipped: {other}; "
        "when steps.kill_web.ok; timeout 1m",
        "    stage 3",
        "      pause            wait 2s",
        "            after pick",
        "  verify:",
        "    stage 1",
        "      answers          probe port_open on web (exam@10.0.0.5:22)",
        "            with port=80",
        "            expect result.open == true; timeout 1m; 5 points",
    ]


def test_plan_json_output_has_the_documented_shape(tmp_path: Path) -> None:
    _write(tmp_path, "small.yaml", SMALL)
    code, out = _plan_cli("small.yaml", "--seed", "4", "--format", "json", cwd=tmp_path)
    assert code == 0
    data: dict[str, Any] = json.loads(out)
    assert set(data) == {"scenario", "seed", "monitor", "environments"}
    assert data["scenario"]["name"] == "small" and data["scenario"]["file"] == "small.yaml"
    assert len(data["scenario"]["sha256"]) == 64
    assert data["seed"] == 4
    assert data["monitor"] == {
        "bind": "127.0.0.1",
        "advertise": None,
        "ports": [20000, 60999],
        "callback_timeout": 30.0,
        "callback": "direct",
    }
    (env,) = data["environments"]
    assert set(env) == {"name", "targets", "picks", "steps", "verify"}
    assert env["targets"] == {"web": {"host": "10.0.0.5", "port": 22, "user": "exam", "insecure": False}}
    assert set(env["picks"]) == {"pick"}
    squat = env["steps"][1]
    assert squat == {
        "id": "squat",
        "slot": "squat",
        "line": 13,
        "kind": "chaos",
        "module": "occupy_port",
        "from": "target",
        "target": "web",
        "host": "10.0.0.5:22",
        "params": {"port": 8080},
        "after": [],
        "explicit_needs": True,
        "level": 1,
        "when": None,
        "expect": None,
        "timeout": 20.0,
        "retries": 0,
        "points": 0.0,
        "skipped_by_when": False,
        "wait": None,
        "skipped_options": [],
    }
    pick = env["steps"][2]
    assert pick["slot"] == "pick" and pick["id"] == env["picks"]["pick"]
    if pick["id"] == "perms":
        assert pick["params"] == {"name": {"template": "${steps.kill_web.result.signal}"}}
    assert [s["id"] for s in env["verify"]] == ["answers"]
    assert env["verify"][0]["expect"] == "result.open == true" and env["verify"][0]["points"] == 5.0


def test_plan_var_overrides_a_variable_with_a_typed_value(tmp_path: Path) -> None:
    _write(tmp_path, "small.yaml", SMALL)
    code, out = _plan_cli("small.yaml", "--seed", "1", "--format", "json", "--var", "port=9090", cwd=tmp_path)
    assert code == 0
    assert json.loads(out)["environments"][0]["steps"][1]["params"] == {"port": 9090}


def test_plan_with_an_inventory_lists_every_environment(tmp_path: Path) -> None:
    _write(tmp_path, "small.yaml", SMALL)
    _write(tmp_path, "inv.yaml", "environments:\n  a: { web: { host: 10.0.0.1 } }\n  b: { web: { host: 10.0.0.2 } }\n")
    code, out = _plan_cli("small.yaml", "-i", "inv.yaml", "--seed", "1", "--format", "json", cwd=tmp_path)
    assert code == 0
    envs = json.loads(out)["environments"]
    assert [(e["name"], e["targets"]["web"]["host"]) for e in envs] == [("a", "10.0.0.1"), ("b", "10.0.0.2")]


def test_wait_steps_have_a_duration_and_no_module(tmp_path: Path) -> None:
    step = build_plan(_scenario(tmp_path, "steps:\n  - { id: p, wait: 250ms }\n"), seed=1).environments[0].steps[0]
    assert (step.kind, step.wait, step.module, step.params) == (StepKind.WAIT, 0.25, None, {})


def test_format_plan_marks_insecure_hosts(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, "steps: []\n", "web: { host: h, insecure: true }")
    assert "  web: root@h:22 (host key NOT verified)" in format_plan(build_plan(scenario, seed=1)).splitlines()


def test_plan_marks_a_step_that_a_static_when_skips_and_counts_points_in_good_grammar(tmp_path: Path) -> None:
    scenario = _scenario(
        tmp_path,
        """
        vars: { firewall: false }
        steps:
          - { id: wall, chaos: block_port, with: { port: 80 }, when: vars.firewall }
          - { id: always, chaos: block_port, with: { port: 81 }, when: "not vars.firewall" }
        verify:
          - { id: one, probe: port_open, with: { port: 80 }, expect: result.open, points: 1 }
          - { id: two, probe: port_open, with: { port: 81 }, expect: result.open, points: 2 }
        """,
    )
    plan = build_plan(scenario, seed=1)
    steps = _by_id(plan.environments[0])
    assert (steps["wall"].static_skip, steps["always"].static_skip) == (True, False)
    text = format_plan(plan)
    assert "when vars.firewall (false here: skipped)" in text
    assert "when not vars.firewall;" in text
    assert "; 1 point" in text and "1 points" not in text and "; 2 points" in text


@pytest.mark.parametrize("rooms", [2, 3, 7, 31])
def test_one_of_spread_hands_options_out_evenly_and_neighbours_differ_for_every_seed(
    tmp_path: Path, rooms: int
) -> None:
    scenario = _scenario(tmp_path, PICK.replace("  - id: pick\n", "  - id: pick\n    spread: true\n"))
    envs = "".join(f"  cand-{i:03}: {{ web: {{ host: 10.0.0.{i} }} }}\n" for i in range(1, rooms + 1))
    inventory = load_inventory(_write(tmp_path, "inv.yaml", "environments:\n" + envs))
    seen = set()
    for seed in range(40):
        picks = list(_picked(build_plan(scenario, seed=seed, inventory=inventory)).values())
        counts = [picks.count(o) for o in ("opt_a", "opt_b", "opt_c")]
        assert max(counts) - min(counts) <= 1, (seed, picks)
        assert all(a != b for a, b in zip(picks, picks[1:], strict=False)), (seed, picks)
        assert picks == list(_picked(build_plan(scenario, seed=seed, inventory=inventory)).values())
        seen.add(tuple(picks))
    assert len(seen) > 1  # the seed still decides who gets what


def test_spread_is_only_for_one_of(tmp_path: Path) -> None:
    with pytest.raises(ScenarioErrors, match="spread is only for one_of"):
        _scenario(tmp_path, "steps:\n  - { id: a, wait: 1s, spread: true }\n")
