"""Parse stage: YAML text -> typed Scenario, collecting every structural error.

Structure comes from ``schemas/scenario.schema.json``; expressions are compiled here
(``grammar/expr.lark``) so that later stages only see ASTs. Cross-references (names,
modules, ``needs``) are lint's job, in ``lint.py``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _schema
from ._source import MAX_YAML_BYTES, load_yaml
from ._spans import Node, ScenarioError, ScenarioErrors, Span
from .expr import Expr, ExprError, Template, compile_expr, compile_template, has_interpolation
from .scenario import (
    DEFAULT_CALLBACK_TIMEOUT,
    DEFAULT_PORTS,
    DEFAULT_TIMEOUT,
    GUARD_KINDS,
    Guard,
    MonitorSettings,
    Origin,
    Repair,
    Scenario,
    Section,
    Step,
    StepKind,
    TargetSpec,
    Transfer,
    parse_duration,
)

_KIND_KEYS = ("chaos", "probe", "wait", "one_of")
_ORIGINS = {o.value: o for o in Origin}
_TRANSFERS = {t.value: t for t in Transfer}


def text_origin(node: Node) -> Span:
    """File position of the first character of a scalar's text."""
    if node.style in ("'", '"'):
        return Span(node.span.file, node.span.line, node.span.col + 1)
    if node.style in ("|", ">"):
        return node.text_start or Span(node.span.file, node.span.line + 1, node.span.col)
    return node.span


def read_source(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(text, display name) of a file; an unreadable file is a positioned error."""
    name = str(path)
    try:
        with open(path, encoding="utf-8") as fh:
            # a character is at least a byte: one past the limit is enough for load_yaml to
            # refuse the file, however large it is (or endless: /dev/zero)
            return fh.read(MAX_YAML_BYTES + 1), name
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ScenarioErrors([ScenarioError(f"cannot read file: {reason}", Span(name, 1, 1))]) from None


class _Collector:
    """Builds model objects from Nodes, remembering every error instead of stopping."""

    def __init__(self) -> None:
        self.errors: list[ScenarioError] = []

    def expr(self, node: Node | None) -> Expr | None:
        if node is None:
            return None
        value = node.value
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, str):
            return None  # the schema already reported the type
        try:
            return compile_expr(value, text_origin(node), line_indent=node.line_indent)
        except ExprError as exc:
            self.errors.append(exc)
            return None

    def value(self, node: Node) -> Any:
        """Plain data of a ``with``/``vars`` value, with ``${...}`` strings compiled."""
        if isinstance(node.value, dict):
            return {k: self.value(v) for k, v in node.value.items()}
        if isinstance(node.value, list):
            return [self.value(v) for v in node.value]
        if isinstance(node.value, str) and has_interpolation(node.value):
            try:
                template: Template = compile_template(node.value, text_origin(node), line_indent=node.line_indent)
            except ExprError as exc:
                self.errors.append(exc)
                return node.value
            return template
        return node.value

    def duration(self, node: Node | None, default: float) -> float:
        if node is None or not isinstance(node.value, str):
            return default
        parsed = parse_duration(node.value)
        return default if parsed is None else parsed  # schema reported the bad text


def _opt(node: Node, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    child = node.at(key)
    if child is None or not isinstance(child.value, kind) or (kind is int and isinstance(child.value, bool)):
        return default
    return child.value


def _targets(root: Node) -> dict[str, TargetSpec]:
    out: dict[str, TargetSpec] = {}
    targets = root.at("targets")
    if targets is None or not isinstance(targets.value, dict):
        return out
    for role, spec in targets.value.items():
        if isinstance(spec, Node) and isinstance(spec.value, dict):
            out[role] = target_spec(role, spec)
    return out


def target_spec(role: str, node: Node, defaults: TargetSpec | None = None) -> TargetSpec:
    """A TargetSpec from a host mapping, on top of ``defaults`` (used by inventories too)."""
    d = defaults or TargetSpec(role=role, host="", span=node.span)
    return TargetSpec(
        role=role,
        host=_opt(node, "host", str, d.host),
        span=node.span,
        port=_opt(node, "port", int, d.port),
        user=_opt(node, "user", str, d.user),
        identity=_opt(node, "identity", str, d.identity),
        known_hosts=_opt(node, "known_hosts", str, d.known_hosts),
        insecure=_opt(node, "insecure", bool, d.insecure),
        tmp_dir=_opt(node, "tmp_dir", str, d.tmp_dir),
    )


def _monitor(root: Node, c: _Collector) -> MonitorSettings:
    node = root.at("monitor")
    if node is None or not isinstance(node.value, dict):
        return MonitorSettings()
    ports = DEFAULT_PORTS
    ports_node = node.at("ports")
    if ports_node is not None and isinstance(ports_node.value, str) and "-" in ports_node.value:
        lo_text, hi_text = ports_node.value.split("-", 1)
        if lo_text.isdigit() and hi_text.isdigit():
            lo, hi = int(lo_text), int(hi_text)
            if not 1024 <= lo <= hi <= 65535:
                c.errors.append(
                    ScenarioError(
                        f"monitor.ports: {ports_node.value!r} is not a range within 1024-65535",
                        ports_node.span,
                    )
                )
            else:
                ports = (lo, hi)
    advertise = node.at("advertise")
    return MonitorSettings(
        bind=_opt(node, "bind", str, "127.0.0.1"),
        advertise=advertise.value if advertise is not None and isinstance(advertise.value, str) else None,
        ports=ports,
        callback_timeout=c.duration(node.at("callback_timeout"), DEFAULT_CALLBACK_TIMEOUT),
        callback=_opt(node, "callback", str, "direct"),
        transfer=_TRANSFERS.get(_opt(node, "transfer", str, ""), Transfer.AUTO),
    )


def _step(node: Node, section: Section, c: _Collector, group: str | None = None) -> Step | None:
    if not isinstance(node.value, dict):
        return None
    present = [k for k in _KIND_KEYS if k in node.value]
    step_id = _opt(node, "id", str, "")
    label = f"step {step_id!r}" if step_id else "step"
    if len(present) != 1:
        if not present:
            message = f"{label} needs exactly one of chaos, probe, wait or one_of"
            span = node.key_spans.get("id", node.span)
        else:
            message = f"{label} has both {present[0]!r} and {present[1]!r}; a step does one thing"
            span = node.key_spans[present[1]]
        c.errors.append(ScenarioError(message, span))
        if not present:
            return None
    kind = StepKind(present[0])
    module_node = node.at(kind.value) if kind in (StepKind.CHAOS, StepKind.PROBE) else None
    needs_node = node.at("needs")
    needs: tuple[str, ...] | None = None
    needs_spans: tuple[Span, ...] = ()
    if needs_node is not None and isinstance(needs_node.value, list):
        items = [n for n in needs_node.value if isinstance(n.value, str)]
        needs = tuple(n.value for n in items)
        needs_spans = tuple(n.span for n in items)
    params_node = node.at("with")
    params: dict[str, Any] = {}
    if params_node is not None and isinstance(params_node.value, dict):
        params = {k: c.value(v) for k, v in params_node.value.items()}
    options: tuple[Step, ...] = ()
    if kind is StepKind.ONE_OF:
        opts_node = node.at("one_of")
        if opts_node is not None and isinstance(opts_node.value, list):
            built = [_step(o, section, c, group=step_id or None) for o in opts_node.value]
            options = tuple(s for s in built if s is not None)
    wait = c.duration(node.at("wait"), 0.0) if kind is StepKind.WAIT else None
    target_node = node.at("target")
    origin = _ORIGINS.get(_opt(node, "from", str, ""), Origin.TARGET)  # the schema reported a bad value
    return Step(
        id=step_id,
        span=node.span,
        kind=kind,
        section=section,
        module=module_node.value if module_node and isinstance(module_node.value, str) else None,
        module_span=module_node.span if module_node else None,
        target=target_node.value if target_node and isinstance(target_node.value, str) else None,
        target_span=target_node.span if target_node else None,
        params=params,
        params_node=params_node,
        needs=needs,
        needs_spans=needs_spans,
        when=c.expr(node.at("when")),
        expect=c.expr(node.at("expect")),
        timeout=c.duration(node.at("timeout"), DEFAULT_TIMEOUT),
        retries=_opt(node, "retries", int, 0),
        points=float(_opt(node, "points", (int, float), 0.0)),
        wait=wait,
        options=options,
        spread=_opt(node, "spread", bool, False),
        group=group,
        description=_opt(node, "description", str, ""),
        keys=dict(node.key_spans),
        origin=origin,
    )


def _repair(name: str, node: Node, skip: tuple[str, ...] = ()) -> Repair:
    """The role -> shell entries of a ``solution`` or shortcut mapping (schema-checked)."""
    scripts: dict[str, str] = {}
    spans: dict[str, Span] = {}
    assert isinstance(node.value, dict)
    for role, child in node.value.items():
        if role in skip or not isinstance(child, Node) or not isinstance(child.value, str):
            continue
        scripts[role] = child.value
        spans[role] = node.key_spans.get(role, child.span)
    description = _opt(node, "description", str, "")
    return Repair(name=name, scripts=scripts, span=node.span, role_spans=spans, description=description)


def _repairs(root: Node) -> tuple[Repair | None, tuple[Repair, ...]]:
    solution = None
    node = root.at("solution")
    if node is not None and isinstance(node.value, dict):
        solution = _repair("solution", node)
    shortcuts: list[Repair] = []
    seq = root.at("shortcuts")
    if seq is not None and isinstance(seq.value, list):
        for item in seq.value:
            if isinstance(item, Node) and isinstance(item.value, dict):
                name = _opt(item, "name", str, "")
                shortcuts.append(_repair(name, item, skip=("name", "description")))
    return solution, tuple(shortcuts)


def _guards(root: Node, errors: list[ScenarioError]) -> tuple[Guard, ...]:
    """The ``guards`` entries (schema-checked), one kind each (else an error in ``errors``)."""
    out: list[Guard] = []
    seq = root.at("guards")
    if seq is None or not isinstance(seq.value, list):
        return ()
    for item in seq.value:
        if not isinstance(item, Node) or not isinstance(item.value, dict):
            continue
        kinds = [k for k in GUARD_KINDS if k in item.value]
        if len(kinds) != 1:
            if len(kinds) > 1:
                errors.append(
                    ScenarioError(
                        f"a guard guards one thing: {' and '.join(kinds)} here; write one guard for each",
                        item.span,
                    )
                )
            continue
        kind = kinds[0]
        value = item.value[kind].value if isinstance(item.value[kind], Node) else None
        penalty = _opt(item, "penalty", (int, float), 0)
        out.append(
            Guard(
                kind=kind,
                target=_opt(item, "target", str, ""),
                subject=value if isinstance(value, str) else "",
                penalty=float(penalty) if not isinstance(penalty, bool) else 0.0,
                span=item.span,
                description=_opt(item, "description", str, ""),
                widening=_opt(item, "no_wider_than_baseline", bool, True),
            )
        )
    return tuple(out)


def build_scenario(root: Node, text: str, file: str, collect: Callable[[list[ScenarioError]], None]) -> Scenario:
    """Node tree -> Scenario; every error goes to ``collect``."""
    c = _Collector()
    errors = _schema.schema_errors(root, _schema.validator_for("scenario.schema.json"))
    steps: list[Step] = []
    verify: list[Step] = []
    for key, section, out in (("steps", Section.STEPS, steps), ("verify", Section.VERIFY, verify)):
        seq = root.at(key)
        if seq is not None and isinstance(seq.value, list):
            out.extend(s for s in (_step(n, section, c) for n in seq.value) if s is not None)
    vars_node = root.at("vars")
    solution, shortcuts = _repairs(root)
    scenario = Scenario(
        file=file,
        name=_opt(root, "name", str, ""),
        description=_opt(root, "description", str, ""),
        targets=_targets(root),
        monitor=_monitor(root, c),
        vars=vars_node.plain() if vars_node and isinstance(vars_node.value, dict) else {},
        steps=tuple(steps),
        verify=tuple(verify),
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        base_dir=str(Path(file).resolve().parent),
        solution=solution,
        shortcuts=shortcuts,
        guards=_guards(root, c.errors),
    )
    collect(errors + c.errors)
    return scenario


def parse_scenario(text: str, file: str) -> tuple[Scenario | None, list[ScenarioError]]:
    """Parse scenario text. Returns the (possibly partial) Scenario and every error found."""
    try:
        root = load_yaml(text, file)
    except ScenarioErrors as exc:
        return None, exc.errors
    if not isinstance(root.value, dict):
        return None, [ScenarioError("a scenario is a mapping (version, name, steps, ...)", root.span)]
    found: list[ScenarioError] = []
    scenario = build_scenario(root, text, file, found.extend)
    return scenario, found
