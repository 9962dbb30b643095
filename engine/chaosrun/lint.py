"""Lint stage: cross-checks on a parsed Scenario, every error at once.

parse.py has checked structure and expression syntax; here we check what needs the whole
file: ids, ``needs`` (unknown, cycles), names in expressions (and whether a referenced
step surely ran before), target roles, modules and their declared parameters.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import _schema
from ._source import gc_paused
from ._spans import ScenarioError, ScenarioErrors, Span
from .expr import EvalError, Expr, NameRef, Template, has_interpolation, iter_leaves, iter_templates, render_static
from .modules import ModuleDecl, ModuleKind, catalogue, duration_in
from .parse import parse_scenario, read_source
from .regex import RE2_HINT, re2_error
from .scenario import Origin, Repair, Scenario, Section, Step, StepKind

ROOT_NAMES = ("vars", "steps", "target", "env", "result")
STEP_FIELDS = ("ok", "status", "result", "duration")
TARGET_FIELDS = ("host", "port", "user", "role")
ENV_FIELDS = ("name", "vars")  # env.vars.NAME: any NAME; plan checks it against the inventory


def _hint(word: str, choices: Any) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean {close[0]!r}?" if close else None


class _Graph:
    """Order of one section's top-level steps: who surely finished before whom."""

    def __init__(self, steps: tuple[Step, ...], errors: list[ScenarioError]) -> None:
        self.top: dict[str, Step] = {}
        for s in steps:
            if s.id:
                self.top.setdefault(s.id, s)
        self.group_of: dict[str, str] = {}
        for s in steps:
            for o in s.options:
                if o.id:
                    self.group_of[o.id] = s.id
        self.deps: dict[str, tuple[str, ...]] = {}
        previous: str | None = None
        for s in steps:
            if not s.id:
                continue
            deps: tuple[str, ...] = (previous,) if previous else ()
            if s.needs is not None:
                known = []
                for name, span in zip(s.needs, s.needs_spans, strict=False):
                    target = self.group_of.get(name, name)
                    if target == s.id:
                        errors.append(ScenarioError(f"step {s.id!r} needs itself", span))
                    elif target not in self.top:
                        errors.append(
                            ScenarioError(
                                f"step {s.id!r} needs unknown step {name!r}",
                                span,
                                _hint(name, self.top),
                            )
                        )
                    else:
                        known.append(target)
                deps = tuple(known)
            # a second step with the same id is reported as a duplicate; the first one
            # keeps the place in the graph (no self-loop, no made-up cycle)
            self.deps.setdefault(s.id, deps)
            previous = s.id
        self._check_cycles(errors)
        self._before: dict[tuple[str, str], bool] = {}
        # every id of the section, options included (the first step wins for a duplicate)
        self.steps: dict[str, Step] = {}
        for s in steps:
            for one in (s, *s.options):
                if one.id:
                    self.steps.setdefault(one.id, one)

    def _check_cycles(self, errors: list[ScenarioError]) -> None:
        # iterative depth-first search: a chain of thousands of steps (each one after the
        # step above it) must not hit Python's recursion limit
        state: dict[str, int] = {}  # 1 visiting, 2 done
        reported: set[frozenset[str]] = set()
        for root in list(self.top):
            if root in state:
                continue
            state[root] = 1
            trail = [root]
            pending = [iter(self.deps.get(root, ()))]
            while pending:
                node = trail[-1]
                dep = next(pending[-1], None)
                if dep is None:
                    pending.pop()
                    trail.pop()
                    state[node] = 2
                elif state.get(dep) == 1:
                    cycle = trail[trail.index(dep) :]
                    key = frozenset(cycle)
                    if key not in reported:
                        reported.add(key)
                        first = min(cycle, key=lambda n: self.top[n].span)
                        step = self.top[first]
                        span = step.keys.get("needs", step.span)
                        loop = cycle[cycle.index(first) :] + cycle[: cycle.index(first)] + [first]
                        errors.append(ScenarioError(f"needs cycle: {' -> '.join(loop)}", span))
                    # cut the edge so the rest of the graph is still usable
                    self.deps[node] = tuple(d for d in self.deps[node] if d != dep)
                elif dep not in state:
                    state[dep] = 1
                    trail.append(dep)
                    pending.append(iter(self.deps.get(dep, ())))

    def runs_before(self, earlier: str, step_id: str) -> bool:
        """Whether ``earlier`` surely finished before ``step_id`` starts: an ancestor.

        A depth-first search that stops at the first hit; references usually name a
        close ancestor, so this stays cheap on long chains (no set of all ancestors per step).
        """
        key = (earlier, step_id)
        if key not in self._before:
            seen: set[str] = set()
            stack = list(self.deps.get(step_id, ()))
            found = False
            while stack:
                node = stack.pop()
                if node == earlier:
                    found = True
                    break
                if node not in seen:
                    seen.add(node)
                    stack.extend(self.deps.get(node, ()))
            self._before[key] = found
        return self._before[key]


class _Linter:
    def __init__(self, scenario: Scenario, modules: Mapping[str, ModuleDecl]) -> None:
        self.s = scenario
        self.modules = modules
        self.errors: list[ScenarioError] = []
        self._template_refs: dict[int, list[NameRef]] = {}  # id(Template): the scenario keeps them alive

    def run(self) -> list[ScenarioError]:
        self._duplicate_ids()
        for steps in (self.s.steps, self.s.verify):
            graph = _Graph(steps, self.errors)
            for step in steps:
                self._step(step, graph, top=step)
                for option in step.options:
                    self._step(option, graph, top=step)
        self._repairs()
        self._guards()
        return self.errors

    def _guards(self) -> None:
        """Each guard names one thing, on a role the scenario has."""
        roles = set(self.s.targets) | {s.target for s in self.s.all_steps() if s.target}
        for guard in self.s.guards:
            if guard.target not in roles:
                choices = ", ".join(sorted(roles)) or "none defined"
                self.errors.append(
                    ScenarioError(
                        f"guard {guard.label!r} names role {guard.target!r}, which no target or step has "
                        f"(roles: {choices})",
                        guard.span,
                        _hint(guard.target, roles),
                    )
                )

    def _repairs(self) -> None:
        """``solution`` and ``shortcuts`` name roles the scenario has; shortcut names are unique."""
        roles = set(self.s.targets) | {s.target for s in self.s.all_steps() if s.target}
        repairs = [*([self.s.solution] if self.s.solution else []), *self.s.shortcuts]
        for repair in repairs:
            what = "solution" if repair is self.s.solution else f"shortcut {repair.name!r}"
            for role, span in repair.role_spans.items():
                if role not in roles:
                    choices = ", ".join(sorted(roles)) or "none defined"
                    self.errors.append(
                        ScenarioError(
                            f"{what} names role {role!r}, which no target or step has (roles: {choices})",
                            span,
                            _hint(role, roles),
                        )
                    )
        seen: dict[str, Repair] = {}
        for shortcut in self.s.shortcuts:
            if shortcut.name in seen:
                self.errors.append(
                    ScenarioError(
                        f"duplicate shortcut name {shortcut.name!r} "
                        f"(first used at line {seen[shortcut.name].span.line})",
                        shortcut.span,
                    )
                )
            seen.setdefault(shortcut.name, shortcut)

    def _duplicate_ids(self) -> None:
        first: dict[str, Step] = {}
        for step in self.s.all_steps():
            if not step.id:
                continue
            if step.id in first:
                other = first[step.id]
                self.errors.append(
                    ScenarioError(
                        f"duplicate step id {step.id!r} (first used at line {other.span.line})",
                        step.keys.get("id", step.span),
                    )
                )
                self.errors.append(
                    ScenarioError(
                        f"duplicate step id {step.id!r} (used again at line {step.span.line})",
                        other.keys.get("id", other.span),
                    )
                )
            else:
                first[step.id] = step

    def _step(self, step: Step, graph: _Graph, top: Step) -> None:
        where = f"step {step.id!r}"
        keys = step.keys
        if step.group is not None:
            if "needs" in keys:
                self.errors.append(
                    ScenarioError(
                        f"{where}: an option of one_of cannot have 'needs' (put it on the one_of step)", keys["needs"]
                    )
                )
            if step.kind is StepKind.ONE_OF:
                self.errors.append(ScenarioError(f"{where}: one_of cannot be nested", keys["one_of"]))
        if step.section is Section.VERIFY and step.kind is StepKind.CHAOS:
            self.errors.append(ScenarioError(f"{where}: verify only runs probes, not chaos", keys["chaos"]))
        if "points" in keys and step.section is Section.STEPS:
            self.errors.append(ScenarioError(f"{where}: points only count in verify", keys["points"]))
        if "spread" in keys and step.kind is not StepKind.ONE_OF:
            self.errors.append(ScenarioError(f"{where}: spread is only for one_of", keys["spread"]))
        if "expect" in keys and step.kind is not StepKind.PROBE:
            self.errors.append(ScenarioError(f"{where}: expect is only for probes", keys["expect"]))
        if step.kind is StepKind.PROBE and step.points and "expect" not in keys and step.section is Section.VERIFY:
            self.errors.append(
                ScenarioError(
                    f"{where}: points without expect would be given for any answer of the probe",
                    keys["points"],
                    "write what must hold in expect (expect: result.FIELD ...); expect: true gives them for any answer",
                )
            )
        if step.kind in (StepKind.WAIT, StepKind.ONE_OF):
            for key in ("with", "target", "from"):
                if key in keys:
                    self.errors.append(ScenarioError(f"{where}: a {step.kind.value} step takes no {key!r}", keys[key]))
        if step.kind is StepKind.CHAOS and "from" in keys:
            self.errors.append(
                ScenarioError(f"{where}: chaos always runs on the target; 'from' is only for probes", keys["from"])
            )
        decl = self._module(step) if step.kind in (StepKind.CHAOS, StepKind.PROBE) else None
        if step.kind in (StepKind.CHAOS, StepKind.PROBE):
            self._target(step)
        if decl is not None:
            self._origin(step, decl)
            self._params(step, decl)
        # names used by this step's expressions
        if step.when is not None:
            self._names(step.when.names(), step, graph, top, in_expect=False)
        if step.expect is not None:
            # on a non-probe, expect is reported as such; its result fields are not checked too
            probe_decl = decl if step.kind is StepKind.PROBE else None
            self._names(step.expect.names(), step, graph, top, in_expect=True, decl=probe_decl)
        for template in iter_templates(step.params):
            self._names(self._refs(template), step, graph, top, in_expect=False)

    def _refs(self, template: Template) -> list[NameRef]:
        """``template.names()``, computed once per template (params are checked twice)."""
        key = id(template)
        if key not in self._template_refs:
            self._template_refs[key] = template.names()
        return self._template_refs[key]

    def _module(self, step: Step) -> ModuleDecl | None:
        if step.module is None:
            return None
        span = step.module_span or step.span
        decl = self.modules.get(step.module)
        if decl is None:
            wanted = ModuleKind(step.kind.value)
            same_kind = [n for n, d in self.modules.items() if d.kind is wanted]
            self.errors.append(
                ScenarioError(f"unknown {step.kind.value} module {step.module!r}", span, _hint(step.module, same_kind))
            )
            return None
        if decl.kind.value != step.kind.value:
            self.errors.append(
                ScenarioError(
                    f"{step.module!r} is a {decl.kind.value} module; write '{decl.kind.value}: {step.module}'", span
                )
            )
        return decl

    def _origin(self, step: Step, decl: ModuleDecl) -> None:
        """A probe runs where its declaration's ``x-from`` allows (``from:``, default target)."""
        if step.kind is not StepKind.PROBE or decl.kind is not ModuleKind.PROBE or decl.runs_from(step.origin):
            return
        if step.origin is Origin.MONITOR:
            able = [n for n, d in self.modules.items() if d.kind is ModuleKind.PROBE and d.runs_from(Origin.MONITOR)]
            self.errors.append(
                ScenarioError(
                    f"{decl.name} runs only on the target, not from the monitor",
                    step.keys["from"],
                    f"from: monitor takes {', '.join(able) or 'no probe'}",
                )
            )
        else:
            self.errors.append(
                ScenarioError(
                    f"{decl.name} runs only from the monitor; write 'from: monitor'",
                    step.keys.get("from") or step.module_span or step.span,
                )
            )

    def _target(self, step: Step) -> None:
        roles = self.s.targets
        if step.target is None:
            if len(roles) != 1:
                choices = ", ".join(sorted(roles)) or "none defined"
                self.errors.append(
                    ScenarioError(f"step {step.id!r} needs a target (roles: {choices})", step.module_span or step.span)
                )
            return
        if roles and step.target not in roles:
            self.errors.append(
                ScenarioError(
                    f"unknown target role {step.target!r}", step.target_span or step.span, _hint(step.target, roles)
                )
            )

    def _params(self, step: Step, decl: ModuleDecl) -> None:
        instance: dict[str, Any] = {}
        dynamic: set[str] = set()
        static_scope = {"vars": self.s.vars}
        for key, value in step.params.items():
            templates = list(iter_templates(value))
            refs = [ref for t in templates for ref in self._refs(t)]
            unknown_var = any(r.path[:1] == ("vars",) and not self._var_known(r.path) for r in refs)
            if unknown_var or _has_broken_template(value):
                # the broken ${ or the unknown variable is reported already; its value is unknown
                dynamic.add(key)
                instance[key] = None
            elif not templates:
                instance[key] = value
            elif all(ref.path[:1] == ("vars",) for ref in refs):
                try:
                    instance[key] = render_static(value, static_scope)
                except EvalError as exc:
                    at = refs[0].span if refs else step.span
                    self.errors.append(ScenarioError(f"with.{key}: {exc}", at))
                    dynamic.add(key)
                    instance[key] = None
            else:
                dynamic.add(key)
                instance[key] = None
        dynamic |= self._param_values(step, decl, instance)
        node = step.params_node
        if node is None:
            missing = [p.name for p in decl.params if p.required]
            for name in missing:
                self.errors.append(
                    ScenarioError(f"{decl.name} needs parameter {name!r}", step.module_span or step.span)
                )
            return
        validator = decl.validator
        self.errors.extend(
            _schema.schema_errors(
                node,
                validator,
                prefix=("with",),
                skip=frozenset(dynamic),
                instance=instance,
                key_span=step.keys.get("with"),
            )
        )

    def _param_values(self, step: Step, decl: ModuleDecl, instance: dict[str, Any]) -> set[str]:
        """Durations written as text become the module's unit in ``instance`` (so the schema
        checks the range); regex parameters compile with RE2. Errors point at the value;
        returns the parameters reported here (the schema need not report them again)."""
        reported: set[str] = set()
        values = step.params_node.value if step.params_node is not None else {}
        for param in decl.params:
            value = instance.get(param.name)
            if not isinstance(value, str):
                continue
            node = values.get(param.name) if isinstance(values, Mapping) else None
            at = node.span if node is not None else step.span
            if param.unit:
                try:
                    instance[param.name] = duration_in(param.unit, value)
                except ValueError as exc:
                    self.errors.append(ScenarioError(f"with.{param.name}: {exc}", at))
                    reported.add(param.name)
            elif param.regex and (problem := re2_error(value)) is not None:
                self.errors.append(
                    ScenarioError(f"with.{param.name}: invalid regular expression: {problem}", at, RE2_HINT)
                )
        return reported

    def _names(
        self,
        refs: list[NameRef],
        step: Step,
        graph: _Graph,
        top: Step,
        *,
        in_expect: bool,
        decl: ModuleDecl | None = None,
    ) -> None:
        section_steps = graph.steps
        for ref in refs:
            path = ref.path
            root = path[0] if path else None
            if root not in ROOT_NAMES:
                self.errors.append(
                    ScenarioError(
                        f"unknown name {root!r} (names start with {', '.join(ROOT_NAMES)})",
                        ref.span,
                        _hint(str(root), ROOT_NAMES),
                    )
                )
                continue
            field = path[1] if len(path) > 1 else None
            if root == "vars":
                self._var(path, ref.span)
            elif root == "target" and field is not None and field not in TARGET_FIELDS:
                self.errors.append(
                    ScenarioError(f"unknown name 'target.{field}' (target has {', '.join(TARGET_FIELDS)})", ref.span)
                )
            elif root == "env" and field is not None and field not in ENV_FIELDS:
                self.errors.append(
                    ScenarioError(
                        f"unknown name 'env.{field}' (env has {', '.join(ENV_FIELDS)})",
                        ref.span,
                        _hint(str(field), ENV_FIELDS),
                    )
                )
            elif root == "result":
                if not in_expect:
                    self.errors.append(
                        ScenarioError("'result' is only defined in expect (use steps.ID.result elsewhere)", ref.span)
                    )
                elif decl is not None and isinstance(field, str):
                    self._result_field(decl, field, ref.span)
            elif root == "steps":
                self._step_ref(path, ref.span, step, graph, top, section_steps)

    def _var_known(self, path: tuple[str | int, ...]) -> bool:
        """Whether ``vars.a.b`` names an existing variable (as far as lint can tell)."""
        value: Any = self.s.vars
        for part in path[1:]:
            if not isinstance(value, Mapping) or not isinstance(part, str):
                return True  # indexing is checked at run time
            if part not in value:
                return False
            value = value[part]
        return True

    def _var(self, path: tuple[str | int, ...], span: Span) -> None:
        value: Any = self.s.vars
        shown = "vars"
        for part in path[1:]:
            if not isinstance(value, Mapping) or not isinstance(part, str):
                return  # indexing into lists etc. is checked at run time
            if part not in value:
                self.errors.append(ScenarioError(f"unknown variable '{shown}.{part}'", span, _hint(part, value)))
                return
            value = value[part]
            shown += f".{part}"

    def _step_ref(
        self,
        path: tuple[str | int, ...],
        span: Span,
        step: Step,
        graph: _Graph,
        top: Step,
        section_steps: Mapping[str, Step],
    ) -> None:
        if len(path) < 2 or not isinstance(path[1], str):
            return
        ref_id = path[1]
        if ref_id not in section_steps:
            hint = _hint(ref_id, section_steps)
            if step.section is Section.VERIFY and any(s.id == ref_id for s in self.s.all_steps()):
                hint = "verify is its own run: steps.ID there names an earlier probe of verify"
            self.errors.append(ScenarioError(f"unknown step {ref_id!r}", span, hint))
            return
        ref_top = graph.group_of.get(ref_id, ref_id)
        if ref_top == top.id and ref_id not in (step.id, top.id):
            self.errors.append(
                ScenarioError(
                    f"step {step.id!r} uses steps.{ref_id}, another option of the same one_of (only one of them runs)",
                    span,
                )
            )
            return
        if ref_top == top.id:
            self.errors.append(
                ScenarioError(f"step {step.id!r} refers to its own result (use result.FIELD in expect)", span)
            )
            return
        if not graph.runs_before(ref_top, top.id):
            self.errors.append(
                ScenarioError(
                    f"step {step.id!r} uses steps.{ref_id} but {ref_id!r} does not surely run before it "
                    "(add it to needs)",
                    span,
                )
            )
            return
        if len(path) > 2:
            field = path[2]
            if field not in STEP_FIELDS:
                self.errors.append(
                    ScenarioError(
                        f"unknown name 'steps.{ref_id}.{field}' (a step has {', '.join(STEP_FIELDS)})",
                        span,
                        _hint(str(field), STEP_FIELDS),
                    )
                )
            elif field == "result" and len(path) > 3 and isinstance(path[3], str):
                referenced = section_steps[ref_id]
                candidates = referenced.options or (referenced,)
                decls = [self.modules.get(o.module or "") for o in candidates]
                if all(d is not None and d.results for d in decls):
                    fields = {f.name for d in decls if d for f in d.results}
                    if path[3] not in fields:
                        self.errors.append(
                            ScenarioError(
                                f"step {ref_id!r} has no result field {path[3]!r}", span, _hint(path[3], fields)
                            )
                        )

    def _result_field(self, decl: ModuleDecl, field: str, span: Span) -> None:
        fields = {f.name for f in decl.results}
        if fields and field not in fields:
            self.errors.append(ScenarioError(f"{decl.name} has no result field {field!r}", span, _hint(field, fields)))


def _has_broken_template(value: Any) -> bool:
    """A string that still holds ``${`` after parse: its template did not compile (reported)."""
    return any(isinstance(leaf, str) and has_interpolation(leaf) for leaf in iter_leaves(value))


def lint_scenario(scenario: Scenario, modules: Mapping[str, ModuleDecl] | None = None) -> list[ScenarioError]:
    """Cross-checks on a parsed scenario (the parse errors are separate)."""
    return _Linter(scenario, catalogue() if modules is None else modules).run()


def scenario_warnings(scenario: Scenario, modules: Mapping[str, ModuleDecl] | None = None) -> list[ScenarioError]:
    """What is valid but may not work everywhere: a module the catalogue says needs
    something many machines lack (``x-requires``), at the step that uses it."""
    cat = catalogue() if modules is None else modules
    warnings = []
    for step in scenario.all_steps():
        for s in (step, *step.options):
            decl = cat.get(s.module) if s.module else None
            if decl is None:
                continue
            if decl.requires:
                warnings.append(
                    ScenarioError(
                        f"warning: step {s.id!r}: {decl.name} needs {decl.needs}; "
                        "on a machine without it the step fails and changes nothing",
                        s.module_span or s.span,
                    )
                )
            for unless, message in decl.warnings:
                # a value computed at run time (${...}) may be the right one: no warning then
                given = {k: s.params[k] for k in unless if k in s.params}
                if all(k in given and (given[k] == v or not isinstance(given[k], type(v))) for k, v in unless.items()):
                    continue
                said = ", ".join(f"{k}: {json.dumps(v)}" for k, v in unless.items())
                warnings.append(
                    ScenarioError(f"warning: step {s.id!r}: {message}", s.module_span or s.span, f"give {said}")
                )
    return ScenarioErrors(warnings).errors


def check_scenario_text(text: str, file: str) -> tuple[Scenario | None, list[ScenarioError]]:
    """Parse and lint; returns the Scenario (None if unusable) and all errors, sorted."""
    with gc_paused():
        scenario, errors = parse_scenario(text, file)
        if scenario is not None:
            errors = errors + lint_scenario(scenario)
    return scenario, ScenarioErrors(errors).errors


def load_scenario(path: str | Path) -> Scenario:
    """Read, parse and lint a scenario file.

    Raises:
        ScenarioErrors: every problem found, sorted by position.
    """
    text, name = read_source(path)
    scenario, errors = check_scenario_text(text, name)
    if errors or scenario is None:
        raise ScenarioErrors(errors)
    return scenario


__all__ = ["Expr", "check_scenario_text", "lint_scenario", "load_scenario", "scenario_warnings"]
