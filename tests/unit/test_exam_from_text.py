"""An exam given as text (the HTTP API's way): its inventory is read in the format it is written in."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaosrun.api import exam_from_text, inventory_name

SCENARIO = "version: 1\nname: t\ntargets:\n  web: {host: 10.0.0.1}\nsteps:\n  - {id: p, wait: 1s}\n"
TEXTS = {
    "inventory.csv": "env,role,host\ncand-1,web,10.0.0.1\ncand-2,web,10.0.0.2\n",
    "inventory.ini": "[exam]\ncand-1 ansible_host=10.0.0.1\ncand-2 ansible_host=10.0.0.2\n",
    "inventory.yml": "environments:\n  cand-1: {web: {host: 10.0.0.1}}\n  cand-2: {web: {host: 10.0.0.2}}\n",
}


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_each_format_given_as_text_is_read_as_itself(tmp_path: Path, name: str) -> None:
    assert inventory_name(TEXTS[name]) == name
    exam = exam_from_text(SCENARIO, TEXTS[name], tmp_path / "exam")
    assert exam.inventory is not None and Path(exam.inventory.file).name == name
    assert (tmp_path / "exam" / name).read_text() == TEXTS[name]
    hosts = {e.name: e for e in exam.inventory.placed({"web"})[0]}
    assert sorted(hosts) == ["cand-1", "cand-2"]


def test_a_comment_before_the_csv_header_and_ansible_yaml_are_told_apart() -> None:
    assert inventory_name("# exported from the booking system\nenv, role, host\nc,web,h\n") == "inventory.csv"
    assert inventory_name("all:\n  hosts:\n    cand-1: {ansible_host: 10.0.0.1}\n") == "inventory.yml"
