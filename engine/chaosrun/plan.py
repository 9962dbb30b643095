"""Plan stage: turn a linted Scenario (and an inventory) into a Plan. Pure: no I/O, no clock.

Per environment: the hosts of every role, the steps in order with the steps each waits
for, ``one_of`` picks from a seeded generator, and parameters resolved where they only
depend on ``vars``, ``target`` and ``env``. Templates that read ``steps.*`` stay
templates; the runtime renders them when the step starts.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ._spans import ScenarioError, ScenarioErrors, Span
from .expr import And, EvalError, Expr, NameRef, Template, iter_templates, map_templates
from .inventory_model import Environment, Inventory, absolute
from .scenario import (
    Origin,
    Scenario,
    Section,
    Step,
    StepKind,
    TargetSpec,
    format_duration,
)

DEFAULT_ENVIRONMENT = "default"


@dataclass(frozen=True)
class PlannedStep:
    """One step as it will run in one environment."""

    id: str  # the id results are stored under (the picked option's id for one_of)
    slot: str  # the top-level id others wait for (the one_of group's id, else id)
    span: Span
    kind: StepKind
    section: Section
    module: str | None
    target: TargetSpec | None
    params: Mapping[str, Any]  # resolved; Templates remain where they read steps.*
    after: tuple[str, ...]  # slots that must finish first
    explicit_needs: bool  # after came from `needs` (failure there skips this step)
    when: Expr | None
    expect: Expr | None
    timeout: float
    retries: int
    points: float
    wait: float | None
    level: int  # 1 + the longest chain of `after` above it: steps of one level may run together
    skipped_options: tuple[str, ...] = ()  # one_of: the options not picked
    origin: Origin = Origin.TARGET  # `from:`: a probe run by the monitor against target.host
    static_skip: bool = False  # its `when` reads only vars/env/target and is false: it will be skipped


def machine_step(
    name: str, target: TargetSpec, module: str, params: Mapping[str, Any], *, kind: StepKind, section: Section,
    timeout: float, level: int,
) -> PlannedStep:  # fmt: skip
    """A step of chaosrun's own on one machine (``restore:web``, ``guard:web``): no scenario
    step stands behind it, nothing waits for it, it gives no points."""
    return PlannedStep(
        id=name,
        slot=name,
        span=target.span,
        kind=kind,
        section=section,
        module=module,
        target=target,
        params=params,
        after=(),
        explicit_needs=False,
        when=None,
        expect=None,
        timeout=timeout,
        retries=0,
        points=0.0,
        wait=None,
        level=level,
    )


@dataclass(frozen=True)
class EnvPlan:
    name: str
    targets: Mapping[str, TargetSpec]
    steps: tuple[PlannedStep, ...]
    verify: tuple[PlannedStep, ...]
    vars: Mapping[str, Any] = field(default_factory=dict)  # the inventory's, read as env.vars


@dataclass(frozen=True)
class Plan:
    scenario: Scenario
    seed: int
    environments: tuple[EnvPlan, ...]
    picks: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # env -> group -> option


def pick_option(seed: int, env: str, group: str, count: int) -> int:
    """Index of the option a ``one_of`` picks: a pure function of seed, env and group."""
    return random.Random(f"{seed}/{env}/{group}").randrange(count)


def spread_option(seed: int, group: str, index: int, count: int) -> int:
    """Index of the option a ``one_of`` with ``spread: true`` gives the environment at
    ``index`` (inventory order): the options in a seeded order, dealt round from a seeded
    start, so each is used ``n // count`` or one more times and neighbours differ."""
    rng = random.Random(f"{seed}/{group}/spread")
    order = list(range(count))
    rng.shuffle(order)
    return order[(index + rng.randrange(count)) % count]


def _merge(base: TargetSpec, over: TargetSpec, keys: frozenset[str]) -> TargetSpec:
    return replace(base, **{k: getattr(over, k) for k in keys if k != "role"})


def _environments(scenario: Scenario, inventory: Inventory | None) -> list[tuple[Environment, dict[str, TargetSpec]]]:
    base = {
        role: replace(
            spec,
            identity=absolute(spec.identity, scenario.base_dir),
            known_hosts=absolute(spec.known_hosts, scenario.base_dir),
        )
        for role, spec in scenario.targets.items()
    }
    if inventory is None:
        # lint allows roles the scenario leaves to an inventory; without one they have no host
        missing = [
            ScenarioError(
                f"role {s.target!r} has no host: define it under targets or give an inventory (-i)",
                s.target_span or s.span,
            )
            for s in scenario.all_steps()
            if s.target and s.target not in base
        ]
        default = Environment(DEFAULT_ENVIRONMENT, Span(scenario.file, 1, 1), {}, {})
        missing += _env_var_errors(scenario, [default])
        if missing:
            raise ScenarioErrors(missing)
        return [(default, base)]
    used = _roles_used(scenario) | set(scenario.targets)
    environments, errors = inventory.placed(used)
    # an Ansible inventory read --env-per host: each host is an environment of its own
    alone = _ALONE if inventory.hosts and inventory.env_per == "host" and len(used) > 1 else None
    out = []
    for env in environments:
        hosts: dict[str, TargetSpec] = {}
        for role in sorted(used | set(env.hosts)):
            spec = base.get(role, TargetSpec(role=role, host="", span=env.span))
            if inventory.defaults is not None:
                spec = _merge(spec, inventory.defaults, inventory.defaults_given)
            if role in env.hosts:
                spec = _merge(spec, env.hosts[role], env.given[role])
            elif "host" not in inventory.defaults_given:
                # never fall back to the scenario's own host: with an inventory, that host
                # would be hit once per candidate whose entry forgot the role
                message = f"environment {env.name!r} has no host for role {role!r}"
                errors.append(ScenarioError(message, env.span, alone))
                continue
            if not spec.host:
                errors.append(ScenarioError(f"environment {env.name!r}, role {role!r}: missing host", env.span))
                continue
            hosts[role] = spec
        out.append((env, hosts))
    errors += _env_var_errors(scenario, [env for env, _ in out])
    if errors:
        raise ScenarioErrors(errors)
    return out


_ALONE = (
    "with --env-per host each host is an environment: set chaosrun_role to every role it plays, or use --env-per group"
)


def _env_var_errors(scenario: Scenario, environments: list[Environment]) -> list[ScenarioError]:
    """Every ``env.vars.NAME`` the scenario reads that an environment lacks (or whose
    hosts disagree on): one error at the expression, naming the environments."""
    errors = []
    for ref in _env_var_refs(scenario):
        name = str(ref.path[2])
        missing = [e.name for e in environments if name not in e.vars and name not in e.ambiguous]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            errors.append(
                ScenarioError(
                    f"env.vars.{name} is not set in environment{'s' if len(missing) > 1 else ''} {shown}",
                    ref.span,
                    "give every environment this variable in the inventory",
                )
            )
        for env in environments:
            if name in env.ambiguous:
                why = env.ambiguous[name]
                message = f"env.vars.{name} has no one value in environment {env.name!r}: {why}"
                errors.append(ScenarioError(message, ref.span))
    return errors


def _env_var_refs(scenario: Scenario) -> list[NameRef]:
    """Each ``env.vars.NAME`` in the scenario's conditions and templates, with its place."""
    refs: list[NameRef] = []
    for step in scenario.all_steps():
        for expr in (step.when, step.expect):
            if expr is not None:
                refs += expr.names()
        for template in iter_templates(step.params):
            refs += template.names()
    return [r for r in refs if len(r.path) > 2 and r.path[:2] == ("env", "vars") and isinstance(r.path[2], str)]


def _roles_used(scenario: Scenario) -> set[str]:
    return {s.target for s in scenario.all_steps() if s.target}


def _levels(steps: list[tuple[str, tuple[str, ...]]]) -> dict[str, int]:
    """1 + the longest chain of ``after`` above each slot. ``needs`` may name a step
    further down the file, so this follows the graph, not the file order."""
    after_of = dict(steps)
    level: dict[str, int] = {}
    for slot, _ in steps:
        stack = [slot]
        while stack:  # iterative depth-first: no recursion limit on long chains
            node = stack[-1]
            if node in level:
                stack.pop()
                continue
            pending = [a for a in after_of.get(node, ()) if a in after_of and a not in level and a not in stack]
            if pending:
                stack.extend(pending)
                continue
            # a dependency still on the stack is a cycle (lint reports those); it counts as 0
            level[node] = 1 + max((level.get(a, 0) for a in after_of.get(node, ())), default=0)
            stack.pop()
    return level


def _plan_section(
    scenario: Scenario,
    steps: tuple[Step, ...],
    env: str,
    targets: Mapping[str, TargetSpec],
    draw: tuple[int, int],  # the seed, and the environment's index in the inventory
    picks: dict[str, str],
    env_vars: Mapping[str, Any],
) -> tuple[PlannedStep, ...]:
    seed, env_index = draw
    order: list[tuple[str, tuple[str, ...]]] = []
    previous: str | None = None
    option_group = {o.id: s.id for s in steps for o in s.options}
    for step in steps:
        if step.needs is None:
            after: tuple[str, ...] = (previous,) if previous else ()
        else:
            after = tuple(dict.fromkeys(option_group.get(n, n) for n in step.needs))
        order.append((step.id, after))
        previous = step.id
    levels = _levels(order)
    out = []
    for step, (slot, after) in zip(steps, order, strict=True):
        chosen: Step = step
        skipped: tuple[str, ...] = ()
        if step.kind is StepKind.ONE_OF and step.options:
            count = len(step.options)
            index = (
                spread_option(seed, step.id, env_index, count)
                if step.spread
                else pick_option(seed, env, step.id, count)
            )
            chosen = step.options[index]
            skipped = tuple(o.id for o in step.options if o is not chosen)
            picks[step.id] = chosen.id
        # no target: the scenario's only role (an inventory may list more roles than that)
        role = chosen.target or (next(iter(scenario.targets)) if len(scenario.targets) == 1 else None)
        target = targets.get(role) if role else None
        scope = {
            "vars": scenario.vars,
            "env": {"name": env, "vars": env_vars},
            **({"target": target.as_scope()} if target else {}),
        }
        out.append(
            PlannedStep(
                id=chosen.id,
                slot=slot,
                span=chosen.span,
                kind=chosen.kind,
                section=chosen.section,
                module=chosen.module,
                target=target,
                params=_resolve(chosen.params, scope),
                after=after,
                explicit_needs=step.needs is not None,
                when=(when := _both(step.when, chosen.when) if chosen is not step else step.when),
                static_skip=_statically_false(when, scope),
                expect=chosen.expect,
                timeout=chosen.timeout,
                retries=chosen.retries,
                points=chosen.points,
                wait=chosen.wait,
                level=levels[slot],
                skipped_options=skipped,
                origin=chosen.origin,
            )
        )
    return tuple(out)


def _statically_false(when: Expr | None, scope: Mapping[str, Any]) -> bool:
    """A ``when`` that reads only names known at plan time and is not true there."""
    if when is None or any(ref.path[:1] and ref.path[0] not in _STATIC_ROOTS for ref in when.names()):
        return False
    try:
        return when.evaluate(scope) is not True
    except EvalError:
        return False  # the run says why


def _both(group: Expr | None, option: Expr | None) -> Expr | None:
    """The condition of a picked option: the one_of's own ``when`` and the option's."""
    if group is None or option is None:
        return group or option
    return replace(group, source=f"({group.source}) and ({option.source})", ast=And(group.ast, option.ast))


_STATIC_ROOTS = frozenset({"vars", "env", "target"})


def _resolve(params: Mapping[str, Any], scope: Mapping[str, Any]) -> dict[str, Any]:
    """Render templates that only read static names; keep the others for run time."""

    def resolve(template: Template) -> Any:
        refs = template.names()
        if not all(ref.path[:1] and ref.path[0] in _STATIC_ROOTS for ref in refs):
            return template
        try:
            return template.render(scope)
        except EvalError as exc:
            raise ScenarioErrors([ScenarioError(str(exc), refs[0].span if refs else Span("?", 1, 1))]) from None

    resolved: dict[str, Any] = map_templates(params, resolve)
    return resolved


def build_plan(scenario: Scenario, *, seed: int, inventory: Inventory | None = None) -> Plan:
    """Turn a linted scenario into a Plan.

    Args:
        scenario: from :func:`chaosrun.lint.load_scenario` (already linted).
        seed: drives every ``one_of`` pick; the same seed gives the same plan.
        inventory: environments to run; None means one environment, ``default``,
            with the scenario's own targets.

    Raises:
        ScenarioErrors: the inventory lacks a host for a role (or cannot say which
            role an Ansible host plays), an environment lacks an ``env.vars.NAME`` the
            scenario reads, or a static template cannot be rendered for some environment.
    """
    envs = []
    all_picks: dict[str, dict[str, str]] = {}
    for index, (env, targets) in enumerate(_environments(scenario, inventory)):
        picks: dict[str, str] = {}
        name = env.name
        steps = _plan_section(scenario, scenario.steps, name, targets, (seed, index), picks, env.vars)
        verify = _plan_section(scenario, scenario.verify, name, targets, (seed, index), picks, env.vars)
        envs.append(EnvPlan(name, targets, steps, verify, env.vars))
        all_picks[name] = picks
    return Plan(scenario, seed, tuple(envs), all_picks)


# --- presentation -------------------------------------------------------------------


def _show_value(value: Any) -> str:
    if isinstance(value, Template):
        return value.source
    if isinstance(value, str):
        return value if value and " " not in value else repr(value)
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, list):
        return "[" + ", ".join(_show_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_show_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def _step_line(step: PlannedStep) -> str:
    if step.kind is StepKind.WAIT:
        what = f"wait {format_duration(step.wait or 0)}"
    else:
        if step.origin is Origin.MONITOR:
            on = f" from monitor to {step.target.role} ({step.target.host})" if step.target else " from monitor"
        elif step.target:
            on = f" on {step.target.role} ({step.target.user}@{step.target.host}:{step.target.port})"
        else:
            on = ""
        what = f"{step.kind.value} {step.module}{on}"
    parts = [f"{step.id:<16} {what}"]
    if step.params:
        parts.append("      with " + " ".join(f"{k}={_show_value(v)}" for k, v in step.params.items()))
    extras = []
    if step.after:
        extras.append(("needs " if step.explicit_needs else "after ") + ", ".join(step.after))
    if step.slot != step.id:
        extras.append(f"picked by one_of {step.slot}; skipped: {', '.join(step.skipped_options) or '-'}")
    if step.when is not None:
        extras.append(f"when {step.when}" + (" (false here: skipped)" if step.static_skip else ""))
    if step.expect is not None:
        extras.append(f"expect {step.expect}")
    if step.kind in (StepKind.CHAOS, StepKind.PROBE):
        extras.append(f"timeout {format_duration(step.timeout)}")
    if step.retries:
        extras.append(f"retries {step.retries}")
    if step.points:
        extras.append(f"{step.points:g} point{'' if step.points == 1 else 's'}")
    if extras:
        parts.append("      " + "; ".join(extras))
    return "\n".join(parts)


def format_plan(plan: Plan) -> str:
    """The plan as readable text (what ``chaosrun plan`` prints)."""
    monitor = plan.scenario.monitor
    s = plan.scenario
    lines = [
        f"plan for {s.name} ({s.file}, sha256 {s.sha256[:12]}), seed {plan.seed}",
        f"monitor: listen on {monitor.bind}, dial {monitor.dial_address}, "
        f"ports {monitor.ports[0]}-{monitor.ports[1]}, callback timeout "
        f"{format_duration(monitor.callback_timeout)}",
    ]
    for env in plan.environments:
        lines.append("")
        lines.append(f"environment {env.name}")
        for role, t in env.targets.items():
            insecure = " (host key NOT verified)" if t.insecure else ""
            lines.append(f"  {role}: {t.user}@{t.host}:{t.port}{insecure}")
        if env.vars:
            lines.append("  vars: " + " ".join(f"{k}={_show_value(v)}" for k, v in env.vars.items()))
        for title, section in (("steps", env.steps), ("verify", env.verify)):
            if not section:
                continue
            lines.append(f"  {title}:")
            by_level: dict[int, list[PlannedStep]] = {}
            for step in section:
                by_level.setdefault(step.level, []).append(step)
            for level in sorted(by_level):
                group = by_level[level]
                label = f"stage {level}" + (f" ({len(group)} in parallel)" if len(group) > 1 else "")
                lines.append(f"    {label}")
                for step in group:
                    lines.extend("      " + line for line in _step_line(step).splitlines())
    return "\n".join(lines)


def _json_step(step: PlannedStep) -> dict[str, Any]:
    return {
        "id": step.id,
        "slot": step.slot,
        "line": step.span.line,
        "kind": step.kind.value,
        "module": step.module,
        "from": step.origin.value,
        "target": step.target.role if step.target else None,
        "host": f"{step.target.host}:{step.target.port}" if step.target else None,
        "params": map_templates(step.params, lambda template: {"template": template.source}),
        "after": list(step.after),
        "explicit_needs": step.explicit_needs,
        "level": step.level,
        "when": str(step.when) if step.when is not None else None,
        "expect": str(step.expect) if step.expect is not None else None,
        "timeout": step.timeout,
        "retries": step.retries,
        "points": step.points,
        "skipped_by_when": step.static_skip,
        "wait": step.wait,
        "skipped_options": list(step.skipped_options),
    }


def plan_as_json(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-ready data (``chaosrun plan --format json``, the audit log)."""
    monitor = plan.scenario.monitor
    return {
        "scenario": {"name": plan.scenario.name, "file": plan.scenario.file, "sha256": plan.scenario.sha256},
        "seed": plan.seed,
        "monitor": {
            "bind": monitor.bind,
            "advertise": monitor.advertise,
            "ports": list(monitor.ports),
            "callback_timeout": monitor.callback_timeout,
            "callback": monitor.callback,
        },
        "environments": [
            {
                "name": env.name,
                "targets": {
                    r: {"host": t.host, "port": t.port, "user": t.user, "insecure": t.insecure}
                    for r, t in env.targets.items()
                },
                "picks": dict(plan.picks.get(env.name, {})),
                **({"vars": dict(env.vars)} if env.vars else {}),
                "steps": [_json_step(s) for s in env.steps],
                "verify": [_json_step(s) for s in env.verify],
            }
            for env in plan.environments
        ],
    }
