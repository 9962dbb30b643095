"""The expression language (engine/chaosrun/expr/, grammar/expr.lark), table-driven."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest

from chaosrun._spans import ScenarioError, Span
from chaosrun.expr import (
    FUNCTIONS,
    And,
    Attr,
    Binary,
    Call,
    Compare,
    EvalError,
    Expr,
    ExprError,
    Index,
    ListLit,
    Literal,
    Name,
    NameRef,
    Neg,
    Not,
    Or,
    Template,
    compile_expr,
    compile_template,
    has_interpolation,
    parse_ast,
    parse_ast_with_lark,
    render_value,
    unparse,
)
from chaosrun.regex import RE2_HINT

ORIGIN = Span("exam.yml", 10, 7)

SCOPE: dict[str, Any] = {
    "vars": {
        "n": 3,
        "f": 2.5,
        "zero": 0,
        "s": "abc",
        "empty": "",
        "l": [1, 2, 3],
        "d": {"k": "v", "in": 1},
        "t": True,
        "no": False,
        "none": None,
        "mixed": [1, "a", True, None],
        "my-var": "dash",
        "big": 10**400,
        "huge": 10**5000,
        "i": 1,
        "num_text": " 42\n",
    },
    "steps": {
        "fill": {
            "ok": True,
            "status": "ok",
            "duration": 1.5,
            "result": {"written_mb": 64, "lines": ["a", "b"], "nested": {"x": [{"y": 7}]}},
        },
    },
    "env": {"name": "cand-001"},
    "target": {"host": "10.0.0.1", "role": "web"},
}


def ev(text: str, scope: Mapping[str, Any] = SCOPE) -> Any:
    return compile_expr(text, ORIGIN).evaluate(scope)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types (True is not 1 here)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------- precedence

PRECEDENCE = [
    # text, the same with every group in parentheses
    ("1 + 2 * 3", "1 + (2 * 3)"),
    ("1 * 2 + 3", "(1 * 2) + 3"),
    ("1 - 2 - 3", "(1 - 2) - 3"),
    ("8 / 4 / 2", "(8 / 4) / 2"),
    ("7 % 4 * 2", "(7 % 4) * 2"),
    ("-2 * 3", "(-2) * 3"),
    ("-a.b", "-(a.b)"),
    ("-a[0]", "-(a[0])"),
    ("- -1", "-(-1)"),
    ("1 + 2 < 3 * 4", "(1 + 2) < (3 * 4)"),
    ("a == b and c != d", "(a == b) and (c != d)"),
    ("not a == b", "not (a == b)"),
    ("not a in b", "not (a in b)"),
    ("not not a", "not (not a)"),
    ("a or b and c", "a or (b and c)"),
    ("a and b or c", "(a and b) or c"),
    ("a or b or c", "(a or b) or c"),
    ("a and b and c", "(a and b) and c"),
    ("not a and b", "(not a) and b"),
    ("not a or not b", "(not a) or (not b)"),
    ("a + b in c", "(a + b) in c"),
    ("a not in b + c", "a not in (b + c)"),
    ("len(x) + 1", "(len(x)) + 1"),
    ("a.b[0].c", "((a.b)[0]).c"),
    ("[1, 2][0]", "([1, 2])[0]"),
]


@pytest.mark.parametrize(("text", "grouped"), PRECEDENCE)
def test_precedence_matches_explicit_parentheses(text: str, grouped: str) -> None:
    assert parse_ast(text) == parse_ast(grouped)


def test_ast_classes_match_grammar_rules() -> None:
    tree = parse_ast("not a.b[0] + -1 * len(x) >= 2 or [true, null] and 'z'")
    assert tree == Or(
        Not(
            Compare(
                ">=",
                Binary(
                    "+",
                    Index(Attr(Name("a"), "b"), Literal(0)),
                    Binary("*", Neg(Literal(1)), Call("len", (Name("x"),))),
                ),
                Literal(2),
            )
        ),
        And(ListLit((Literal(True), Literal(None))), Literal("z")),
    )


def test_literals_of_different_types_are_different_nodes() -> None:
    assert Literal(True) != Literal(1)
    assert Literal(1) != Literal(1.0)
    assert Literal(0) != Literal(False)
    assert Literal("a") == Literal("a")
    assert len({Literal(1), Literal(True), Literal(1.0)}) == 3


# --------------------------------------------------------------------------- values

VALUES: list[tuple[str, Any]] = [
    # literals
    ("42", 42),
    ("007", 7),
    ("2.5", 2.5),
    ("1e3", 1000.0),
    ("1.5E-2", 0.015),
    ("'single'", "single"),
    ('"double"', "double"),
    (r"'it\'s'", "it's"),
    (r'"say \"hi\""', 'say "hi"'),
    (r"'a\\b'", "a\\b"),
    (r"'tab\there'", "tab\there"),
    (r"'\n\r'", "\n\r"),
    (r"'\u00e9'", "é"),
    ("'${not interpolated}'", "${not interpolated}"),
    ("true", True),
    ("false", False),
    ("null", None),
    ("[]", []),
    ("[1, 'a', [true]]", [1, "a", [True]]),
    # names, fields, indexing
    ("vars.n", 3),
    ("vars", SCOPE["vars"]),
    ("steps.fill.result.written_mb", 64),
    ("steps.fill.status", "ok"),
    ("steps.fill.duration", 1.5),
    ("env.name", "cand-001"),
    ("target.host", "10.0.0.1"),
    ("vars.l[0]", 1),
    ("vars.l[-1]", 3),
    ("vars.l[vars.i]", 2),
    ("vars.s[1]", "b"),
    ("vars['my-var']", "dash"),
    ('vars["n"]', 3),
    ("vars.d.in", 1),
    ("steps.fill.result.nested.x[0].y", 7),
    ("[10, 20][1]", 20),
    ("(vars).n", 3),
    # arithmetic
    ("1 + 2", 3),
    ("1 + 2.5", 3.5),
    ("'a' + 'b'", "ab"),
    ("[1] + [2, 3]", [1, 2, 3]),
    ("vars.l + []", [1, 2, 3]),
    ("5 - 7", -2),
    ("2 * 3", 6),
    ("2 * 1.5", 3.0),
    ("7 / 2", 3.5),
    ("6 / 3", 2.0),
    ("7 % 3", 1),
    ("-7 % 3", 2),
    ("7.5 % 2", 1.5),
    ("-vars.n", -3),
    ("-(-2.5)", 2.5),
    ("vars.big - vars.big", 0),
    # comparisons
    ("1 == 1", True),
    ("1 == 1.0", True),
    ("1 != 2", True),
    ("true == 1", False),
    ("true != 1", True),
    ("0 == false", False),
    ("null == null", True),
    ("null == 0", False),
    ("'1' == 1", False),
    ("[1, 2] == [1, 2]", True),
    ("[1] == [true]", False),
    ("[1.0] == [1]", True),
    ("vars.d == vars.d", True),
    ("vars.d != vars.l", True),
    ("1 < 2", True),
    ("2 <= 2", True),
    ("3 > 2.5", True),
    ("2 >= 3", False),
    ("'abc' < 'abd'", True),
    ("'b' > 'abc'", True),
    ("steps.fill.result.written_mb >= 64", True),
    # membership
    ("2 in vars.l", True),
    ("4 in vars.l", False),
    ("4 not in vars.l", True),
    ("true in vars.l", False),
    ("1 in vars.mixed", True),
    ("null in vars.mixed", True),
    ("2.0 in [1, 2]", True),
    ("'bc' in vars.s", True),
    ("'' in vars.s", True),
    ("'x' not in vars.s", True),
    ("'k' in vars.d", True),
    ("'v' in vars.d", False),
    ("[1] in [[1], [2]]", True),
    # logic
    ("true and true", True),
    ("true and false", False),
    ("false or true", True),
    ("false or false", False),
    ("not false", True),
    ("not vars.t", False),
    ("false and vars.nope", False),  # short-circuit: the right side is never read
    ("true or 1 / 0", True),
    ("steps.fill.ok and steps.fill.result.written_mb >= 64", True),
    # functions
    ("len('abc')", 3),
    ("len(vars.l)", 3),
    ("len(vars.d)", 2),
    ("len([])", 0),
    ("matches('nginx: active', 'act[a-z]+')", True),
    ("matches('nginx', '^x')", False),
    ("matches(vars.s, '')", True),
    ("startswith(env.name, 'cand-')", True),
    ("startswith('abc', 'b')", False),
    ("int(42)", 42),
    ("int(2.9)", 2),
    ("int(-2.9)", -2),
    ("int('17')", 17),
    ("int('-17')", -17),
    ("int(vars.num_text)", 42),
    ("str('a')", "a"),
    ("str(1)", "1"),
    ("str(2.5)", "2.5"),
    ("str(true)", "true"),
    ("str(null)", "null"),
    ("str([1, 'a', null])", '[1, "a", null]'),
    ("str(vars.d)", '{"k": "v", "in": 1}'),
    ("'n=' + str(vars.n)", "n=3"),
    ("len(str(12345))", 5),
]


@pytest.mark.parametrize(("text", "expected"), VALUES)
def test_value(text: str, expected: Any) -> None:
    assert same(ev(text), expected), ev(text)


def test_scope_may_hold_any_mapping_and_tuples() -> None:
    scope = {"vars": MappingProxyType({"t": (1, 2), "d": MappingProxyType({"a": 1})})}
    assert ev("vars.t[1]", scope) == 2
    assert ev("vars.d.a + len(vars.t)", scope) == 3
    assert ev("vars.t + [3]", scope) == [1, 2, 3]
    assert ev("vars.t == [1, 2]", scope) is True
    assert ev("'a' in vars.d", scope) is True


# --------------------------------------------------------------------------- run-time errors

EVAL_ERRORS = [
    # names, fields, indexes
    ("nope", "unknown name 'nope' (known here: env, steps, target, vars)"),
    ("steps.fill.result.x", "steps.fill.result has no field 'x'"),
    ("steps.fill.result['x']", "steps.fill.result has no field 'x'"),
    ("vars.n.x", "cannot read field 'x' of vars.n: it is int"),
    ("vars.none.x", "cannot read field 'x' of vars.none: it is null"),
    ("vars.l.x", "cannot read field 'x' of vars.l: it is list"),
    ("vars.n[0]", "cannot read index 0 of vars.n: it is int"),
    ("vars.l[3]", "index 3 is out of range for vars.l (length 3)"),
    ("vars.l[-4]", "index -4 is out of range for vars.l (length 3)"),
    ("vars.s[10]", "index 10 is out of range for vars.s (length 3)"),
    ("vars.l['a']", "vars.l is a list: its index must be an int, not str"),
    ("vars.l[true]", "vars.l is a list: its index must be an int, not bool"),
    ("vars.l[1.0]", "vars.l is a list: its index must be an int, not float"),
    ("vars.d[0]", "vars.d is a dict: its keys are str, not int"),
    # logic
    ("1 and true", "'and' needs true or false, got int (1)"),
    ("true and 'x'", "'and' needs true or false, got str (\"x\")"),
    ("null or true", "'or' needs true or false, got null (null)"),
    ("false or vars.l", "'or' needs true or false, got list (vars.l)"),
    ("not vars.s", "'not' needs true or false, got str (vars.s)"),
    # comparisons
    ("1 < 'a'", "cannot compare int with str ('<')"),
    ("vars.s >= 3", "cannot compare str with int ('>=')"),
    ("true > false", "cannot compare bool with bool ('>')"),
    ("null <= 1", "cannot compare null with int ('<=')"),
    ("[1] < [2]", "cannot compare list with list ('<')"),
    ("1 in 5", "'in' needs a list, str or dict on the right, got int"),
    ("1 in 'abc'", "'in' a str needs a str on the left, got int"),
    ("1 not in vars.d", "'in' a dict tests its keys, which are str; got int"),
    # arithmetic
    ("1 + 'a'", "cannot apply '+' to int and str"),
    ("'a' + 1", "cannot apply '+' to str and int"),
    ("true + 1", "cannot apply '+' to bool and int"),
    ("[1] + 'a'", "cannot apply '+' to list and str"),
    ("null + null", "cannot apply '+' to null and null"),
    ("'a' * 3", "'*' needs numbers, got str and int"),
    ("[1] - [1]", "'-' needs numbers, got list and list"),
    ("1 % true", "'%' needs numbers, got int and bool"),
    ("1 / 0", "division by zero (1 / 0)"),
    ("1.5 / 0.0", "division by zero (1.5 / 0.0)"),
    ("vars.n % vars.zero", "division by zero (vars.n % vars.zero)"),
    ("-vars.s", "'-' needs a number, got str (vars.s)"),
    ("-true", "'-' needs a number, got bool (true)"),
    ("vars.big * 1.5", "number too large in '*' (vars.big * 1.5)"),
    ("vars.big / 3", "number too large in '/' (vars.big / 3)"),
    # functions
    ("len(3)", "len() needs a str, list or dict, got int"),
    ("len(null)", "len() needs a str, list or dict, got null"),
    ("matches(1, 'a')", "matches() needs two str, got int and str"),
    ("matches('a', vars.n)", "matches() needs two str, got str and int"),
    ("matches('a', '(' + 'x')", "matches(): invalid regular expression '(x': missing ): (x"),
    ("startswith(null, 'a')", "startswith() needs two str, got null and str"),
    ("int(true)", "int() needs an int, float or str, got bool"),
    ("int(null)", "int() needs an int, float or str, got null"),
    ("int([1])", "int() needs an int, float or str, got list"),
    ("int('3.5')", "int(): '3.5' is not a whole number"),
    ("int('')", "int(): '' is not a whole number"),
    ("int('1_000')", "int(): '1_000' is not a whole number"),
    ("int('٣')", "int(): '٣' is not a whole number"),
    ("int(1e308 * 10)", "int() cannot convert inf"),
    ("str(vars.huge)", "cannot render the value as text"),
    ("'x' + vars.huge", "cannot apply '+' to str and int"),
]


@pytest.mark.parametrize(("text", "message"), EVAL_ERRORS)
def test_eval_error(text: str, message: str) -> None:
    with pytest.raises(EvalError) as info:
        ev(text)
    assert str(info.value).startswith(message)


def test_missing_top_level_name_with_empty_scope() -> None:
    with pytest.raises(EvalError, match=r"^unknown name 'result' \(known here: none\)$"):
        ev("result.open", {})


def test_eval_error_is_not_a_scenario_error() -> None:
    assert not issubclass(EvalError, ScenarioError)
    assert issubclass(ExprError, ScenarioError)


# --------------------------------------------------------------------------- syntax errors

SYNTAX_ERRORS = [
    # text, message, hint, column of the error inside text (0-based)
    ("", "empty expression", None, 0),
    ("   ", "empty expression", None, 0),
    ("a and", "expected an operand after 'and'", None, 5),
    ("a and   ", "expected an operand after 'and'", None, 5),
    ("a and )", "expected an operand after 'and'", None, 6),
    ("a and or b", "expected an operand after 'and'", None, 6),
    ("not", "expected an operand after 'not'", None, 3),
    ("1 +", "expected an operand after '+'", None, 3),
    ("1 >= ", "expected an operand after '>='", None, 4),
    ("x in", "expected an operand after 'in'", None, 4),
    ("len(", "expected an operand after '('", None, 4),
    ("len(1,)", "expected an operand after ','", None, 6),
    ("[1, 2,]", "expected an operand after ','", None, 6),
    ("()", "expected an operand after '('", None, 1),
    ("a)", "unexpected ')'", None, 1),
    ("(a))", "unexpected ')'", None, 3),
    ("and b", "unexpected 'and'", "an expression cannot start here", 0),
    (")", "unexpected ')'", "an expression cannot start here", 0),
    ("(a", "missing ')'", None, 2),
    ("((a + b)", "missing ')'", None, 8),
    ("[1, 2", "missing ']'", None, 5),
    ("len(x", "missing ')'", None, 5),
    ("vars.l[0", "missing ']'", None, 8),
    ("(a]", "unexpected ']'", "expected ')'", 2),
    ("a b", "unexpected name 'b'", "missing an operator?", 2),
    ("a 1", "unexpected number 1", "missing an operator?", 2),
    ("a 'x'", "unexpected string 'x'", "missing an operator?", 2),
    ("a.", "expected a field name after '.'", None, 2),
    ("a.1", "expected a field name after '.'", None, 2),
    ("a.'b'", "expected a field name after '.'", None, 2),
    ("a not b", "expected 'in' after 'not'", None, 6),
    ("a < b < c", "comparisons cannot be chained", "join them with 'and': a < b and b < c", 6),
    ("a == b != c", "comparisons cannot be chained", "join them with 'and': a < b and b < c", 7),
    ("a in b in c", "comparisons cannot be chained", "join them with 'and': a < b and b < c", 7),
    (
        "vars.x(1)",
        "unexpected '('",
        "only len, matches, startswith, contains, int, str, trim, lower, upper, split, join, any, all, now, timestamp, seconds can be called",
        6,
    ),
    ("'abc", "unterminated string", "close it with '", 0),
    ('x == "abc', "unterminated string", 'close it with "', 5),
    ("'abc\\'", "unterminated string", "close it with '", 0),
    ("x = 1", "unexpected '='", "use '==' to compare", 2),
    ("a && b", "unexpected '&'", "use 'and'", 2),
    ("a || b", "unexpected '|'", "use 'or'", 2),
    ("!a", "unexpected '!'", "use 'not' to negate, '!=' to compare", 0),
    ("a @ b", "unexpected character '@'", None, 2),
    ("a\x00", "unexpected character '\\x00'", None, 1),
    ("${vars.x} == 1", "unexpected '${'", "inside when:/expect: write the expression without ${...}", 0),
    ("{}", "unexpected character '{'", None, 0),
    ("a ? b : c", "unexpected character '?'", None, 2),
    (r"'a\qb'", "invalid escape '\\q' in string", "escapes are \\\\, \\', \\\", \\n, \\t, \\r and \\uXXXX", 2),
    (r"'\u12'", "invalid escape '\\u' in string", "escapes are \\\\, \\', \\\", \\n, \\t, \\r and \\uXXXX", 1),
    (
        "foo(1)",
        "unknown function 'foo'",
        "functions are all, any, contains, int, join, len, lower, matches, now, seconds, split, startswith, str, timestamp, trim, upper",
        0,
    ),
    ("x and lenn(vars.l)", "unknown function 'lenn'", "did you mean 'len'?", 6),
    ("len()", "len() takes 1 argument, got 0", None, 0),
    ("len(1, 2)", "len() takes 1 argument, got 2", None, 0),
    ("matches('a')", "matches() takes 2 arguments, got 1", None, 0),
    ("1 + matches(x, '[a-')", "invalid regular expression: missing ]: [a-", RE2_HINT, 15),
    ("1" * 5000, "number is too long", None, 0),
    ("1e999", "number is out of range", None, 0),
    ("-" * 300 + "1", "expression is nested too deeply (more than 200 levels)", None, 200),
    ("in", "unexpected 'in'", "an expression cannot start here", 0),
]


@pytest.mark.parametrize(("text", "message", "hint", "offset"), SYNTAX_ERRORS)
def test_syntax_error_message_and_position(text: str, message: str, hint: str | None, offset: int) -> None:
    with pytest.raises(ExprError) as info:
        compile_expr(text, ORIGIN)
    err = info.value
    assert (err.message, err.hint, err.offset) == (message, hint, offset)
    assert err.span == Span("exam.yml", 10, 7 + offset)


@pytest.mark.parametrize(("text", "message", "hint", "offset"), SYNTAX_ERRORS)
def test_reference_lark_parse_gives_the_same_errors(text: str, message: str, hint: str | None, offset: int) -> None:
    with pytest.raises(ExprError) as info:
        parse_ast_with_lark(text)
    assert (info.value.message, info.value.hint, info.value.offset) == (message, hint, offset)


def test_error_prints_as_file_line_col_message_hint() -> None:
    with pytest.raises(ExprError) as info:
        compile_expr("a and", Span("scenarios/web.yml", 14, 11))
    assert str(info.value) == "scenarios/web.yml:14:16: expected an operand after 'and'"
    with pytest.raises(ExprError) as info:
        compile_expr("x = 1", Span("scenarios/web.yml", 3, 9))
    assert str(info.value) == "scenarios/web.yml:3:11: unexpected '=' (use '==' to compare)"


def test_error_on_a_later_line_counts_columns_within_that_line() -> None:
    text = "steps.a.ok and\n  steps.b.ok and\n  (x +)"
    with pytest.raises(ExprError) as info:
        compile_expr(text, ORIGIN)
    assert info.value.message == "expected an operand after '+'"
    assert info.value.span == Span("exam.yml", 12, 7)  # ')' is the 7th character of line 3


def test_line_indent_is_added_on_later_lines_only() -> None:
    # a `when: |` block scalar: YAML stripped 6 spaces from each line
    text = "a and\nb and\n)"
    with pytest.raises(ExprError) as info:
        compile_expr(text, Span("f.yml", 5, 7), line_indent=6)
    assert info.value.span == Span("f.yml", 7, 7)
    with pytest.raises(ExprError) as info:
        compile_expr("a b", Span("f.yml", 5, 7), line_indent=6)
    assert info.value.span == Span("f.yml", 5, 9)


def test_unexpected_end_is_reported_at_the_end_of_the_expression_not_of_trailing_lines() -> None:
    text = "a and\n  (b or c\n\n"
    with pytest.raises(ExprError) as info:
        compile_expr(text, ORIGIN)
    assert info.value.message == "missing ')'"
    assert info.value.span == Span("exam.yml", 11, 10)


def test_error_inside_a_multi_line_string_literal_counts_its_lines() -> None:
    text = "x == 'line one\nline two \\q'"
    with pytest.raises(ExprError) as info:
        compile_expr(text, ORIGIN)
    assert info.value.message == "invalid escape '\\q' in string"
    assert info.value.span == Span("exam.yml", 11, 10)


def test_keywords_are_fields_after_a_dot_but_never_names() -> None:
    assert parse_ast("steps.in.result.not") == Attr(Attr(Attr(Name("steps"), "in"), "result"), "not")
    assert parse_ast("a.true") == Attr(Name("a"), "true")
    assert parse_ast("index in notes") == Compare("in", Name("index"), Name("notes"))
    assert parse_ast("a not   in\nb") == Compare("not in", Name("a"), Name("b"))
    with pytest.raises(ExprError):
        parse_ast("null.x.y == or")


def test_whitespace_and_newlines_are_insignificant() -> None:
    assert parse_ast(" a\n.\tb [ 0 ]\r\n+ 1 ") == parse_ast("a.b[0] + 1")


# --------------------------------------------------------------------------- canonical text

CANONICAL = [
    ("a  and(b)", "a and b"),
    ("(a or b) and c", "(a or b) and c"),
    ("a or (b or c)", "a or (b or c)"),
    ("(a or b) or c", "a or b or c"),
    ("1-(2-3)", "1 - (2 - 3)"),
    ("(1-2)-3", "1 - 2 - 3"),
    ("1*(2+3)", "1 * (2 + 3)"),
    ("(-1).x", "(-1).x"),
    ("-(1).x", "-1.x"),
    ("(a < b) == c", "(a < b) == c"),
    ("not (a and b)", "not (a and b)"),
    ("(not a) == b", "(not a) == b"),
    ("-(a + b)", "-(a + b)"),
    ("- - a", "--a"),
    ("'it\\'s'", '"it\'s"'),
    ("'a\"b\\\\c'", '"a\\"b\\\\c"'),
    ("'\\n\\t\\u0001'", '"\\n\\t\\u0001"'),
    ("[1,2 ,3]", "[1, 2, 3]"),
    ("len( x )", "len(x)"),
    ("matches(a,'b')", 'matches(a, "b")'),
    ("1.50", "1.5"),
    ("1E3", "1000.0"),
    ("1e16", "1e+16"),
    ("a [ 'k' ]", 'a["k"]'),
    ("a.b .c", "a.b.c"),
    ("x not  in y", "x not in y"),
    ("1.5.x", "1.5.x"),
    ("1 .x", "1.x"),
]


@pytest.mark.parametrize(("text", "canonical"), CANONICAL)
def test_str_is_canonical_and_reparses_to_the_same_ast(text: str, canonical: str) -> None:
    expr = compile_expr(text, ORIGIN)
    assert str(expr) == canonical
    assert parse_ast(canonical) == expr.ast
    assert unparse(expr.ast) == canonical


def test_compiled_expression_keeps_its_source_and_origin() -> None:
    expr = compile_expr(" vars.n  + 1", ORIGIN)
    assert isinstance(expr, Expr)
    assert expr.source == " vars.n  + 1"
    assert expr.origin == ORIGIN
    assert expr.span_at(1) == Span("exam.yml", 10, 8)


# --------------------------------------------------------------------------- names()

NAMES: list[tuple[str, list[tuple[tuple[str | int, ...], int]]]] = [
    ("1 + 2", []),
    ("vars", [(("vars",), 0)]),
    (
        "steps.fill_logs.ok and steps.fill_logs.result.written_mb >= vars.fill_mb",
        [
            (("steps", "fill_logs", "ok"), 0),
            (("steps", "fill_logs", "result", "written_mb"), 23),
            (("vars", "fill_mb"), 60),
        ],
    ),
    ("result.open == true", [(("result", "open"), 0)]),
    ("vars.l[0].x", [(("vars", "l", 0, "x"), 0)]),
    ('vars["my-var"].y', [(("vars", "my-var", "y"), 0)]),
    ("vars.l[vars.i].x", [(("vars", "l"), 0), (("vars", "i"), 7)]),
    ("vars.l[-1].x", [(("vars", "l"), 0)]),
    ("vars.l[1 + 1]", [(("vars", "l"), 0)]),
    ("vars.l[true]", [(("vars", "l"), 0)]),
    ("a[b[c]].d", [(("a",), 0), (("b",), 2), (("c",), 4)]),
    (
        "len(target.host) > 0 and env.name in [vars.a, vars.b]",
        [
            (("target", "host"), 4),
            (("env", "name"), 25),
            (("vars", "a"), 38),
            (("vars", "b"), 46),
        ],
    ),
    ("(vars).x", [(("vars", "x"), 1)]),
    ("[vars.l][0].x", [(("vars", "l"), 1)]),
    ("str(vars.n).x", [(("vars", "n"), 4)]),
    ("steps.x.in", [(("steps", "x", "in"), 0)]),
    ("a.b or a.b", [(("a", "b"), 0), (("a", "b"), 7)]),
]


@pytest.mark.parametrize(("text", "expected"), NAMES)
def test_names_are_longest_static_paths_in_source_order(
    text: str, expected: list[tuple[tuple[str | int, ...], int]]
) -> None:
    refs = compile_expr(text, ORIGIN).names()
    assert refs == [NameRef(path, Span("exam.yml", 10, 7 + offset)) for path, offset in expected]


def test_name_spans_on_later_lines() -> None:
    refs = compile_expr("true and\n   vars.x", Span("f.yml", 4, 11), line_indent=2).names()
    assert refs == [NameRef(("vars", "x"), Span("f.yml", 5, 6))]


# --------------------------------------------------------------------------- templates


def tpl(text: str) -> Template:
    return compile_template(text, ORIGIN)


TEMPLATES: list[tuple[str, Any, bool]] = [
    # text, rendered, is_single
    ("${vars.n}", 3, True),
    ("${ vars.n }", 3, True),
    ("${\n  vars.f\n}", 2.5, True),
    ("${vars.l}", [1, 2, 3], True),
    ("${vars.none}", None, True),
    ("${vars.t}", True, True),
    ("${vars.d}", SCOPE["vars"]["d"], True),
    ("${vars.n + 1}", 4, True),
    ("${vars.s}", "abc", True),
    (" ${vars.n}", " 3", False),
    ("${vars.n} ", "3 ", False),
    ("${vars.n}${vars.n}", "33", False),
    ("n=${vars.n} f=${vars.f}", "n=3 f=2.5", False),
    ("${vars.s}/x", "abc/x", False),
    ("t=${vars.t} no=${vars.no} none=${vars.none}", "t=true no=false none=null", False),
    ("l=${vars.l} m=${vars.mixed}", 'l=[1, 2, 3] m=[1, "a", true, null]', False),
    ("d=${vars.d}", 'd={"k": "v", "in": 1}', False),
    ("${'é'}-${env.name}", "é-cand-001", False),
    ("${ '}' }", "}", True),
    ("${ \"a}b\" + '}' }!", "a}b}!", False),
    ("$${HOME}", "${HOME}", False),
    ("echo $${HOME} ${vars.n}", "echo ${HOME} 3", False),
    ("$${${vars.n}}", "${3}", False),
    ("$$${vars.n}", "$${vars.n}", False),
    ("cost: $5 ${vars.n}$", "cost: $5 3$", False),
    ("no interpolation {here} $ $x", "no interpolation {here} $ $x", False),
    ("", "", False),
]


@pytest.mark.parametrize(("text", "rendered", "is_single"), TEMPLATES)
def test_template_render(text: str, rendered: Any, is_single: bool) -> None:
    template = tpl(text)
    assert template.source == text
    assert template.is_single is is_single
    assert same(template.render(SCOPE), rendered) or template.render(SCOPE) == rendered


def test_static_template_needs_no_scope() -> None:
    template = tpl("echo $${HOME}")
    assert template.is_static
    assert template.exprs() == []
    assert template.render({}) == "echo ${HOME}"
    assert not tpl("${x}").is_static


def test_template_exprs_and_names_carry_file_positions() -> None:
    template = compile_template("a ${vars.x} b\n${ steps.s.result.y }", Span("f.yml", 8, 12), line_indent=4)
    assert [str(e) for e in template.exprs()] == ["vars.x", "steps.s.result.y"]
    assert template.names() == [
        NameRef(("vars", "x"), Span("f.yml", 8, 16)),
        NameRef(("steps", "s", "result", "y"), Span("f.yml", 9, 8)),
    ]


def test_template_str_is_canonical() -> None:
    assert str(tpl("a${ vars.x+1 }b $${c}")) == "a${vars.x + 1}b $${c}"


TEMPLATE_ERRORS = [
    # text, message, hint, offset in text
    ("a ${vars.x", "unterminated '${' (no closing '}')", "write $${ for a literal '${'", 2),
    ("${a} ${", "unterminated '${' (no closing '}')", "write $${ for a literal '${'", 5),
    ("${ 'abc }", "unterminated string", "close it with '", 3),
    ("${}", "empty expression", "write $${ for a literal '${'", 2),
    ("x ${ a and }", "expected an operand after 'and'", "write $${ for a literal '${'", 10),
    ("${HOME:-/root}", "unexpected character ':'", "write $${ for a literal '${'", 6),
    ("${a = 1}", "unexpected '='", "use '==' to compare", 4),
    (
        "${nope(1)}",
        "unknown function 'nope'",
        "functions are all, any, contains, int, join, len, lower, matches, now, seconds, split, startswith, str, timestamp, trim, upper",
        2,
    ),
]


@pytest.mark.parametrize(("text", "message", "hint", "offset"), TEMPLATE_ERRORS)
def test_template_error_position(text: str, message: str, hint: str, offset: int) -> None:
    with pytest.raises(ExprError) as info:
        tpl(text)
    assert (info.value.message, info.value.hint, info.value.offset) == (message, hint, offset)
    assert info.value.span == Span("exam.yml", 10, 7 + offset)


def test_template_error_on_a_later_line() -> None:
    with pytest.raises(ExprError) as info:
        compile_template("line one\n  then ${vars.x +}", Span("f.yml", 3, 5), line_indent=8)
    assert info.value.message == "expected an operand after '+'"
    assert info.value.span == Span("f.yml", 4, 9 + 17)


def test_template_render_propagates_eval_errors() -> None:
    with pytest.raises(EvalError, match="vars has no field 'missing'"):
        tpl("x=${vars.missing}").render(SCOPE)


HAS_INTERPOLATION = [
    ("${x}", True),
    ("a ${x} b", True),
    ("$${x}", True),  # must be compiled too, to turn $${ into ${
    ("$x", False),
    ("{x}", False),
    ("$ {x}", False),
    ("", False),
]


@pytest.mark.parametrize(("text", "expected"), HAS_INTERPOLATION)
def test_has_interpolation(text: str, expected: bool) -> None:
    assert has_interpolation(text) is expected


# --------------------------------------------------------------------------- misc


RENDER = [
    ("a", "a"),
    (1, "1"),
    (-2.5, "-2.5"),
    (1e16, "1e+16"),
    (True, "true"),
    (None, "null"),
    ([1, [2, "x"]], '[1, [2, "x"]]'),
    ((1, 2), "[1, 2]"),
    ({"a": [None]}, '{"a": [null]}'),
    ({1: "x"}, '{"1": "x"}'),
    ("ünï", "ünï"),
    (["ü"], '["ü"]'),
]


@pytest.mark.parametrize(("value", "text"), RENDER)
def test_render_value(value: Any, text: str) -> None:
    assert render_value(value) == text


def test_functions_table_lists_every_function_with_its_arity() -> None:
    assert dict(FUNCTIONS) == {
        **{"len": 1, "matches": 2, "startswith": 2, "contains": 2, "int": 1, "str": 1, "trim": 1, "lower": 1},
        **{"upper": 1, "split": 2, "join": 2, "any": 1, "all": 1, "now": 0, "timestamp": 1, "seconds": 1},
    }


def test_compile_is_cached_by_text_but_positions_follow_the_origin() -> None:
    a = compile_expr("vars.x", Span("a.yml", 1, 1))
    b = compile_expr("vars.x", Span("b.yml", 9, 9))
    assert a.ast is b.ast
    assert a.names()[0].span == Span("a.yml", 1, 1)
    assert b.names()[0].span == Span("b.yml", 9, 9)


def test_deep_but_allowed_nesting_evaluates_and_prints() -> None:
    text = "(" * 150 + "1" + ")" * 150 + " + 1" * 40
    expr = compile_expr(text, ORIGIN)
    assert expr.evaluate({}) == 41
    assert str(expr) == "1" + " + 1" * 40
    long_chain = " or ".join(["false"] * 190)
    assert compile_expr(long_chain, ORIGIN).evaluate({}) is False


def test_compiling_thousands_of_scenario_expressions_is_fast() -> None:
    import time

    texts = [f"steps.s{i}.ok and steps.s{i}.result.written_mb >= vars.fill_mb + {i}" for i in range(2000)]
    texts += [f"${{vars.log_dir}}/access.log.{i}" for i in range(2000)]
    compile_expr("warm and up", ORIGIN)
    start = time.process_time()
    for text in texts:
        compile_template(text, ORIGIN) if text.startswith("$") else compile_expr(text, ORIGIN)
    # ~0.1 s on a laptop; generous for loaded CI machines
    assert time.process_time() - start < 1.0
