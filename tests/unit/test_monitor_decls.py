"""The monitor probes' declarations (``x-from``, ``schemas/monitor_probes/``) and the
catalogue that reads them: the same subset as a module's, and every probe that can run
``from: monitor`` has an implementation in ``chaosrun.run.monitor``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from chaosrun.modules import ModuleKind, catalogue, parse_declaration
from chaosrun.scenario import Origin

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "schemas" / "monitor_probes").glob("*.schema.json"))
IDS = [p.name.removesuffix(".schema.json") for p in FILES]
TOP_KEYS = {"$schema", "title", "description", "x-kind", "x-rank", "x-from", "type", "properties"}
TOP_KEYS |= {"required", "additionalProperties", "x-result"}
PARAM_KEYS = {"type", "enum", "minimum", "maximum", "pattern", "default", "description", "items"}
PARAM_KEYS |= {"x-unit", "x-regex"}  # a duration's unit; an RE2 pattern lint compiles
PARAM_KEYS |= {"additionalProperties"}  # for an object of strings only
TYPES = {"string", "integer", "number", "boolean", "array", "object"}


def _read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_there_are_the_four_probes_that_run_from_the_monitor() -> None:
    able = {n for n, d in catalogue().items() if d.runs_from(Origin.MONITOR)}
    assert able == {"port_open", "http", "dns", "ssh_login"}


def test_every_probe_that_runs_from_the_monitor_has_an_implementation_there() -> None:
    from chaosrun.run.monitor import PROBES

    assert set(PROBES) == {n for n, d in catalogue().items() if d.runs_from(Origin.MONITOR)}


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_a_monitor_probe_declaration_is_a_probe_from_the_monitor_only(path: Path) -> None:
    data = _read(path)
    assert data["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(data)
    assert data["title"] == path.name.removesuffix(".schema.json")
    assert data["x-kind"] == "probe" and data["x-from"] == ["monitor"]
    assert isinstance(data["x-rank"], int) and len(data["description"]) > 20
    assert "\n" not in data["description"]


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_a_monitor_probe_declaration_uses_the_documented_subset(path: Path) -> None:
    data = _read(path)
    assert set(data) <= TOP_KEYS, set(data) - TOP_KEYS
    assert data["type"] == "object" and data["additionalProperties"] is False
    assert set(data.get("required", [])) <= set(data["properties"])
    for name, spec in data["properties"].items():
        where = f"{path.name}: {name}"
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name), where
        assert set(spec) <= PARAM_KEYS and spec["type"] in TYPES, where
        assert isinstance(spec.get("description"), str) and spec["description"], where
        if spec["type"] == "object":
            assert spec.get("additionalProperties") == {"type": "string"}, where
        if "default" in spec:
            jsonschema.Draft202012Validator(spec).validate(spec["default"])
    assert data["x-result"], "x-result documents what expect can read"
    for name, spec in data["x-result"].items():
        assert spec["type"] in TYPES and spec["description"], f"{path.name} result {name}"


def test_x_from_defaults_to_the_target() -> None:
    assert catalogue()["file_mode"].origins == (Origin.TARGET,)
    assert catalogue()["port_open"].origins == (Origin.TARGET, Origin.MONITOR)


def _declaration(tmp_path: Path, name: str, **extra: Any) -> Path:
    data = {"title": name, "description": "A test probe for the catalogue.", "x-kind": "probe", "x-rank": 1}
    data.update({"type": "object", "properties": {}, "additionalProperties": False, **extra})
    path = tmp_path / f"{name}.schema.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("value", [[], ["monitor", "monitor"], ["elsewhere"], "monitor", [{"a": 1}]])
def test_a_malformed_x_from_is_refused(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ValueError, match="x-from must be a list"):
        parse_declaration(_declaration(tmp_path, "p", **{"x-from": value}), name="p")


def test_chaos_cannot_run_from_the_monitor(tmp_path: Path) -> None:
    path = _declaration(tmp_path, "c", **{"x-kind": "chaos", "x-from": ["target", "monitor"]})
    with pytest.raises(ValueError, match="chaos runs on the target only"):
        parse_declaration(path, name="c")


def test_a_monitor_only_declaration_must_say_so_and_may_not_reuse_a_module_name(tmp_path: Path) -> None:
    monitor = tmp_path / "monitor"
    monitor.mkdir()
    _declaration(monitor, "echo")  # no x-from: it would claim the target, without Go code
    with pytest.raises(ValueError, match=r'x-from \["monitor"\]'):
        catalogue.__wrapped__(monitor_root=monitor)
    _declaration(monitor, "echo", **{"x-from": ["monitor"]})
    decls = catalogue.__wrapped__(monitor_root=monitor)
    assert decls["echo"].kind is ModuleKind.PROBE and decls["echo"].origins == (Origin.MONITOR,)
    _declaration(monitor, "port_open", **{"x-from": ["monitor"]})
    with pytest.raises(ValueError, match="'port_open' is also declared"):
        catalogue.__wrapped__(monitor_root=monitor)
