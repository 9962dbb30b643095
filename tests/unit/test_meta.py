"""Meta-tests: every module folder is complete and declares itself in the agreed subset.

The subset is the one docs/module-authoring.md names: both lint (Python, jsonschema) and
the kit (Go, chaos_go/kit/params.go) must understand every declaration.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from chaosrun.modules import ModuleKind, catalogue
from chaosrun.scenario import Origin

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / "chaos_go" / "modules"
FOLDERS = sorted(p for p in MODULES.iterdir() if p.is_dir())
IDS = [p.name for p in FOLDERS]

TOP_KEYS = {
    "$schema",
    "title",
    "description",
    "x-kind",
    "x-rank",
    "x-from",
    "x-requires",
    "x-warnings",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "x-result",
}
PARAM_KEYS = {"type", "enum", "minimum", "maximum", "pattern", "default", "description", "items"}
PARAM_KEYS |= {"x-unit", "x-regex"}  # a duration's unit; an RE2 pattern lint compiles
PARAM_KEYS |= {"additionalProperties"}  # an object parameter: a map of strings
ITEM_KEYS = PARAM_KEYS - {"default", "description", "items", "x-unit", "additionalProperties"}
RESULT_KEYS = {"type", "description", "items"}
TYPES = {"string", "integer", "number", "boolean", "array", "object"}
PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
}


def _declaration(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "params.schema.json").read_text(encoding="utf-8"))
    return data


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, PY_TYPES[kind])


def test_the_documented_subset_is_what_this_test_enforces() -> None:
    doc = (ROOT / "docs" / "module-authoring.md").read_text(encoding="utf-8")
    for word in (
        "`type`",
        "`enum`",
        "`minimum`",
        "`maximum`",
        "`pattern`",
        "`default`",
        "`description`",
        "items.type",
        "`required`",
        '"additionalProperties": false',
        "x-kind",
        "x-rank",
        "x-result",
        "x-from",
        "x-unit",
        "x-regex",
        "x-requires",
        "x-warnings",
    ):
        assert word in doc, word


def test_there_are_modules_of_both_kinds() -> None:
    kinds = {d.kind for d in catalogue().values()}
    assert kinds == {ModuleKind.CHAOS, ModuleKind.PROBE}


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_module_folder_has_code_declaration_and_a_test(folder: Path) -> None:
    assert (folder / "main.go").is_file()
    assert (folder / "params.schema.json").is_file()
    assert list(folder.glob("*_test.go")), "each module has a *_test.go"
    assert re.fullmatch(r"[a-z][a-z0-9_]*", folder.name)


#: The one main() of every module: the kit takes name and kind from the embedded declaration.
GO_MAIN = re.compile(
    r"^func main\(\) \{ kit\.Main\(kit\.Module\{"
    r"Declaration: declaration, Run: run(?:, Background: background)?"
    r"\}\) \}$",
    re.MULTILINE,
)
GO_MODULE_LITERAL = re.compile(r"kit\.Module\{([^{}]*)\}")
GO_MODULE_FIELDS = {"Declaration", "Run", "Background"}


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_module_code_takes_its_identity_from_its_declaration(folder: Path) -> None:
    code = (folder / "main.go").read_text(encoding="utf-8")
    assert "//go:embed params.schema.json" in code
    assert len(GO_MAIN.findall(code)) == 1, "main() is `kit.Main(kit.Module{Declaration: declaration, Run: run})`"
    assert code.count("kit.Module{") == 1, "main() holds the module's only kit.Module"
    for source in sorted(folder.glob("*.go")):
        for literal in GO_MODULE_LITERAL.findall(source.read_text(encoding="utf-8")):
            fields = set(re.findall(r"(\w+):", literal))
            assert fields <= GO_MODULE_FIELDS, f"{source.name}: kit.Module restates {fields - GO_MODULE_FIELDS}"
    tests = "".join(p.read_text(encoding="utf-8") for p in folder.glob("*_test.go"))
    assert "moduletest.CheckDeclaration(t, declaration)" in tests, "the Go test checks title == folder and x-kind"


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_declaration_is_a_valid_draft_2020_12_schema(folder: Path) -> None:
    data = _declaration(folder)
    assert data["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(data)


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_declaration_names_its_kind_title_and_purpose(folder: Path) -> None:
    data = _declaration(folder)
    assert data["title"] == folder.name
    assert data["x-kind"] in ("chaos", "probe", "internal")
    assert isinstance(data.get("x-rank"), int) and not isinstance(data["x-rank"], bool)
    assert isinstance(data.get("description"), str) and len(data["description"]) > 20


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_declaration_uses_only_the_documented_subset(folder: Path) -> None:
    data = _declaration(folder)
    assert set(data) <= TOP_KEYS, set(data) - TOP_KEYS
    assert data["type"] == "object" and data["additionalProperties"] is False
    properties = data.get("properties", {})
    assert set(data.get("required", [])) <= set(properties)
    for name, spec in properties.items():
        where = f"{folder.name}.{name}"
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name), where
        assert set(spec) <= PARAM_KEYS, (where, set(spec) - PARAM_KEYS)
        assert spec.get("type") in TYPES, where
        assert isinstance(spec.get("description"), str) and spec["description"], f"{where} needs a description"
        if spec["type"] == "array":
            items = spec.get("items")
            assert isinstance(items, dict) and items.get("type") in TYPES - {"array"}, f"{where}: items.type"
            assert set(items) <= ITEM_KEYS, (where, set(items) - ITEM_KEYS)
        else:
            assert "items" not in spec, where
        if spec["type"] == "object":
            values = spec.get("additionalProperties")
            assert isinstance(values, dict) and values.get("type") == "string", f"{where}: a map of strings"
            assert set(values) <= ITEM_KEYS, (where, set(values) - ITEM_KEYS)
        else:
            assert "additionalProperties" not in spec, where
        if "pattern" in spec:
            re.compile(spec["pattern"])
        for value in spec.get("enum", []):
            assert _is(value, spec["type"]), f"{where}: enum value {value!r}"
        if "default" in spec:
            jsonschema.Draft202012Validator(spec).validate(spec["default"])
            assert name not in data.get("required", []), f"{where}: a required parameter has no default"


@pytest.mark.parametrize("folder", FOLDERS, ids=IDS)
def test_declaration_documents_its_result_fields(folder: Path) -> None:
    results = _declaration(folder).get("x-result", {})
    assert results, "x-result documents what when: and expect: can read"
    for name, spec in results.items():
        where = f"{folder.name} result {name}"
        assert set(spec) <= RESULT_KEYS, where
        assert spec.get("type") in TYPES | {"object"}, where
        assert isinstance(spec.get("description"), str) and spec["description"], where


def test_the_catalogue_holds_every_folder_and_nothing_else() -> None:
    # besides the monitor-only probes of schemas/monitor_probes/ (tests/unit/test_monitor_decls.py)
    internal = [f.name for f in FOLDERS if _declaration(f)["x-kind"] == "internal"]
    assert internal == ["guard", "restore"]  # chaosrun's own tools: built and deployed, never in a scenario
    assert sorted(n for n, d in catalogue().items() if d.runs_from(Origin.TARGET)) == sorted(set(IDS) - set(internal))


def test_every_change_a_module_records_is_one_restore_undoes() -> None:
    """A module's ``Action: "..."`` is a case of the restore module (chaos_go/modules/restore)."""
    modules = ROOT / "chaos_go" / "modules"
    restore = "".join(p.read_text() for p in (modules / "restore").glob("*.go") if not p.name.endswith("_test.go"))
    handled = set(re.findall(r'"([a-z_]+)"', restore))
    recorded: set[str] = set()
    for source in [*modules.glob("*/*.go"), *(ROOT / "chaos_go" / "kit").glob("*.go")]:
        if source.name.endswith("_test.go") or source.parent.name == "restore":
            continue
        recorded |= set(re.findall(r'Action:\s*"([a-z_]+)"', source.read_text()))
    systemctl = {a for a in recorded if a.startswith("systemctl_")}
    assert recorded - systemctl - handled == set()
    assert "systemctl_" in restore  # units' states: every systemctl_ACTION, by its prefix
    assert {"chmod", "write_file", "spawn_process", "nft_add_rule", "edit_account"} <= recorded
