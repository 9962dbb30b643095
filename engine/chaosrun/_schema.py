"""Schema checks: validate a Node tree against a JSON Schema, one positioned error each.

Like jsonschema's own advice: gather every error with ``iter_errors()``, translate each
into a readable sentence at the offending node's span, and let the caller sort them.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

import jsonschema
import referencing
from referencing.jsonschema import DRAFT202012

from ._resources import data_dir
from ._spans import Node, ScenarioError, Span

_TYPE_NAMES = {
    dict: "mapping",
    list: "list",
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    type(None): "null",
}


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A schema from ``schemas/`` by file name, e.g. ``"scenario.schema.json"``."""
    with open(data_dir("schemas") / name, encoding="utf-8") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


@cache
def _registry() -> referencing.Registry[Any]:
    resources = []
    for path in sorted(data_dir("schemas").glob("*.schema.json")):
        resource = DRAFT202012.create_resource(load_schema(path.name))
        resources.append((path.name, resource))
        resources.append((resource.contents["$id"], resource))
    return referencing.Registry().with_resources(resources)


@cache
def validator_for(name: str) -> jsonschema.Draft202012Validator:
    """A compiled validator for a schema in ``schemas/`` (cached per process)."""
    schema = load_schema(name)
    return jsonschema.Draft202012Validator(_inline_refs(schema, schema.get("$defs", {})), registry=_registry())


_ANNOTATIONS = frozenset({"$ref", "description", "title"})


def _inline_refs(node: Any, defs: Mapping[str, Any], stack: tuple[str, ...] = ()) -> Any:
    """A copy of a schema with local ``{"$ref": "#/$defs/X"}`` replaced by X itself.

    jsonschema resolves a ``$ref`` on every visit, and a scenario visits the step
    definition's refs once per step: inlining them makes validating a long scenario
    about a third faster. A recursive ref (a step inside ``one_of``) and a ``$ref`` with
    other validation keywords beside it stay as they are; errors read the same.
    """
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and set(node) <= _ANNOTATIONS:
            target = ref.removeprefix("#/$defs/")
            if target in defs and target not in stack:
                return _inline_refs(defs[target], defs, (*stack, target))
            return node
        return {k: _inline_refs(v, defs, stack) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs, stack) for v in node]
    return node


def compile_validator(schema: Mapping[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for a schema that does not live in ``schemas/`` (module declarations)."""
    return jsonschema.Draft202012Validator(schema)


# JSON Schema's words for types, in the words describe() uses for YAML values
_SCHEMA_TYPE_NAMES = {"object": "mapping", "array": "list"}


def describe(value: Any) -> str:
    """A short readable form of a YAML value for error messages."""
    kind = _TYPE_NAMES.get(type(value), type(value).__name__)
    if isinstance(value, dict | list):
        return kind
    text = json.dumps(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"


def _label(path: Iterable[Any]) -> str:
    label = ""
    for part in path:
        label += f"[{part}]" if isinstance(part, int) else (f".{part}" if label else str(part))
    return label


def schema_errors(
    node: Node,
    validator: jsonschema.Draft202012Validator,
    *,
    prefix: tuple[str | int, ...] = (),
    skip: frozenset[str] = frozenset(),
    instance: Any = None,
    key_span: Span | None = None,
) -> list[ScenarioError]:
    """Validate ``node.plain()`` and return one positioned error per problem.

    Args:
        node: the YAML node to validate.
        validator: from :func:`validator_for` or :func:`compile_validator`.
        prefix: path of ``node`` in its file, used to name keys in messages.
        skip: top-level keys whose *values* are not checked (values computed at run
            time); they still count for ``required`` and unknown-key checks.
        instance: the data to validate, when it differs from ``node.plain()`` (e.g.
            with static ``${...}`` already rendered); spans still come from ``node``.
        key_span: the key that names ``node`` (``with:``); a key missing from ``node``
            itself is reported there rather than at the mapping's first entry.
    """
    errors: list[ScenarioError] = []
    data = node.plain() if instance is None else instance
    schema = validator.schema
    if isinstance(schema, dict) and isinstance(data, dict):
        checked = {k: (_ANY if k in skip else v) for k, v in data.items()} if skip else data
        if _surely_valid(schema, checked, schema.get("$defs", {})):
            return errors
    for err in validator.iter_errors(data):
        path = list(err.absolute_path)
        if skip and path and path[0] in skip:
            continue
        found = _translate(node, err, path, prefix)
        if key_span is not None and not path and err.validator == "required":
            found = [ScenarioError(e.message, key_span, e.hint) for e in found]
        errors.extend(found)
    return errors


# --- a fast path for the common case: nothing to report -----------------------------
#
# jsonschema walks a long scenario at about 100 microseconds per step. Most files are
# valid, and for valid data a plain walk over the few keywords our schemas use gives the
# same answer several times faster. _surely_valid answers "valid" only when it is sure:
# any keyword, type or value it does not handle exactly answers "not sure", and then
# jsonschema runs as before and finds (and words) the errors.

_ANY = object()  # a value computed at run time (``skip``): valid wherever it stands
_IGNORED = frozenset(
    {
        "$schema",
        "$id",
        "$defs",
        "title",
        "description",
        "default",
        "x-message",
        "x-kind",
        "x-rank",
        "x-result",
        "x-from",
        "x-requires",
        "x-warnings",
    }
)
_JSON_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is_type(value: Any, kind: Any) -> bool:
    if kind == "integer":
        return type(value) is int
    if kind == "number":
        return type(value) in (int, float)
    wanted = _JSON_TYPES.get(kind) if isinstance(kind, str) else None
    return wanted is not None and type(value) is wanted


def _same(value: Any, wanted: Any) -> bool:
    # stricter than JSON Schema's equality (1 == 1.0 there): a miss only means "not sure"
    return type(value) is type(wanted) and not isinstance(value, dict | list) and value == wanted


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _surely_valid(schema: Any, value: Any, defs: Mapping[str, Any]) -> bool:
    """True only if ``value`` is certainly valid against ``schema`` (a JSON Schema subset)."""
    if value is _ANY or schema is True:
        return True
    if not isinstance(schema, dict):
        return False
    for key, want in schema.items():
        if key in _IGNORED:
            continue
        if key == "type":
            kinds = want if isinstance(want, list) else [want]
            if not any(_is_type(value, kind) for kind in kinds):
                return False
        elif key == "properties":
            if isinstance(value, dict) and not all(
                k not in value or _surely_valid(sub, value[k], defs) for k, sub in want.items()
            ):
                return False
        elif key == "additionalProperties":
            if isinstance(value, dict):
                known = schema.get("properties", {})
                extra = [v for k, v in value.items() if k not in known]
                if extra and (want is False or not all(_surely_valid(want, v, defs) for v in extra)):
                    return False
        elif key == "propertyNames":
            if isinstance(value, dict) and not all(_surely_valid(want, k, defs) for k in value):
                return False
        elif key == "required":
            if isinstance(value, dict) and any(k not in value for k in want):
                return False
        elif key == "items":
            if isinstance(value, list) and not all(_surely_valid(want, v, defs) for v in value):
                return False
        elif key == "$ref":
            local = isinstance(want, str) and want.startswith("#/$defs/")
            target = defs.get(want.removeprefix("#/$defs/")) if local else None
            if target is None or not _surely_valid(target, value, defs):
                return False
        elif key == "pattern":
            if isinstance(value, str) and not _regex(want).search(value):
                return False
        elif key == "enum":
            if not any(_same(value, w) for w in want):
                return False
        elif key == "const":
            if not _same(value, want):
                return False
        elif key in ("minimum", "maximum"):
            if type(value) in (int, float) and (value < want if key == "minimum" else value > want):
                return False
        elif key in ("minItems", "minProperties", "minLength"):
            kind = {"minItems": list, "minProperties": dict, "minLength": str}[key]
            if isinstance(value, kind) and len(value) < want:
                return False
        else:
            return False  # a keyword this walk does not know: let jsonschema decide
    return True


def _translate(
    node: Node, err: jsonschema.ValidationError, path: list[Any], prefix: tuple[str | int, ...]
) -> list[ScenarioError]:
    where = _label((*prefix, *path))
    at = node.span_of(path)
    kind = err.validator
    schema = err.schema if isinstance(err.schema, dict) else {}
    custom = schema.get("x-message")
    instance = err.instance

    if kind == "required":
        parent = node.at(*path)
        missing = [k for k in err.validator_value if isinstance(instance, dict) and k not in instance]
        span = parent.span if parent else at
        return [ScenarioError(f"{where + ': ' if where else ''}missing required key {k!r}", span) for k in missing]
    if kind == "additionalProperties" and isinstance(instance, dict):
        parent = node.at(*path)
        known = sorted(schema.get("properties", {}))
        out = []
        for key in instance:
            if key in schema.get("properties", {}):
                continue
            span = parent.key_spans.get(key, at) if parent else at
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else (f"allowed: {', '.join(known)}" if known else None)
            out.append(ScenarioError(f"{where + ': ' if where else ''}unknown key {key!r}", span, hint))
        return out
    schema_path = list(err.absolute_schema_path)
    if kind == "propertyNames" or (len(schema_path) >= 2 and schema_path[-2] == "propertyNames"):
        # the instance is the key itself; point at that key, not at the mapping
        parent = node.at(*path)
        span = parent.key_spans.get(str(instance), at) if parent else at
        text = _fill(custom, instance) if custom else f"invalid key {instance!r}"
        return [ScenarioError(text, span)]
    if kind in ("pattern", "const", "enum") and custom:
        return [ScenarioError(_fill(custom, instance), at)]
    if kind == "type" and custom and "pattern" in schema:
        # e.g. `wait: 5`: the format message (write 500ms, 30s...) helps more than a type name
        return [ScenarioError(_fill(custom, instance), at)]
    prefix_text = f"{where}: " if where else ""
    if kind == "type":
        wanted = err.validator_value
        wanted_list = wanted if isinstance(wanted, list) else [wanted]
        wanted_text = " or ".join(_SCHEMA_TYPE_NAMES.get(str(w), str(w)) for w in wanted_list)
        return [ScenarioError(f"{prefix_text}expected {wanted_text}, got {describe(instance)}", at)]
    if kind == "const":
        return [ScenarioError(f"{prefix_text}must be {json.dumps(err.validator_value)}, got {describe(instance)}", at)]
    if kind == "enum":
        choices = ", ".join(json.dumps(v) for v in err.validator_value)
        return [ScenarioError(f"{prefix_text}must be one of {choices}, got {describe(instance)}", at)]
    if kind == "pattern":
        return [ScenarioError(f"{prefix_text}{describe(instance)} does not match {err.validator_value}", at)]
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = (
            "at least"
            if kind == "minimum"
            else "at most"
            if kind == "maximum"
            else ("more than" if kind == "exclusiveMinimum" else "less than")
        )
        return [ScenarioError(f"{prefix_text}must be {word} {err.validator_value}, got {instance}", at)]
    if kind in ("minItems", "minProperties"):
        return [ScenarioError(f"{prefix_text}{custom or 'must not be empty'}", at)]
    if kind == "minLength":
        return [ScenarioError(f"{prefix_text}must not be empty", at)]
    return [ScenarioError(f"{prefix_text}{err.message}", at)]


def _fill(template: str, value: Any) -> str:
    """An ``x-message`` with the offending value: in its ``{value}``, or appended."""
    if "{value" not in template:
        return f"{template}: {value!r}"
    try:
        return template.format(value=value)
    except (KeyError, IndexError, ValueError):
        return template
