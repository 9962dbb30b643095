"""Parse and lint stages: what the golden corpus cannot show well.

Spans of parsed nodes, the ordering rules that decide which ``steps.ID`` references are
allowed, type checks of ``with:`` values built from ``${vars.*}``, and the JSON output.
"""

from __future__ import annotations

import contextlib
import io
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaosrun import _schema
from chaosrun._source import load_yaml
from chaosrun._spans import Span
from chaosrun.cli import main
from chaosrun.expr import Template
from chaosrun.lint import check_scenario_text, load_scenario
from chaosrun.modules import catalogue
from chaosrun.parse import parse_scenario
from chaosrun.scenario import Scenario, Section, StepKind, format_duration, parse_duration

HEADER = """\
version: 1
name: t
targets:
  web: { host: 127.0.0.1 }
"""


def _text(body: str) -> str:
    return HEADER + textwrap.dedent(body)


def lint(body: str) -> list[str]:
    """Every error for a scenario made of HEADER + body, as 'line:col: message (hint)'."""
    _, errors = check_scenario_text(_text(body), "s.yaml")
    return [str(e).removeprefix("s.yaml:") for e in errors]


def parse(body: str) -> Scenario:
    scenario, errors = parse_scenario(_text(body), "s.yaml")
    assert errors == [] and scenario is not None
    return scenario


def at(line: int, col: int) -> Span:
    return Span("s.yaml", line, col)


# --------------------------------------------------------------------------- spans


def test_step_spans_point_at_the_step_and_at_each_of_its_keys() -> None:
    s = parse(
        """\
        steps:
          - id: kill_web
            target: web
            chaos: kill_process
            needs: []
            with: { name: nginx }
        """
    )
    step = s.steps[0]
    assert step.span == at(6, 5)  # line 5 is `steps:`; the step mapping starts at `id`
    assert step.keys["id"] == at(6, 5)
    assert step.target_span == at(7, 13)
    assert step.module_span == at(8, 12)
    assert step.keys["needs"] == at(9, 5)
    assert step.params_node is not None and step.params_node.span == at(10, 11)


def test_needs_spans_point_at_each_listed_name() -> None:
    s = parse(
        """\
        steps:
          - { id: a, wait: 1s }
          - { id: b, wait: 1s }
          - id: c
            wait: 1s
            needs: [a,   b]
        """
    )
    assert s.steps[2].needs == ("a", "b")
    assert s.steps[2].needs_spans == (at(10, 13), at(10, 18))


@pytest.mark.parametrize(
    ("when_line", "col"),
    [
        ("    when: vars.x == 1", 11),
        ("    when: 'vars.x == 1'", 12),
        ('    when: "vars.x == 1"', 12),
    ],
)
def test_names_in_when_are_positioned_inside_plain_and_quoted_scalars(when_line: str, col: int) -> None:
    text = _text("vars: { x: 1 }\nsteps:\n  - id: p\n    wait: 1s\n") + when_line + "\n"
    scenario, errors = parse_scenario(text, "s.yaml")
    assert errors == [] and scenario is not None
    when = scenario.steps[0].when
    assert when is not None
    assert [(r.path, r.span) for r in when.names()] == [(("vars", "x"), at(9, col))]


def test_names_on_later_lines_of_a_block_expect_keep_their_indentation() -> None:
    s = parse(
        """\
        verify:
          - id: w
            probe: port_open
            with: { port: 80 }
            expect: |
              result.open
                and result.state == "open"
        """
    )
    expect = s.verify[0].expect
    assert expect is not None
    assert [r.span for r in expect.names()] == [at(10, 7), at(11, 13)]


def test_names_inside_a_template_are_positioned_after_the_dollar_brace() -> None:
    s = parse(
        """\
        vars: { dir: /var/log }
        steps:
          - id: k
            chaos: kill_process
            with: { name: "x-${vars.dir}" }
        """
    )
    template = s.steps[0].params["name"]
    assert isinstance(template, Template)
    assert [r.span for r in template.names()] == [at(9, 24)]


def test_expression_error_column_is_inside_the_expression() -> None:
    assert lint(
        """\
        steps:
          - id: p
            wait: 1s
            when: true and (false or)
        """
    ) == ["8:29: expected an operand after 'or'"]


# --------------------------------------------------------------------------- parse


def test_step_defaults_and_durations_are_parsed() -> None:
    s = parse(
        """\
        steps:
          - id: a
            chaos: kill_process
            with: { name: x }
          - id: b
            wait: 500ms
            timeout: 2m
            retries: 3
        verify:
          - id: c
            probe: port_open
            with: { port: 1 }
            points: 2.5
        """
    )
    a, b = s.steps
    assert (a.kind, a.section, a.needs, a.timeout, a.retries, a.points) == (
        StepKind.CHAOS,
        Section.STEPS,
        None,
        60.0,
        0,
        0.0,
    )
    assert (b.kind, b.wait, b.timeout, b.retries) == (StepKind.WAIT, 0.5, 120.0, 3)
    assert (s.verify[0].kind, s.verify[0].section, s.verify[0].points) == (StepKind.PROBE, Section.VERIFY, 2.5)


def test_no_needs_and_empty_needs_are_different() -> None:
    s = parse(
        """\
        steps:
          - { id: a, wait: 1s }
          - { id: b, wait: 1s, needs: [] }
        """
    )
    assert s.steps[0].needs is None
    assert s.steps[1].needs == ()


def test_one_of_options_belong_to_their_group() -> None:
    s = parse(
        """\
        steps:
          - id: pick
            one_of:
              - { id: x, wait: 1s }
              - { id: y, wait: 2s }
        """
    )
    group = s.steps[0]
    assert group.kind is StepKind.ONE_OF
    assert [(o.id, o.group) for o in group.options] == [("x", "pick"), ("y", "pick")]
    assert [s.id for s in s.all_steps()] == ["pick", "x", "y"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1.5s", 1.5), ("0s", 0.0)],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "30 s", "s", "1w", "-1s", "1.s", ""])
def test_malformed_durations_do_not_parse(text: str) -> None:
    assert parse_duration(text) is None


def test_durations_format_back_to_short_text() -> None:
    assert [format_duration(x) for x in (0.5, 30.0, 300.0, 90.0)] == ["500ms", "30s", "5m", "90s"]


def test_a_partial_scenario_comes_back_with_every_parse_error() -> None:
    scenario, errors = parse_scenario(
        "version: 1\nname: t\nsteps:\n  - id: a\n    wait: soon\n  - id: b\n    when: 'x ==' \n    wait: 1s\n",
        "s.yaml",
    )
    assert scenario is not None and [s.id for s in scenario.steps] == ["a", "b"]
    assert [str(e) for e in errors] == [
        "s.yaml:5:11: invalid duration 'soon' (write e.g. 500ms, 30s, 5m or 1h)",
        "s.yaml:7:16: expected an operand after '=='",
    ]


# --------------------------------------------------------------------------- ordering


def test_a_step_without_needs_may_read_the_step_above_it() -> None:
    assert (
        lint(
            """\
        steps:
          - { id: a, chaos: kill_process, with: { name: x } }
          - { id: b, chaos: kill_process, with: { name: y }, when: steps.a.ok }
        """
        )
        == []
    )


def test_a_step_without_needs_may_read_any_step_further_up_the_chain() -> None:
    assert (
        lint(
            """\
        steps:
          - { id: a, chaos: kill_process, with: { name: x } }
          - { id: b, wait: 1s }
          - { id: c, wait: 1s }
          - { id: d, chaos: kill_process, with: { name: "${steps.a.result.signal}" } }
        """
        )
        == []
    )


def test_needs_empty_starts_at_once_so_the_step_above_is_not_before_it() -> None:
    assert lint(
        """\
        steps:
          - { id: a, chaos: kill_process, with: { name: x } }
          - { id: b, wait: 1s, needs: [], when: steps.a.ok }
        """
    ) == ["7:41: step 'b' uses steps.a but 'a' does not surely run before it (add it to needs)"]


def test_a_step_after_a_needs_empty_step_follows_that_one_and_its_ancestors_only() -> None:
    errors = lint(
        """\
        steps:
          - { id: a, wait: 1s }
          - { id: b, wait: 1s, needs: [] }
          - { id: c, wait: 1s, when: steps.b.ok and steps.a.ok }
        """
    )
    assert errors == ["8:45: step 'c' uses steps.a but 'a' does not surely run before it (add it to needs)"]


def test_references_are_allowed_only_to_ancestors_not_to_parallel_branches() -> None:
    errors = lint(
        """\
        steps:
          - { id: root, wait: 1s }
          - { id: left, wait: 1s, needs: [root] }
          - { id: right, wait: 1s, needs: [root], when: steps.left.ok }
          - { id: join, wait: 1s, needs: [left, right], when: steps.left.ok and steps.root.ok }
        """
    )
    assert errors == ["8:49: step 'right' uses steps.left but 'left' does not surely run before it (add it to needs)"]


def test_needs_may_name_a_step_further_down_the_file() -> None:
    assert (
        lint(
            """\
        steps:
          - { id: late, wait: 1s, needs: [early], when: steps.early.ok }
          - { id: early, wait: 1s, needs: [] }
        """
        )
        == []
    )


def test_needs_may_name_an_option_of_a_one_of_which_means_the_group() -> None:
    assert (
        lint(
            """\
        steps:
          - id: pick
            one_of:
              - { id: x, chaos: kill_process, with: { name: a } }
              - { id: y, chaos: kill_process, with: { name: b } }
          - { id: z, wait: 1s, needs: [x], when: steps.pick.ok or steps.y.ok }
        """
        )
        == []
    )


def test_a_step_may_not_read_its_own_result_or_its_groups_other_option() -> None:
    errors = lint(
        """\
        steps:
          - id: pick
            one_of:
              - { id: x, chaos: kill_process, with: { name: a }, when: steps.x.ok }
              - { id: y, chaos: kill_process, with: { name: b }, when: steps.x.ok }
        """
    )
    assert errors == [
        "8:64: step 'x' refers to its own result (use result.FIELD in expect)",
        "9:64: step 'y' uses steps.x, another option of the same one_of (only one of them runs)",
    ]


def test_a_needs_cycle_through_a_step_without_needs_is_found() -> None:
    errors = lint(
        """\
        steps:
          - { id: a, wait: 1s, needs: [c] }
          - { id: b, wait: 1s }
          - { id: c, wait: 1s, needs: [b] }
        """
    )
    assert errors == ["6:24: needs cycle: a -> c -> b -> a"]


def test_verify_is_its_own_run_and_reads_earlier_probes_of_verify() -> None:
    assert (
        lint(
            """\
        verify:
          - { id: up, probe: port_open, with: { port: 80 }, expect: result.open }
          - id: fast
            probe: port_open
            with: { port: 80 }
            when: steps.up.ok and steps.up.result.latency_ms < 100
            expect: result.latency_ms < 50
        """
        )
        == []
    )


def test_result_fields_of_a_one_of_are_checked_against_every_option() -> None:
    errors = lint(
        """\
        steps:
          - id: pick
            one_of:
              - { id: x, chaos: kill_process, with: { name: a } }
              - { id: y, chaos: occupy_port, with: { port: 1 } }
          - { id: z, wait: 1s, when: steps.pick.result.pid > 0 }
          - { id: w, wait: 1s, when: steps.x.result.bogus > 0 }
        """
    )
    assert errors == ["11:30: step 'x' has no result field 'bogus'"]


# --------------------------------------------------------------------------- params


def test_a_whole_value_var_keeps_its_type_and_is_type_checked() -> None:
    assert (
        lint(
            """\
        vars: { fill_mb: 64 }
        steps:
          - { id: m, chaos: mem_stress, with: { size_mb: "${vars.fill_mb}" } }
        """
        )
        == []
    )


def test_a_string_var_in_an_integer_parameter_is_an_error_at_the_value() -> None:
    assert lint(
        """\
        vars: { fill_mb: "64" }
        steps:
          - id: m
            chaos: mem_stress
            with:
              size_mb: ${vars.fill_mb}
        """
    ) == ['10:16: with.size_mb: expected integer, got string "64"']


def test_text_around_a_var_makes_a_string() -> None:
    assert lint(
        """\
        vars: { port: 80 }
        steps:
          - { id: o, chaos: occupy_port, with: { port: "${vars.port}0" } }
        """
    ) == ['7:48: with.port: expected integer, got string "800"']


def test_arithmetic_on_vars_is_rendered_before_the_check() -> None:
    assert lint(
        """\
        vars: { port: 70000 }
        steps:
          - { id: o, chaos: occupy_port, with: { port: "${vars.port - 70000}" } }
        """
    ) == ["7:48: with.port: must be at least 1, got 0"]


def test_a_var_that_cannot_be_rendered_is_reported_at_the_name() -> None:
    assert lint(
        """\
        vars: { a: 1, b: x }
        steps:
          - { id: k, chaos: kill_process, with: { name: "${vars.a + vars.b}" } }
        """
    ) == ["7:52: with.name: cannot apply '+' to int and str"]


def test_an_unknown_var_is_reported_once() -> None:
    assert lint(
        """\
        vars: { port: 80 }
        steps:
          - { id: o, chaos: occupy_port, with: { port: "${vars.prot}" } }
        """
    ) == ["7:51: unknown variable 'vars.prot' (did you mean 'port'?)"]


def test_parameters_that_read_target_env_or_steps_are_left_to_run_time() -> None:
    assert (
        lint(
            """\
        steps:
          - { id: a, chaos: kill_process, with: { name: x } }
          - id: o
            chaos: occupy_port
            with: { port: "${target.port}", process_name: "${env.name}", duration: "${steps.a.duration}" }
        """
        )
        == []
    )


def test_a_required_parameter_still_counts_when_its_value_is_dynamic() -> None:
    assert lint(
        """\
        steps:
          - { id: o, chaos: occupy_port, with: { address: "${target.host}" } }
        """
    ) == ["6:34: with: missing required key 'port'"]


def test_a_literal_dollar_brace_is_text_not_an_expression() -> None:
    assert (
        lint(
            """\
        steps:
          - { id: k, chaos: kill_process, with: { name: "$${vars.nothing}" } }
        """
        )
        == []
    )


def test_parameters_nested_in_lists_are_checked_too() -> None:
    errors = lint(
        """\
        vars: { n: x }
        steps:
          - { id: k, chaos: kill_process, with: { name: ["${vars.n}"] } }
        """
    )
    assert errors == ["7:49: with.name: expected string, got list"]


# --------------------------------------------------------------------------- load and JSON


def test_load_scenario_raises_every_error_sorted(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("version: 3\nname: t\nsteps:\n  - { id: b, wait: x }\n  - { id: b, wait: 1s }\n")
    from chaosrun import ScenarioErrors

    with pytest.raises(ScenarioErrors) as info:
        load_scenario(path)
    assert [(e.span.line, e.span.col) for e in info.value.errors] == [(1, 10), (4, 7), (4, 20), (5, 7)]


def test_a_file_that_cannot_be_read_is_a_positioned_error(tmp_path: Path) -> None:
    from chaosrun import ScenarioErrors

    with pytest.raises(ScenarioErrors) as info:
        load_scenario(tmp_path / "missing.yaml")
    assert str(info.value) == f"{tmp_path / 'missing.yaml'}:1:1: cannot read file: No such file or directory"


def _lint_json(*paths: str) -> tuple[int, dict[str, object]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["lint", "--format", "json", *paths])
    return code, json.loads(out.getvalue())


def test_json_format_lists_errors_with_file_line_col_message_and_hint(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(_text("steps:\n  - { id: k, chaos: kil_process, with: { name: x } }\n  - { id: p, wait: 1 }\n"))
    code, data = _lint_json(str(path))
    assert code == 1
    assert data == {
        "ok": False,
        "errors": [
            {
                "file": str(path),
                "line": 6,
                "col": 21,
                "message": "unknown chaos module 'kil_process'",
                "hint": "did you mean 'kill_process'?",
            },
            {
                "file": str(path),
                "line": 7,
                "col": 20,
                "message": "invalid duration 1 (write e.g. 500ms, 30s, 5m or 1h)",
                "hint": None,
            },
        ],
    }


def test_json_format_of_a_clean_file_is_ok_with_no_errors(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(_text("steps:\n  - { id: p, wait: 1s }\n"))
    assert _lint_json(str(path)) == (0, {"ok": True, "errors": []})


# --------------------------------------------------------------------------- schema fast path

ROOT = Path(__file__).resolve().parents[2]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(-2, 2, allow_nan=False),
    st.sampled_from(["", "x", "30s", "5", "KILL", "web", "Bad Name", "20000-60999", "/tmp", "1-2"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["id", "wait", "x", "host"]), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:], new)
    return copy


def _example_data() -> list[Any]:
    files = [*sorted((ROOT / "scenarios").glob("*.yaml")), *sorted((ROOT / "tests/golden/good").glob("[!i]*.yaml"))]
    return [load_yaml(p.read_text(encoding="utf-8"), str(p)).plain() for p in files]


def test_the_schema_fast_path_is_taken_for_every_valid_example() -> None:
    validator = _schema.validator_for("scenario.schema.json")
    for data in _example_data():
        assert _schema._surely_valid(validator.schema, data, validator.schema["$defs"])


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_the_schema_fast_path_never_calls_invalid_data_valid(data: st.DataObject) -> None:
    validator = _schema.validator_for("scenario.schema.json")
    base = data.draw(st.sampled_from(_example_data()))
    path = data.draw(st.sampled_from(_paths(base)))
    mutated = _replaced(base, path, data.draw(_VALUES))
    if _schema._surely_valid(validator.schema, mutated, validator.schema["$defs"]):
        assert list(validator.iter_errors(mutated)) == []


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_fast_path_agrees_with_module_declarations(data: st.DataObject) -> None:
    decl = data.draw(st.sampled_from(list(catalogue().values())))
    names = st.sampled_from([p.name for p in decl.params] + ["bogus"])
    params = data.draw(st.dictionaries(names, _SCALARS | st.lists(_SCALARS, max_size=2)))
    if _schema._surely_valid(decl.validator.schema, params, {}):
        assert list(decl.validator.iter_errors(params)) == []
