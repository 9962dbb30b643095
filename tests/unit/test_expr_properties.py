"""Properties of the expression language, checked with hypothesis.

- unparse is exact: random AST -> text -> AST gives an equal AST;
- the fast parse path gives what a plain Lark parse gives (ASTs, positions, errors);
- compiling any text raises nothing but ExprError, evaluating any AST on any data
  nothing but EvalError.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from chaosrun._spans import Span
from chaosrun.expr import (
    FUNCTIONS,
    KEYWORDS,
    And,
    Attr,
    Binary,
    Call,
    Compare,
    EvalError,
    ExprError,
    Index,
    ListLit,
    Literal,
    Name,
    Neg,
    Node,
    Not,
    Or,
    compile_expr,
    compile_template,
    evaluate,
    explain,
    parse_ast,
    parse_ast_with_lark,
    render_value,
    unparse,
)
from chaosrun.regex import re2_error

ORIGIN = Span("p.yml", 3, 5)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- strategies

IDENTIFIERS = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
NAMES = IDENTIFIERS.filter(lambda s: s not in KEYWORDS)
FIELDS = IDENTIFIERS | st.sampled_from(sorted(KEYWORDS))  # keywords are fine after a dot

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=0, max_value=10**30),
    st.floats(min_value=0.0, allow_nan=False, allow_infinity=False).filter(lambda f: math.copysign(1, f) > 0),
    st.text(max_size=8),
)

BINARY_OPS = st.sampled_from(["+", "-", "*", "/", "%"])
COMPARE_OPS = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in"])


def calls(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.sampled_from(sorted(FUNCTIONS)).flatmap(
        lambda name: st.lists(children, min_size=FUNCTIONS[name], max_size=FUNCTIONS[name]).map(
            lambda args: Call(name, tuple(args))
        )
    )


def trees(
    names: st.SearchStrategy[str], fields: st.SearchStrategy[str], scalars: st.SearchStrategy[Any]
) -> st.SearchStrategy[Node]:
    leaves = scalars.map(Literal) | names.map(Name)

    def extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        return st.one_of(
            st.lists(children, max_size=3).map(lambda items: ListLit(tuple(items))),
            st.builds(Attr, children, fields),
            st.builds(Index, children, children),
            calls(children),
            st.builds(Neg, children),
            st.builds(Not, children),
            st.builds(Binary, BINARY_OPS, children, children),
            st.builds(Compare, COMPARE_OPS, children, children),
            st.builds(And, children, children),
            st.builds(Or, children, children),
        )

    return st.recursive(leaves, extend, max_leaves=14)


ASTS = trees(NAMES, FIELDS, SCALARS)

TOKENS = [
    "a", "vars", "steps", "result", "x", "in", "not", "and", "or", "true", "false", "null",
    "(", ")", "[", "]", ",", ".", "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=",
    "0", "1", "2.5", "1e5", "'s'", '"t\\n"', "len", "matches", "str", "int", "startswith", "foo",
    "${", "}", "$${", "$", "'", '"', "\\", "=", "!", "@", "{", "é", "'\\q'", "1e999", "-", "-",
]  # fmt: skip
SOUP = st.lists(st.tuples(st.sampled_from(TOKENS), st.sampled_from(["", " ", " ", "\n"])), max_size=14).map(
    lambda parts: "".join(token + gap for token, gap in parts)
)
TEXTS = st.one_of(st.text(max_size=30), SOUP)


def walk(node: Node) -> Iterator[Node]:
    yield node
    for value in vars(node).values():
        if isinstance(value, Node):
            yield from walk(value)
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, Node):
                    yield from walk(item)


def layout(node: Node) -> list[tuple[str, int]]:
    """Node types with their positions: what equality of ASTs leaves out."""
    return [(type(n).__name__, n.pos) for n in walk(node)]


def has_bad_literal_regex(node: Node) -> bool:
    for n in walk(node):
        if isinstance(n, Call) and n.name == "matches":
            regex = n.args[1]
            if isinstance(regex, Literal) and isinstance(regex.value, str) and re2_error(regex.value) is not None:
                return True
    return False


def reads_the_clock(node: Node) -> bool:
    return any(isinstance(n, Call) and n.name == "now" for n in walk(node))


# --------------------------------------------------------------------------- round trip


@SETTINGS
@given(ASTS)
def test_unparse_then_parse_gives_an_equal_ast(ast: Node) -> None:
    assume(not has_bad_literal_regex(ast))  # refused at compile time, by design
    text = unparse(ast)
    parsed = parse_ast(text)
    assert parsed == ast
    assert unparse(parsed) == text  # the canonical text is a fixed point
    reference = parse_ast_with_lark(text)  # and a plain Lark parse agrees, positions too
    assert reference == parsed
    assert layout(reference) == layout(parsed)


# --------------------------------------------------------------------------- any text


def outcome(parse: Any, text: str) -> Any:
    try:
        node = parse(text)
    except ExprError as exc:
        return ("error", exc.message, exc.hint, exc.offset)
    return ("ok", node, layout(node))


@SETTINGS
@given(TEXTS)
def test_fast_path_agrees_with_plain_lark_on_any_text(text: str) -> None:
    assert outcome(parse_ast, text) == outcome(parse_ast_with_lark, text)


@SETTINGS
@given(TEXTS)
def test_compile_expr_raises_only_expr_error(text: str) -> None:
    try:
        expr = compile_expr(text, ORIGIN)
    except ExprError as exc:
        assert exc.span.file == "p.yml"
        assert 0 <= exc.offset <= len(text)
        assert exc.message and "Token" not in exc.message and "Lark" not in exc.message
        return
    assert parse_ast(str(expr)) == expr.ast
    for ref in expr.names():
        assert ref.span.line >= ORIGIN.line and ref.path


@SETTINGS
@given(TEXTS)
def test_compile_template_raises_only_expr_error(text: str) -> None:
    try:
        template = compile_template(text, ORIGIN)
    except ExprError as exc:
        assert 0 <= exc.offset <= len(text)
        return
    assert str(compile_template(str(template), ORIGIN)) == str(template)
    if template.is_static:
        assert template.render({}) == text.replace("$${", "${")


# --------------------------------------------------------------------------- evaluation

KEYS = st.sampled_from(["a", "b", "ok", "x", "in", "result"])
DATA = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),  # nan and inf included
        st.text(max_size=5),
        st.sampled_from(["a", "ab", "[", "(", "1"]),
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=12,
)
SCOPES = st.dictionaries(st.sampled_from(["vars", "steps", "x", "result"]), DATA, max_size=4)
EVAL_ASTS = trees(
    st.sampled_from(["vars", "steps", "x", "result", "missing"]),
    KEYS,
    st.one_of(SCALARS, st.integers(min_value=-3, max_value=3), st.sampled_from(["a", "x", "", "("])),
)


def result(run: Any) -> Any:
    try:
        return ("ok", render_value(run()))
    except EvalError as exc:
        return ("error", str(exc))


@SETTINGS
@given(EVAL_ASTS, SCOPES)
def test_evaluate_raises_only_eval_error(ast: Node, scope: dict[str, Any]) -> None:
    try:
        value = evaluate(ast, scope)
    except EvalError as exc:
        assert str(exc)
    else:
        if isinstance(ast, Compare | And | Or | Not):
            assert isinstance(value, bool)
    # compiled from its canonical text, it behaves the same (messages included)
    if not has_bad_literal_regex(ast) and not reads_the_clock(ast):
        expr = compile_expr(unparse(ast), ORIGIN)
        assert result(lambda: expr.evaluate(scope)) == result(lambda: evaluate(ast, scope))


@SETTINGS
@given(EVAL_ASTS, SCOPES)
def test_explain_never_raises_and_names_only_what_the_expression_reads(ast: Node, scope: dict[str, Any]) -> None:
    said = explain(ast, scope)
    assert isinstance(said, str)
    for part in filter(None, said.split("; ")):
        assert " = " in part or part.endswith(" is true"), said
