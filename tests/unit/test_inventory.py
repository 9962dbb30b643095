"""Inventory files: parsing, positioned errors, relative paths."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from chaosrun import ScenarioErrors
from chaosrun._spans import Span
from chaosrun.inventory import absolute, load_inventory, parse_inventory


def _parse(text: str, file: str = "/exam/inv.yaml") -> tuple[object, list[str]]:
    inventory, errors = parse_inventory(textwrap.dedent(text), file)
    return inventory, [str(e) for e in errors]


def test_an_inventory_lists_environments_in_file_order_with_their_hosts() -> None:
    inventory, errors = parse_inventory(
        textwrap.dedent(
            """\
            defaults: { user: exam, identity: keys/id }
            environments:
              cand-002: { web: { host: 10.0.2.11, port: 2222 } }
              cand-001:
                web: { host: 10.0.1.11 }
                db: { host: 10.0.1.12, insecure: true }
            """
        ),
        "/exam/inv.yaml",
    )
    assert errors == [] and inventory is not None
    assert [e.name for e in inventory.environments] == ["cand-002", "cand-001"]
    two, one = inventory.environments
    assert two.span == Span("/exam/inv.yaml", 3, 3)
    assert two.hosts["web"].port == 2222 and two.given["web"] == frozenset({"host", "port"})
    assert sorted(one.hosts) == ["db", "web"]
    assert one.hosts["db"].insecure is True
    assert inventory.defaults is not None
    assert inventory.defaults.identity == "/exam/keys/id"
    assert inventory.defaults_given == frozenset({"user", "identity"})


def test_relative_key_paths_are_relative_to_the_inventory_folder() -> None:
    inventory, errors = parse_inventory(
        "environments:\n  e: { web: { host: h, identity: ../k/id, known_hosts: kh } }\n", "/exam/inv/i.yaml"
    )
    assert errors == [] and inventory is not None
    web = inventory.environments[0].hosts["web"]
    assert (web.identity, web.known_hosts) == ("/exam/k/id", "/exam/inv/kh")


def test_absolute_expands_the_home_folder_and_keeps_absolute_paths() -> None:
    assert absolute(None, "/base") is None
    assert absolute("/etc/key", "/base") == "/etc/key"
    assert absolute("a/../b", "/base") == "/base/b"
    assert absolute("~/k", "/base") == str(Path.home() / "k")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "environments:\n  cand-001: { web: { host: h } }\nparallel: 3\n",
            ["/exam/inv.yaml:3:1: unknown key 'parallel' (allowed: defaults, environments)"],
        ),
        (
            "environments:\n  cand 1: { web: { host: h } }\n",
            ["/exam/inv.yaml:2:3: environment names are letters, digits, '_', '.' or '-': 'cand 1'"],
        ),
        (
            "environments:\n  e: { web: { host: h, port: '22' } }\n",
            ['/exam/inv.yaml:2:30: environments.e.web.port: expected integer, got string "22"'],
        ),
        (
            "environments:\n  e: { web: { host: h, port: 70000 } }\n",
            ["/exam/inv.yaml:2:30: environments.e.web.port: must be at most 65535, got 70000"],
        ),
        (
            "environments:\n  e: { web: { hostname: h } }\n",
            ["/exam/inv.yaml:2:15: environments.e.web: unknown key 'hostname' (did you mean 'host'?)"],
        ),
        (
            "defaults: { user: '' }\nenvironments:\n  e: { web: { host: h } }\n",
            ["/exam/inv.yaml:1:19: defaults.user: must not be empty"],
        ),
        (
            "environments:\n  e: [web]\n",
            ["/exam/inv.yaml:2:6: environments.e: expected mapping, got list"],
        ),
        ("defaults: { user: root }\n", ["/exam/inv.yaml:1:1: missing required key 'environments'"]),
        ("environments: {}\n", ["/exam/inv.yaml:1:15: environments: must not be empty"]),
        ("- a\n- b\n", ["/exam/inv.yaml:1:1: an inventory is a mapping with 'environments'"]),
    ],
)
def test_inventory_errors_are_positioned(text: str, expected: list[str]) -> None:
    assert _parse(text)[1] == expected


def test_every_inventory_error_is_reported_sorted() -> None:
    _, errors = _parse(
        """\
        extra: 1
        environments:
          e1: { web: { host: h, port: x } }
          bad name: { web: { host: h, user: 5 } }
        """
    )
    assert [e.split(": ", 1)[0] for e in errors] == [
        "/exam/inv.yaml:1:1",
        "/exam/inv.yaml:3:31",
        "/exam/inv.yaml:4:3",
        "/exam/inv.yaml:4:37",
    ]


def test_duplicate_environments_point_at_both(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text("environments:\n  e1: { web: { host: a } }\n  e1: { web: { host: b } }\n")
    with pytest.raises(ScenarioErrors) as info:
        load_inventory(path)
    assert [(e.span.line, e.span.col) for e in info.value.errors] == [(2, 3), (3, 3)]


def test_load_inventory_raises_on_any_error_and_returns_a_clean_one(tmp_path: Path) -> None:
    path = tmp_path / "inv.yaml"
    path.write_text("environments:\n  e1: { web: { host: a, port: x } }\n")
    with pytest.raises(ScenarioErrors):
        load_inventory(path)
    path.write_text("environments:\n  e1: { web: { host: a } }\n")
    assert [e.name for e in load_inventory(path).environments] == ["e1"]
