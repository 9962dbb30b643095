"""Source stage: Span, ScenarioError(s) and the position-keeping YAML loader."""

from __future__ import annotations

import pytest

from chaosrun._source import load_yaml
from chaosrun._spans import Node, ScenarioError, ScenarioErrors, Span


def _load_errors(text: str) -> list[str]:
    with pytest.raises(ScenarioErrors) as info:
        load_yaml(text, "f.yaml")
    return [str(e) for e in info.value.errors]


def test_span_prints_as_file_line_col() -> None:
    assert str(Span("a/b.yaml", 3, 7)) == "a/b.yaml:3:7"


def test_spans_order_by_file_then_line_then_column() -> None:
    spans = [Span("b", 1, 1), Span("a", 2, 1), Span("a", 1, 9), Span("a", 1, 2)]
    assert sorted(spans) == [Span("a", 1, 2), Span("a", 1, 9), Span("a", 2, 1), Span("b", 1, 1)]


def test_error_string_is_position_message_and_hint_in_parentheses() -> None:
    err = ScenarioError("unknown module 'fil_disk'", Span("s.yaml", 14, 9), "did you mean 'fill_disk'?")
    assert str(err) == "s.yaml:14:9: unknown module 'fil_disk' (did you mean 'fill_disk'?)"
    assert str(ScenarioError("bad", Span("s.yaml", 1, 1))) == "s.yaml:1:1: bad"


def test_error_as_dict_has_exactly_the_json_fields() -> None:
    err = ScenarioError("bad", Span("s.yaml", 2, 3), "hint")
    assert err.as_dict() == {"file": "s.yaml", "line": 2, "col": 3, "message": "bad", "hint": "hint"}


def test_scenario_errors_sort_by_position_and_drop_exact_duplicates() -> None:
    a = ScenarioError("a", Span("f", 2, 1))
    b = ScenarioError("b", Span("f", 1, 5))
    c = ScenarioError("c", Span("f", 1, 5))
    again = ScenarioError("a", Span("f", 2, 1))
    errors = ScenarioErrors([a, c, again, b])
    assert [e.message for e in errors.errors] == ["b", "c", "a"]
    assert str(errors) == "f:1:5: b\nf:1:5: c\nf:2:1: a"


def test_loader_positions_are_one_based_for_keys_and_values() -> None:
    root = load_yaml("version: 1\nsteps:\n  - id: x\n    wait: 2s\n", "f.yaml")
    assert root.key_spans["version"] == Span("f.yaml", 1, 1)
    assert root.value["version"].span == Span("f.yaml", 1, 10)
    step = root.at("steps", 0)
    assert step is not None
    assert step.span == Span("f.yaml", 3, 5)
    assert step.key_spans["wait"] == Span("f.yaml", 4, 5)
    assert step.value["wait"].span == Span("f.yaml", 4, 11)


def test_loader_keeps_scalar_styles() -> None:
    root = load_yaml("a: plain\nb: 'single'\nc: \"double\"\nd: |\n  lit\ne: >\n  fold\n", "f.yaml")
    assert [root.value[k].style for k in "abcde"] == [None, "'", '"', "|", ">"]


def test_block_scalar_knows_where_its_text_starts_and_its_indentation() -> None:
    root = load_yaml("x:\n  expect: |\n\n      a\n        and b\n", "f.yaml")
    node = root.at("x", "expect")
    assert node is not None
    assert node.span == Span("f.yaml", 2, 11)  # the '|' indicator
    assert node.text_start == Span("f.yaml", 4, 7)  # the first non-blank line
    assert node.line_indent == 6


def test_duplicate_key_points_at_both_lines() -> None:
    assert _load_errors("a: 1\nb: 2\na: 3\n") == [
        "f.yaml:1:1: duplicate key 'a' (defined again at line 3)",
        "f.yaml:3:1: duplicate key 'a' (first defined at line 1)",
    ]


def test_duplicate_keys_are_found_at_any_depth_and_all_reported() -> None:
    errors = _load_errors("a:\n  x: 1\n  x: 2\nb: [{y: 1, y: 2}]\n")
    assert [e.split(": ", 1)[0] for e in errors] == ["f.yaml:2:3", "f.yaml:3:3", "f.yaml:4:6", "f.yaml:4:12"]


def test_invalid_yaml_is_one_error_at_the_problem_mark() -> None:
    assert _load_errors("a: [1, 2\nb: 3\n") == [
        "f.yaml:2:2: invalid YAML: expected ',' or ']', but got ':' (while parsing a flow sequence at line 1)"
    ]


def test_a_tab_in_indentation_gets_a_plain_message() -> None:
    assert _load_errors("a:\n\tb: 1\n") == [
        "f.yaml:2:1: invalid YAML: a tab character here; indent with spaces (YAML does not allow tabs)"
    ]


def test_a_second_document_is_an_error_at_its_separator() -> None:
    assert _load_errors("a: 1\n---\nb: 2\n") == [
        "f.yaml:2:1: invalid YAML: a second document ('---'); a file holds one document"
    ]


def test_an_unsafe_tag_is_an_error_not_a_crash() -> None:
    assert _load_errors("a: !!python/object:os.system x\n") == [
        "f.yaml:1:4: invalid YAML: could not determine a constructor for the tag '!!python/object:os.system'"
    ]


def test_a_bad_value_for_a_standard_tag_is_an_error_not_a_crash() -> None:
    errors = _load_errors("a: !!int xyz\n")
    assert len(errors) == 1 and errors[0].startswith("f.yaml:1:4: invalid YAML: !!int value 'xyz'")


def test_a_recursive_alias_is_an_error_not_a_crash() -> None:
    assert _load_errors("a: &x [1, *x]\n") == [
        "f.yaml:1:4: invalid YAML: recursive alias (a collection that contains itself)"
    ]


def test_a_collection_as_key_is_an_error() -> None:
    assert _load_errors("? [1]\n: 2\n") == ["f.yaml:1:3: invalid YAML: a key must be a plain value, not a collection"]


def test_aliases_and_merge_keys_work() -> None:
    root = load_yaml("base: &b {user: root}\nweb:\n  <<: *b\n  host: h\n", "f.yaml")
    assert root.plain() == {"base": {"user": "root"}, "web": {"user": "root", "host": "h"}}


def test_an_empty_file_is_an_empty_mapping_at_line_one() -> None:
    root = load_yaml("# only a comment\n", "f.yaml")
    assert root.value == {} and root.span == Span("f.yaml", 1, 1)


def test_non_string_keys_become_strings_and_dates_stay_text() -> None:
    root = load_yaml("1: one\ntrue: yes\nd: 2024-01-02\n", "f.yaml")
    assert root.plain() == {"1": "one", "True": True, "d": "2024-01-02"}


def test_at_walks_mappings_and_lists_and_returns_none_off_the_tree() -> None:
    root = load_yaml("a:\n  - b: 1\n", "f.yaml")
    leaf = root.at("a", 0, "b")
    assert isinstance(leaf, Node) and leaf.value == 1
    assert root.at("a", 1) is None
    assert root.at("a", "b") is None
    assert root.at("a", 0, "b", "c") is None


def test_span_of_a_missing_key_falls_back_to_the_deepest_existing_node() -> None:
    root = load_yaml("a:\n  b: 1\n", "f.yaml")
    assert root.span_of(["a", "b"]) == Span("f.yaml", 2, 6)
    assert root.span_of(["a", "zz", "q"]) == Span("f.yaml", 2, 3)
    assert root.span_of([]) == root.span
