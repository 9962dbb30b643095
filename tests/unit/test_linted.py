"""The cache of linted scenarios and inventories (``chaosrun.linted``): a second load of the
same files is the same Scenario and Inventory, read back without YAML, Lark or JSON Schema;
any change is a new entry; errors are never cached; an entry is read only from a folder of
this user's that nobody else can write to (a pickle is code: the attack is made for real).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from chaosrun._spans import ScenarioErrors
from chaosrun.errors import UsageError
from chaosrun.linted import _FORMAT, _key, cache_folder, load_inventory_cached, load_scenario_cached

SCENARIO = """\
version: 1
name: cached
targets:
  web: {host: 127.0.0.1}
vars:
  port: 80
steps:
  - id: stop
    target: web
    chaos: stop_service
    when: vars.port == 80
    with: {service: nginx}
verify:
  - id: up
    target: web
    probe: port_open
    with: {port: "${vars.port}"}
    expect: result.open
    points: 1
"""

INVENTORY = "env,role,host,port,user,identity\ncand-1,web,10.0.0.1,22,root,id\n"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CHAOSRUN_LINT_CACHE", raising=False)
    folder = cache_folder()
    assert folder == tmp_path / "xdg" / "chaosrun" / "linted"
    return folder


def _entries(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.exists() else []


def test_a_second_load_is_the_same_scenario_read_from_one_entry(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "exam.yaml"
    path.write_text(SCENARIO)
    first, warnings = load_scenario_cached(str(path))
    (entry,) = _entries(cache)
    assert cache.stat().st_mode & 0o777 == 0o700
    again, warnings_again = load_scenario_cached(str(path))
    assert again == first and [str(w) for w in warnings_again] == [str(w) for w in warnings]
    assert _entries(cache) == [entry]
    assert again.steps[0].when is not None and again.steps[0].when.evaluate({"vars": {"port": 80}}) is True


def test_a_changed_file_or_other_vars_are_another_entry(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "exam.yaml"
    path.write_text(SCENARIO)
    assert load_scenario_cached(str(path))[0].vars["port"] == 80
    assert load_scenario_cached(str(path), ["port=8080"])[0].vars["port"] == 8080
    path.write_text(SCENARIO.replace("port: 80\n", "port: 81\n"))
    assert load_scenario_cached(str(path))[0].vars["port"] == 81
    assert len(_entries(cache)) == 3


def test_errors_are_found_each_time_and_never_cached(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "exam.yaml"
    path.write_text(SCENARIO.replace("stop_service", "stop_servise"))
    for _ in range(2):
        with pytest.raises(ScenarioErrors) as caught:
            load_scenario_cached(str(path))
        assert f"{path}:10:12" in str(caught.value) and "stop_service" in str(caught.value)
    good = tmp_path / "good.yaml"
    good.write_text(SCENARIO)
    with pytest.raises(UsageError, match="no variable 'nope'"):
        load_scenario_cached(str(good), ["nope=1"])
    with pytest.raises(ScenarioErrors, match="cannot read file"):
        load_scenario_cached(str(tmp_path / "missing.yaml"))
    assert _entries(cache) == []


def test_an_inventory_is_cached_by_its_bytes_and_env_per(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "room.csv"
    path.write_text(INVENTORY)
    first = load_inventory_cached(str(path))
    assert load_inventory_cached(str(path)) == first
    assert [e.name for e in first.environments] == ["cand-1"]
    path.write_text(INVENTORY + "cand-2,web,10.0.0.2,22,root,id\n")
    assert [e.name for e in load_inventory_cached(str(path)).environments] == ["cand-1", "cand-2"]
    path.write_text("env,role,host\ncand-1,web,\n")
    with pytest.raises(ScenarioErrors, match=r"room\.csv:2"):
        load_inventory_cached(str(path))
    assert len(_entries(cache)) == 2


def _plant(cache: Path, path: Path, marker: Path) -> Path:
    """An entry under the key of ``path`` whose unpickling runs a command (touch marker)."""

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    text = path.read_text()
    entry = cache / _key("scenario", str(path), text, ["--var"])
    entry.write_bytes(_FORMAT + pickle.dumps(Payload()))
    return entry


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_an_entry_in_a_folder_others_can_write_to_is_never_loaded(cache: Path, tmp_path: Path, mode: int) -> None:
    path = tmp_path / "exam.yaml"
    path.write_text(SCENARIO)
    cache.mkdir(parents=True)
    cache.chmod(mode)
    marker = tmp_path / "pwned"
    _plant(cache, path, marker)
    scenario, _ = load_scenario_cached(str(path))
    assert scenario.name == "cached"
    assert not marker.exists()  # the planted pickle never ran


def test_the_same_entry_in_our_own_folder_is_loaded_which_is_why_the_folder_check_matters(
    cache: Path, tmp_path: Path
) -> None:
    path = tmp_path / "exam.yaml"
    path.write_text(SCENARIO)
    cache.mkdir(parents=True, mode=0o700)
    marker = tmp_path / "ran"
    _plant(cache, path, marker)
    load_scenario_cached(str(path))
    assert marker.exists()


def test_a_torn_entry_is_dropped_and_rebuilt(cache: Path, tmp_path: Path) -> None:
    path = tmp_path / "exam.yaml"
    path.write_text(SCENARIO)
    first, _ = load_scenario_cached(str(path))
    (entry,) = _entries(cache)
    entry.write_bytes(entry.read_bytes()[: len(_FORMAT) + 40])
    again, _ = load_scenario_cached(str(path))
    assert again == first
    assert pickle.loads(entry.read_bytes()[len(_FORMAT) :])[0] == first


def test_off_means_no_folder_and_no_entry(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAOSRUN_LINT_CACHE", "off")
    path = tmp_path / "exam.yaml"
    path.write_text(SCENARIO)
    assert load_scenario_cached(str(path))[0].name == "cached"
    assert cache_folder() is None and not cache.exists()


def test_a_run_of_a_cached_scenario_loads_no_yaml_grammar_or_schema(cache: Path, tmp_path: Path) -> None:
    """What ``chaosrun run`` pays at start: the second time, none of the parse stage."""
    path = tmp_path / "exam.yaml"
    path.write_text(SCENARIO)
    inventory = tmp_path / "room.csv"
    inventory.write_text(INVENTORY)
    probe = (
        "import json, sys\n"
        "from chaosrun.api import load_exam, prepare\n"
        "from chaosrun.scenario import Section\n"
        f"exam = load_exam({str(path)!r}, {str(inventory)!r}, audit_dir={str(tmp_path / 'audit')!r})\n"
        "plan, _ = prepare(exam, Section.STEPS, seed=1)\n"
        "print(json.dumps(sorted(m for m in ('yaml', 'lark', 'jsonschema') if m in sys.modules)))\n"
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    loaded = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        loaded.append(json.loads(done.stdout.splitlines()[-1]))
    assert loaded == [["jsonschema", "lark", "yaml"], []]
