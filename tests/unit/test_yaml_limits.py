"""Source stage: the limits of one YAML file (docs/scenario.md, "Limits").

An alias bomb, nesting too deep and an oversized file are refused with one positioned
error, before anything expands or walks the document; aliases within the limits still work.
The bomb's cases run ``chaosrun`` in a subprocess under a 512 MiB address-space cap: had
anything expanded the aliases (387 million nodes), it would have died of MemoryError or the
timeout instead of printing the error.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chaosrun import _source
from chaosrun._source import MAX_ALIAS_NODES, MAX_YAML_BYTES, MAX_YAML_DEPTH, load_yaml
from chaosrun._spans import ScenarioErrors
from chaosrun.lint import check_scenario_text
from chaosrun.parse import read_source

# The "billion laughs" shape: nine levels of nine aliases, 9**9 = 387,420,489 strings.
BOMB = """\
version: 1
name: a-billion-laughs
vars:
  a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""
# a: 10 nodes, b: 91, c: 820, d: 7381; the aliases of b, c and d expand to 8289 nodes, and
# the first *d of e (line 8, column 10) takes them past 10000.
BOMB_ERROR = "YAML aliases expand to more than 10000 nodes (an alias bomb?)"

# The same shape in an inventory: an environment aliased ten times, then lists of those.
INVENTORY_BOMB = "defaults: { user: root }\nenvironments:\n  cand-001: &x0 { web: { host: 10.0.1.11 } }\n" + "".join(
    f"  x{n}: &x{n} [{','.join([f'*x{n - 1}'] * 10)}]\n" for n in range(1, 8)
)
OK_SCENARIO = "version: 1\nname: t\nsteps:\n  - { id: p, wait: 1s }\n"

# The child caps its own address space before it imports chaosrun, then runs the command line.
CAPPED = """\
import resource, sys
cap = 512 * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
from chaosrun.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _errors(text: str, file: str = "f.yaml") -> list[str]:
    with pytest.raises(ScenarioErrors) as info:
        load_yaml(text, file)
    return [str(e) for e in info.value.errors]


def _capped(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CAPPED, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=10
    )


# -- aliases --------------------------------------------------------------------------------


def test_the_382_byte_alias_bomb_is_refused_at_the_alias_that_crosses_the_limit() -> None:
    assert len(BOMB.encode()) == 382
    assert _errors(BOMB) == [f"f.yaml:8:10: {BOMB_ERROR}"]


def test_lint_refuses_the_alias_bomb_under_a_memory_cap(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(BOMB)
    done = _capped(tmp_path, "lint", "bomb.yaml")
    assert (done.returncode, done.stdout, done.stderr) == (1, f"bomb.yaml:8:10: {BOMB_ERROR}\n", "1 error in 1 file\n")


@pytest.mark.parametrize("command", ["plan", "run"])
def test_plan_and_run_refuse_the_alias_bomb_in_a_scenario_under_a_memory_cap(tmp_path: Path, command: str) -> None:
    (tmp_path / "bomb.yaml").write_text(BOMB)
    done = _capped(tmp_path, command, "bomb.yaml")
    assert (done.returncode, done.stdout) == (1, f"bomb.yaml:8:10: {BOMB_ERROR}\n"), done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["lint", "plan", "run"])
def test_the_alias_bomb_in_an_inventory_is_refused_under_a_memory_cap(tmp_path: Path, command: str) -> None:
    # x0: 5 nodes, x1: 51, x2: 511, x3: 5111; the first *x3 (line 7, column 12) crosses 10000
    (tmp_path / "ok.yaml").write_text(OK_SCENARIO)
    (tmp_path / "inventory.yaml").write_text(INVENTORY_BOMB)
    argv = ["lint", "inventory.yaml"] if command == "lint" else [command, "ok.yaml", "-i", "inventory.yaml"]
    done = _capped(tmp_path, *argv)
    assert (done.returncode, done.stdout) == (1, f"inventory.yaml:7:12: {BOMB_ERROR}\n"), done.stderr
    assert "Traceback" not in done.stderr


def test_aliases_may_expand_to_exactly_the_limit_and_not_one_node_more() -> None:
    per_alias = 100  # a list of 99 numbers: 100 nodes
    anchor = "a: &a [" + ",".join(["1"] * (per_alias - 1)) + "]\n"
    one = anchor + "s: &s x\n"
    at_limit = one + "b: [" + ",".join(["*a"] * (MAX_ALIAS_NODES // per_alias)) + "]\n"
    assert len(load_yaml(at_limit, "f.yaml").plain()["b"]) == MAX_ALIAS_NODES // per_alias
    over = at_limit + "c: *s\n"
    assert _errors(over) == [f"f.yaml:4:4: {BOMB_ERROR}"]


def test_merge_keys_count_as_the_aliases_they_are() -> None:
    # each level merges the one before it twice: the pairs double per level
    levels = ["m0: &m0 {k0: 0}\n"] + [f"m{n}: &m{n} {{<<: [*m{n - 1}, *m{n - 1}], k{n}: {n}}}\n" for n in range(1, 40)]
    errors = _errors("".join(levels))
    assert len(errors) == 1 and errors[0].endswith(BOMB_ERROR)


def test_a_few_anchors_reused_in_a_scenario_still_work() -> None:
    text = """\
version: 1
name: shared-values
targets:
  web: { host: 127.0.0.1 }
vars:
  defaults: &defaults { target: web, timeout: 30s, retries: 1 }
steps:
  - id: kill_web
    chaos: kill_process
    with: &nginx { name: nginx, signal: KILL }
    <<: *defaults
  - id: kill_again
    chaos: kill_process
    with: *nginx
    needs: [kill_web]
    <<: *defaults
verify:
  - id: web_down
    target: web
    probe: process_running
    with: { name: nginx }
    expect: not result.running
    points: 1
"""
    scenario, errors = check_scenario_text(text, "shared.yaml")
    assert [str(e) for e in errors] == []
    assert scenario is not None
    first, second = scenario.steps
    assert first.params == second.params == {"name": "nginx", "signal": "KILL"}
    assert first.retries == second.retries == 1


# -- nesting --------------------------------------------------------------------------------


def _flow(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_nesting_is_allowed_down_to_the_limit() -> None:
    root = load_yaml("a: " + _flow(MAX_YAML_DEPTH - 1) + "\n", "f.yaml")  # the top mapping is level 1
    node = root.at("a")
    for _ in range(MAX_YAML_DEPTH - 2):
        assert node is not None
        node = node.at(0)
    assert node is not None and node.value == []


@pytest.mark.parametrize("levels", [MAX_YAML_DEPTH, 1000, 200_000], ids=["one-too-many", "past-libyaml", "huge"])
def test_flow_nesting_too_deep_is_refused_at_the_collection_that_crosses_the_limit(levels: int) -> None:
    # `a: ` then '[' at column 4 is level 2: level 65 is the 64th '[', at column 67
    assert _errors("a: " + _flow(levels) + "\n") == ["f.yaml:1:67: YAML nested more than 64 levels deep"]


@pytest.mark.parametrize("levels", [MAX_YAML_DEPTH + 1, 5000])
def test_block_nesting_too_deep_is_refused_at_the_collection_that_crosses_the_limit(levels: int) -> None:
    # `- - - x`: level n starts at column 2n - 1
    assert _errors("- " * levels + "x\n") == ["f.yaml:1:129: YAML nested more than 64 levels deep"]


def test_nesting_reached_through_an_alias_is_refused_at_the_alias() -> None:
    text = "a: &a " + _flow(40) + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n"
    # *a sits 31 levels down and spans 40 more
    assert _errors(text) == ["f.yaml:2:34: YAML nested more than 64 levels deep"]


@pytest.mark.parametrize("levels", [MAX_YAML_DEPTH, 600], ids=["one-too-many", "past-the-recursion-limit"])
def test_nesting_is_refused_at_the_same_place_without_libyaml(monkeypatch: pytest.MonkeyPatch, levels: int) -> None:
    monkeypatch.setattr(_source, "_FAST_LOADER", None)  # PyYAML's own parser, which recurses per level
    assert _errors("x:\n  " + _flow(levels) + "\n") == ["f.yaml:2:66: YAML nested more than 64 levels deep"]


# -- size -----------------------------------------------------------------------------------


def test_a_file_of_exactly_the_size_limit_loads() -> None:
    assert load_yaml("#" * MAX_YAML_BYTES, "f.yaml").value == {}


def test_one_byte_over_the_size_limit_is_refused_at_line_one() -> None:
    assert _errors("#" * (MAX_YAML_BYTES + 1)) == ["f.yaml:1:1: file larger than 1 MiB (the limit for a YAML file)"]


def test_the_size_limit_counts_utf8_bytes_not_characters() -> None:
    text = "# " + "é" * (MAX_YAML_BYTES // 2)  # fewer characters than the limit, more bytes
    assert len(text) < MAX_YAML_BYTES
    assert _errors(text) == ["f.yaml:1:1: file larger than 1 MiB (the limit for a YAML file)"]


def test_an_oversized_file_is_read_only_up_to_the_limit_and_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("version: 1\nname: big\n" + "#" * (3 * MAX_YAML_BYTES) + "\n")
    text, name = read_source(big)
    assert len(text) == MAX_YAML_BYTES + 1
    assert _errors(text, name) == [f"{big}:1:1: file larger than 1 MiB (the limit for a YAML file)"]


def test_an_endless_file_is_refused_not_read_forever() -> None:
    text, name = read_source("/dev/zero")
    assert _errors(text, name) == ["/dev/zero:1:1: file larger than 1 MiB (the limit for a YAML file)"]
