"""Golden corpus: every broken file in bad/ prints exactly the lines in its ``.expected``.

Each ``bad/<case>.yaml`` holds one kind of mistake (``many_errors.yaml`` holds many), and
``bad/<case>.expected`` the exact ``file:line:col: message`` lines that ``chaosrun lint``
prints for it, run from the repository root (goss's ``testdata/out_*``). Every file in
``good/`` must lint clean.

After a deliberate change of a message, rewrite the expectations and review the diff:

    .venv/bin/python tests/golden/test_golden.py --update
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import sys
from pathlib import Path

import pytest

from chaosrun import ScenarioErrors
from chaosrun.cli import lint_files, main

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BAD = sorted((HERE / "bad").glob("*.yaml"))
GOOD = sorted((HERE / "good").glob("*.yaml"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _lint(*paths: str, fmt: str = "text") -> tuple[int, str, str]:
    """Run ``chaosrun lint`` in-process from the repository root: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["lint", *paths] + (["--format", fmt] if fmt != "text" else [])
    with contextlib.chdir(ROOT), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _expected(case: Path) -> str:
    return case.with_suffix(".expected").read_text(encoding="utf-8")


@pytest.mark.parametrize("case", BAD, ids=[p.stem for p in BAD])
def test_bad_file_prints_exactly_the_expected_lines(case: Path) -> None:
    code, out, err = _lint(_rel(case))
    assert out == _expected(case)
    assert code == 1
    count = len(out.splitlines())
    assert err.startswith(f"{count} error")


@pytest.mark.parametrize("case", GOOD, ids=[p.stem for p in GOOD])
def test_good_file_lints_clean(case: Path) -> None:
    code, out, err = _lint(_rel(case))
    assert (code, out) == (0, "")
    assert err == "ok: 1 file checked\n"


def test_every_bad_file_has_an_expected_file_and_no_expected_file_is_orphaned() -> None:
    yamls = {p.stem for p in BAD}
    expected = {p.stem for p in (HERE / "bad").glob("*.expected")}
    assert yamls == expected
    assert len(yamls) >= 30


def test_each_expected_line_names_its_own_file_with_a_position() -> None:
    for case in BAD:
        for line in _expected(case).splitlines():
            file, lineno, col, message = line.split(":", 3)
            assert file == _rel(case)
            assert int(lineno) >= 1 and int(col) >= 1, line
            assert message.startswith(" ") and message.strip(), line


def test_each_expected_position_lies_inside_the_file() -> None:
    for case in BAD:
        lines = case.read_text(encoding="utf-8").split("\n")
        for entry in _expected(case).splitlines():
            _, lineno, col, _ = entry.split(":", 3)
            row = int(lineno)
            assert row <= len(lines), entry
            # a column points at a character of the line, or just past its end
            assert int(col) <= len(lines[row - 1]) + 1, entry


def test_single_kind_files_hold_one_error_except_where_one_mistake_shows_twice() -> None:
    # a duplicate (YAML key or step id) is reported at both of its places
    twice = {"duplicate_step_id", "duplicate_yaml_key"}
    for case in BAD:
        if case.stem == "many_errors":
            continue
        count = len(_expected(case).splitlines())
        assert count == (2 if case.stem in twice else 1), case.stem


def test_many_errors_file_reports_every_mistake_in_file_order() -> None:
    case = HERE / "bad" / "many_errors.yaml"
    lines = _expected(case).splitlines()
    assert len(lines) >= 15
    positions = [tuple(int(n) for n in line.split(":", 3)[1:3]) for line in lines]
    assert positions == sorted(positions)
    messages = [line.split(":", 3)[3] for line in lines]
    for fragment in (
        "version: must be 1",
        "unknown key 'color'",
        "expected integer",
        "monitor.ports",
        "duplicate step id",
        "unknown target role",
        "unknown variable",
        "unknown key 'sigal'",
        "invalid duration",
        "unknown chaos module",
        "needs unknown step",
        "expected an operand",
        "points only count in verify",
        "expect is only for probes",
        "one_of cannot be nested",
        "len() takes 1 argument",
        "verify only runs probes",
    ):
        assert any(fragment in m for m in messages), fragment


def test_shuffled_errors_sort_to_the_same_output() -> None:
    cases = [c for c in BAD if len(_expected(c).splitlines()) > 1]
    assert cases
    for case in cases:
        errors = lint_files([str(case)])
        for seed in range(10):
            shuffled = list(errors)
            random.Random(seed).shuffle(shuffled)
            assert ScenarioErrors(shuffled).errors == errors
            assert ScenarioErrors(reversed(shuffled)).errors == errors


def test_several_files_at_once_print_every_file_in_the_order_given_sorted_within() -> None:
    cases = [HERE / "bad" / "unknown_var.yaml", HERE / "bad" / "many_errors.yaml", HERE / "bad" / "needs_cycle.yaml"]
    code, out, err = _lint(*(_rel(c) for c in cases))
    assert code == 1
    assert out == "".join(_expected(c) for c in cases)
    assert err == f"{len(out.splitlines())} errors in 3 files\n"


def test_json_format_carries_the_same_errors_as_the_text() -> None:
    for case in BAD:
        code, out, _ = _lint(_rel(case), fmt="json")
        data = json.loads(out)
        assert code == 1 and data["ok"] is False
        text = [
            f"{e['file']}:{e['line']}:{e['col']}: {e['message']}" + (f" ({e['hint']})" if e["hint"] else "")
            for e in data["errors"]
        ]
        assert text == _expected(case).splitlines()


def test_every_error_example_in_the_reference_is_real_lint_output() -> None:
    doc = (ROOT / "docs" / "scenario.md").read_text(encoding="utf-8")
    section = doc.split("### The kinds of error", 1)[1].split("Found later", 1)[0]
    examples = [row.rsplit("| `", 1)[1].rsplit("` |", 1)[0] for row in section.splitlines() if row.endswith("` |")]
    assert len(examples) >= 50
    printed = {line.split(": ", 1)[1] for case in BAD for line in _expected(case).splitlines()}
    missing = [e for e in examples if e not in printed]
    assert missing == [], "docs/scenario.md shows messages lint does not print"


def update() -> None:
    """Rewrite every ``bad/*.expected`` from the current output (review the diff!)."""
    for case in BAD:
        _, out, _ = _lint(_rel(case))
        target = case.with_suffix(".expected")
        old = target.read_text(encoding="utf-8") if target.exists() else None
        if out != old:
            target.write_text(out, encoding="utf-8")
            print(f"updated {_rel(target)}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: test_golden.py --update")
    update()
