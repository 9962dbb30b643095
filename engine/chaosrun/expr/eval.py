"""Lint, plan and run stages, expression evaluation: an AST's value against a scope of plain data.

There is no ``eval`` and no Python attribute access: a name is a mapping lookup, and every
operator checks the types of its operands (``EvalError`` otherwise).
"""

from __future__ import annotations

import datetime
import json
import math
import re
import time
import typing
from collections.abc import Mapping
from typing import Any

from ..errors import ChaosrunError
from ..regex import RegexError, compile_re2
from ..scenario import parse_duration
from .ast import FUNCTIONS, And, Attr, Binary, Call, Compare, Index, ListLit, Literal, Name, Neg, Node, Not, Or
from .unparse import unparse


def duration_seconds(text: str) -> int | float:
    """``5m`` -> 300, ``1.5s`` -> 1.5, ``500ms`` -> 0.5 (scenario.parse_duration's rule);
    whole seconds are an int.

    Raises:
        ValueError: not a duration.
    """
    seconds = parse_duration(text)
    if seconds is None:
        raise ValueError(f"not a duration: {text!r}")
    return int(seconds) if seconds.is_integer() else seconds


class EvalError(ChaosrunError):
    """An expression could not be evaluated: a missing name or field, or a type mismatch.

    The message says what, e.g. ``steps.fill.result has no field 'x'``; the caller adds
    the step and its position.
    """


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, Mapping):
        return "dict"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _equal(a: Any, b: Any) -> bool:
    """``==`` of the language: numbers compare by value, nothing else crosses types
    (``true != 1``), lists and dicts compare item by item."""
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if _is_list(a) and _is_list(b):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if type(a) is not type(b):
        return False
    return bool(a == b)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {(k if isinstance(k, str) else render_value(k)): _plain(v) for k, v in value.items()}
    if _is_list(value):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def render_value(value: Any) -> str:
    """The text of a value inside a string: str as-is, everything else as JSON
    (``true``, ``null``, ``3``, ``2.5``, ``[1, "a"]``, ``{"k": 1}``)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(_plain(value), ensure_ascii=False)
    except ValueError as exc:  # ints beyond Python's digit limit, circular data
        raise EvalError(f"cannot render the value as text: {exc}") from None


def _path(node: Node) -> str:
    return unparse(node)


def _as_bool(op: str, value: Any, node: Node) -> bool:
    if isinstance(value, bool):
        return value
    raise EvalError(f"'{op}' needs true or false, got {_type_name(value)} ({_path(node)})")


def _get_item(obj: Any, key: Any, node: Node, *, dot: bool) -> Any:
    """``obj.key`` (``dot``: dicts only) or ``obj[key]``; ``node`` is obj's expression."""
    if isinstance(obj, Mapping):
        if not isinstance(key, str):
            raise EvalError(f"{_path(node)} is a dict: its keys are str, not {_type_name(key)}")
        if key not in obj:
            raise EvalError(f"{_path(node)} has no field {key!r}")
        return obj[key]
    if not dot and (_is_list(obj) or isinstance(obj, str)):
        if not isinstance(key, int) or isinstance(key, bool):
            raise EvalError(f"{_path(node)} is a {_type_name(obj)}: its index must be an int, not {_type_name(key)}")
        if not -len(obj) <= key < len(obj):
            raise EvalError(f"index {key} is out of range for {_path(node)} (length {len(obj)})")
        return obj[key]
    what = f"field {key!r}" if isinstance(key, str) else f"index {render_value(key)}"
    raise EvalError(f"cannot read {what} of {_path(node)}: it is {_type_name(obj)}")


def _arithmetic(node: Binary, a: Any, b: Any) -> Any:
    op = node.op
    if op == "+" and not (_is_number(a) and _is_number(b)):
        if isinstance(a, str) and isinstance(b, str):
            return a + b
        if _is_list(a) and _is_list(b):
            return [*a, *b]
        raise EvalError(f"cannot apply '+' to {_type_name(a)} and {_type_name(b)}")
    if not (_is_number(a) and _is_number(b)):
        raise EvalError(f"'{op}' needs numbers, got {_type_name(a)} and {_type_name(b)}")
    if op in ("/", "%") and b == 0:
        raise EvalError(f"division by zero ({_path(node)})")
    try:
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a / b
        return a % b
    except OverflowError:
        raise EvalError(f"number too large in '{op}' ({_path(node)})") from None


def _contains(needle: Any, haystack: Any) -> bool:
    if isinstance(haystack, str):
        if not isinstance(needle, str):
            raise EvalError(f"'in' a str needs a str on the left, got {_type_name(needle)}")
        return needle in haystack
    if _is_list(haystack):
        return any(_equal(needle, item) for item in haystack)
    if isinstance(haystack, Mapping):
        if not isinstance(needle, str):
            raise EvalError(f"'in' a dict tests its keys, which are str; got {_type_name(needle)}")
        return needle in haystack
    raise EvalError(f"'in' needs a list, str or dict on the right, got {_type_name(haystack)}")


def _compare(node: Compare, a: Any, b: Any) -> bool:
    op = node.op
    if op == "==":
        return _equal(a, b)
    if op == "!=":
        return not _equal(a, b)
    if op == "in":
        return _contains(a, b)
    if op == "not in":
        return not _contains(a, b)
    if not ((_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))):
        raise EvalError(f"cannot compare {_type_name(a)} with {_type_name(b)} ('{op}')")
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


_INT_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


def _fn_len(x: Any) -> int:
    if isinstance(x, str | Mapping) or _is_list(x):
        return len(x)
    raise EvalError(f"len() needs a str, list or dict, got {_type_name(x)}")


def _fn_matches(text: Any, regex: Any) -> bool:
    if not (isinstance(text, str) and isinstance(regex, str)):
        raise EvalError(f"matches() needs two str, got {_type_name(text)} and {_type_name(regex)}")
    try:
        return compile_re2(regex).search(text) is not None
    except RegexError as exc:
        raise EvalError(f"matches(): invalid regular expression {regex!r}: {exc}") from None


def _fn_startswith(text: Any, prefix: Any) -> bool:
    if not (isinstance(text, str) and isinstance(prefix, str)):
        raise EvalError(f"startswith() needs two str, got {_type_name(text)} and {_type_name(prefix)}")
    return text.startswith(prefix)


def _fn_int(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int | float | str):
        raise EvalError(f"int() needs an int, float or str, got {_type_name(x)}")
    if isinstance(x, int):
        return x
    if isinstance(x, float):
        if not math.isfinite(x):
            raise EvalError(f"int() cannot convert {x!r}")
        return int(x)  # truncates toward zero, like the C/Go/Python conversions
    if not _INT_TEXT.fullmatch(x):
        raise EvalError(f"int(): {x[:40]!r} is not a whole number")
    try:
        return int(x)
    except ValueError:
        raise EvalError("int(): the number is too long") from None


def _text(fn: str, x: Any) -> str:
    if not isinstance(x, str):
        raise EvalError(f"{fn}() needs a str, got {_type_name(x)}")
    return x


def _fn_split(text: Any, sep: Any) -> list[str]:
    if not (isinstance(text, str) and isinstance(sep, str)):
        raise EvalError(f"split() needs two str, got {_type_name(text)} and {_type_name(sep)}")
    if sep == "":
        return text.split()  # any run of white space, as awk and Python's split() do
    return text.split(sep)


def _fn_join(items: Any, sep: Any) -> str:
    if not (_is_list(items) and isinstance(sep, str)):
        raise EvalError(f"join() needs a list and a str, got {_type_name(items)} and {_type_name(sep)}")
    return sep.join(render_value(item) for item in items)


def _fn_bools(fn: str, items: Any) -> list[bool]:
    if not _is_list(items):
        raise EvalError(f"{fn}() needs a list, got {_type_name(items)}")
    for item in items:
        if not isinstance(item, bool):
            raise EvalError(f"{fn}() needs a list of true/false, got an item of type {_type_name(item)}")
    return list(items)


_ISO_ZULU = re.compile(r"(?i)z$")


def _fn_timestamp(x: Any) -> int | float:
    """Unix seconds of an ISO 8601 time (``2026-12-01T10:00:00Z``; a date is midnight UTC);
    a number is taken as Unix seconds already."""
    if _is_number(x):
        return typing.cast(int | float, x)
    if not isinstance(x, str):
        raise EvalError(f"timestamp() needs a str or a number, got {_type_name(x)}")
    try:
        when = datetime.datetime.fromisoformat(_ISO_ZULU.sub("+00:00", x.strip()))
    except ValueError:
        raise EvalError(f"timestamp(): {x[:40]!r} is not an ISO 8601 time (2026-12-01T10:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    seconds = when.timestamp()
    return int(seconds) if seconds.is_integer() else seconds


def _fn_seconds(x: Any) -> int | float:
    """A duration's seconds: ``seconds("5m")`` is 300; a number is seconds already."""
    if _is_number(x):
        return typing.cast(int | float, x)
    if isinstance(x, str):
        try:
            return duration_seconds(x.strip())
        except ValueError:
            pass
    shown = repr(x[:40]) if isinstance(x, str) else _type_name(x)
    raise EvalError(f"seconds(): {shown} is not a duration (500ms, 30s, 5m, 2h, 1d)")


def _call(node: Call, args: list[Any]) -> Any:
    name = node.name
    if len(args) != FUNCTIONS.get(name, -1):
        if name in FUNCTIONS:
            raise EvalError(f"{name}() takes {FUNCTIONS[name]} argument(s), got {len(args)}")
        raise EvalError(f"unknown function '{name}'")
    if name == "len":
        return _fn_len(args[0])
    if name == "matches":
        return _fn_matches(args[0], args[1])
    if name == "startswith":
        return _fn_startswith(args[0], args[1])
    if name == "contains":
        return _contains(args[1], args[0])
    if name == "int":
        return _fn_int(args[0])
    if name == "str":
        return render_value(args[0])
    if name == "trim":
        return _text(name, args[0]).strip()
    if name == "lower":
        return _text(name, args[0]).lower()
    if name == "upper":
        return _text(name, args[0]).upper()
    if name == "split":
        return _fn_split(args[0], args[1])
    if name == "join":
        return _fn_join(args[0], args[1])
    if name == "any":
        return any(_fn_bools(name, args[0]))
    if name == "all":
        return all(_fn_bools(name, args[0]))
    if name == "now":
        return time.time()
    if name == "timestamp":
        return _fn_timestamp(args[0])
    if name == "seconds":
        return _fn_seconds(args[0])
    if name in FUNCTIONS:
        raise EvalError(f"{name}() takes {FUNCTIONS[name]} argument(s), got {len(args)}")
    raise EvalError(f"unknown function '{name}'")


def _eval(node: Node, scope: Mapping[str, Any]) -> Any:
    if isinstance(node, Attr):
        return _get_item(_eval(node.obj, scope), node.name, node.obj, dot=True)
    if isinstance(node, Name):
        if node.name not in scope:
            known = ", ".join(sorted(str(k) for k in scope)[:12])
            raise EvalError(f"unknown name '{node.name}' (known here: {known or 'none'})")
        return scope[node.name]
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Compare):
        return _compare(node, _eval(node.left, scope), _eval(node.right, scope))
    if isinstance(node, And):
        if not _as_bool("and", _eval(node.left, scope), node.left):
            return False
        return _as_bool("and", _eval(node.right, scope), node.right)
    if isinstance(node, Or):
        if _as_bool("or", _eval(node.left, scope), node.left):
            return True
        return _as_bool("or", _eval(node.right, scope), node.right)
    if isinstance(node, Not):
        return not _as_bool("not", _eval(node.operand, scope), node.operand)
    if isinstance(node, Index):
        return _get_item(_eval(node.obj, scope), _eval(node.index, scope), node.obj, dot=False)
    if isinstance(node, Binary):
        return _arithmetic(node, _eval(node.left, scope), _eval(node.right, scope))
    if isinstance(node, Neg):
        value = _eval(node.operand, scope)
        if not _is_number(value):
            raise EvalError(f"'-' needs a number, got {_type_name(value)} ({_path(node.operand)})")
        return -value
    if isinstance(node, Call):
        return _call(node, [_eval(a, scope) for a in node.args])
    if isinstance(node, ListLit):
        return [_eval(i, scope) for i in node.items]
    raise TypeError(f"not an expression node: {node!r}")


def evaluate(node: Node, scope: Mapping[str, Any]) -> Any:
    """Evaluate an AST against ``scope`` (top-level names to plain data).

    Raises:
        EvalError: a missing name or field, a type mismatch, division by zero...
    """
    try:
        return _eval(node, scope)
    except RecursionError:  # only from hand-built ASTs or self-referential data
        raise EvalError("expression or data is nested too deeply") from None
