"""Parse stage: the expression language of ``when:``, ``expect:`` and ``${...}`` templates.

Text is parsed once by a Lark LALR parser (``grammar/expr.lark``) into a frozen AST and
evaluated later against a scope of plain data (dicts, lists, str, int, float, bool, None).
There is no ``eval`` and no Python attribute access: a name is a mapping lookup, and every
operator checks the types of its operands (``EvalError`` otherwise).

The user guide, with the type rules and error messages, is ``docs/expressions.md``.
Inside, as lark splits its own code: ``ast`` (the nodes), ``lexer``, ``builder`` and
``parse`` (text -> AST), ``unparse``, ``eval``, ``compiled`` (``Expr``) and ``templates``
(``${...}`` strings and the walker over ``with:`` values).
"""

from .ast import FUNCTIONS, And, Attr, Binary, Call, Compare, Index, ListLit, Literal, Name, Neg, Node, Not, Or
from .compiled import Expr, NameRef, compile_expr
from .eval import EvalError, evaluate, render_value
from .explain import explain
from .lexer import KEYWORDS
from .parse import MAX_DEPTH, ExprError, parse_ast, parse_ast_with_lark
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
