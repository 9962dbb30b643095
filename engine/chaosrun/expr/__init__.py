"""Parse stage: the expression language of ``when:``, ``expect:`` and ``${...}`` templates.

Text is parsed once by a Lark LALR parser (``grammar/expr.lark``) into a frozen AST and
evaluated later against a scope of plain data (dicts, lists, str, int, float, bool, None).
There is no ``eval`` and no Python attribute access: a name is a mapping lookup, and every
operator checks the types of its operands (``EvalError`` otherwise).

The user guide, with the type rules and error messages, is ``docs/expressions.md``.
Inside, as lark splits its own code: ``ast`` (the nodes), ``lexer``, ``builder`` and
``parse`` (text -> AST), ``unparse``, ``eval``, ``compiled`` (``Expr``) and ``templates``
(``${...}`` strings and the walker over ``with:`` values).

The parser (``parse``, ``lexer``: Lark) loads on first use (PEP 562, and ``compile_expr``
imports it when it compiles): a run of a scenario read back compiled from the cache of
linted scenarios evaluates its expressions without it.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .ast import FUNCTIONS, And, Attr, Binary, Call, Compare, Index, ListLit, Literal, Name, Neg, Node, Not, Or
from .compiled import Expr, NameRef, compile_expr
from .errors import ExprError
from .eval import EvalError, evaluate, render_value
from .explain import explain
from .templates import (
    Template,
    compile_template,
    has_interpolation,
    iter_leaves,
    iter_templates,
    map_templates,
    render_static,
)
from .unparse import unparse

if TYPE_CHECKING:
    from .lexer import KEYWORDS
    from .parse import MAX_DEPTH, parse_ast, parse_ast_with_lark

__all__ = [
    "FUNCTIONS",
    "KEYWORDS",
    "MAX_DEPTH",
    "And",
    "Attr",
    "Binary",
    "Call",
    "Compare",
    "EvalError",
    "Expr",
    "ExprError",
    "Index",
    "ListLit",
    "Literal",
    "Name",
    "NameRef",
    "Neg",
    "Node",
    "Not",
    "Or",
    "Template",
    "compile_expr",
    "compile_template",
    "evaluate",
    "explain",
    "has_interpolation",
    "iter_leaves",
    "iter_templates",
    "map_templates",
    "parse_ast",
    "parse_ast_with_lark",
    "render_static",
    "render_value",
    "unparse",
]

_PARSER = {"KEYWORDS": ".lexer", "MAX_DEPTH": ".parse", "parse_ast": ".parse", "parse_ast_with_lark": ".parse"}


def __getattr__(name: str) -> Any:
    if name in _PARSER:
        value = getattr(import_module(_PARSER[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
