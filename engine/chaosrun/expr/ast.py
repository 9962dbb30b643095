"""Parse stage, expression syntax tree: one frozen dataclass per rule of grammar/expr.lark.

``pos`` is the character offset of a node's first character in the compiled text; it
takes no part in equality, so ASTs parsed from differently spaced text compare equal.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

#: The callable functions and how many arguments each takes.
FUNCTIONS: Mapping[str, int] = {
    "len": 1,
    "matches": 2,
    "startswith": 2,
    "contains": 2,
    "int": 1,
    "str": 1,
    "trim": 1,
    "lower": 1,
    "upper": 1,
    "split": 2,
    "join": 2,
    "any": 1,
    "all": 1,
    "now": 0,
    "timestamp": 1,
    "seconds": 1,
}

BinaryOp = typing.Literal["+", "-", "*", "/", "%"]
CompareOp = typing.Literal["==", "!=", "<", "<=", ">", ">=", "in", "not in"]
Scalar = bool | int | float | str | None


@dataclass(frozen=True)
class Node:
    """Base of every AST node."""

    pos: int = field(default=0, kw_only=True, compare=False, repr=False)


@dataclass(frozen=True, eq=False)
class Literal(Node):
    """``1``, ``2.5``, ``'text'``, ``true``, ``false``, ``null`` (rule ``literal``)."""

    value: Scalar

    # Python says True == 1 and 1 == 1.0; two literals are equal only if their types are.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Literal):
            return NotImplemented
        return type(self.value) is type(other.value) and self.value == other.value

    def __hash__(self) -> int:
        return hash((type(self.value), self.value))


@dataclass(frozen=True)
class ListLit(Node):
    """``[a, b]`` (rule ``list_lit``)."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Name(Node):
    """A top-level name such as ``vars`` or ``steps`` (rule ``name``)."""

    name: str


@dataclass(frozen=True)
class Attr(Node):
    """``obj.name``: a field of a dict (rule ``attr``)."""

    obj: Node
    name: str


@dataclass(frozen=True)
class Index(Node):
    """``obj[index]``: a list item, a character of a str, or a field of a dict (rule ``index``)."""

    obj: Node
    index: Node


@dataclass(frozen=True)
class Call(Node):
    """``len(x)`` and the other FUNCTIONS (rule ``call``)."""

    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Neg(Node):
    """``-x`` (rule ``neg``)."""

    operand: Node


@dataclass(frozen=True)
class Binary(Node):
    """``a + b``, ``a - b``, ``a * b``, ``a / b``, ``a % b`` (rule ``binary``)."""

    op: BinaryOp
    left: Node
    right: Node


@dataclass(frozen=True)
class Compare(Node):
    """``a == b`` and the other comparisons, ``a in b``, ``a not in b`` (rule ``compare``)."""

    op: CompareOp
    left: Node
    right: Node


@dataclass(frozen=True)
class Not(Node):
    """``not x`` (rule ``not_expr``)."""

    operand: Node


@dataclass(frozen=True)
class And(Node):
    """``a and b`` (rule ``and_expr``)."""

    left: Node
    right: Node


@dataclass(frozen=True)
class Or(Node):
    """``a or b`` (rule ``or_expr``)."""

    left: Node
    right: Node


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-expressions of ``node``, in source order."""
    if isinstance(node, Literal | Name):
        return ()
    if isinstance(node, ListLit):
        return node.items
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Attr):
        return (node.obj,)
    if isinstance(node, Index):
        return (node.obj, node.index)
    if isinstance(node, Neg | Not):
        return (node.operand,)
    if isinstance(node, Binary | Compare | And | Or):
        return (node.left, node.right)
    raise TypeError(f"not an expression node: {node!r}")


def _static_key(node: Node) -> str | int | None:
    if isinstance(node, Literal):
        value = node.value
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            return value
    return None


def name_paths(node: Node) -> Iterator[tuple[tuple[str | int, ...], int]]:
    """(path, offset) of every name read, in source order.

    The path is the longest static one: it stops at an index computed at run time
    (``vars.hosts[vars.i]`` gives ``("vars", "hosts")``, plus ``("vars", "i")``).
    """
    if isinstance(node, Attr | Index):
        chain: list[Attr | Index] = []
        root: Node = node
        while isinstance(root, Attr | Index):
            chain.append(root)
            root = root.obj
        chain.reverse()
        path: list[str | int] = []
        static = isinstance(root, Name)
        if isinstance(root, Name):
            path.append(root.name)
        else:
            yield from name_paths(root)
        dynamic: list[Node] = []
        for link in chain:
            key = link.name if isinstance(link, Attr) else _static_key(link.index)
            if static and key is not None:
                path.append(key)
            else:
                static = False
            if isinstance(link, Index):
                dynamic.append(link.index)
        if isinstance(root, Name):
            yield tuple(path), root.pos
        for index in dynamic:
            yield from name_paths(index)
    elif isinstance(node, Name):
        yield (node.name,), node.pos
    else:
        for child in children(node):
            yield from name_paths(child)
