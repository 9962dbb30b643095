"""docs/modules.md is generated from the module declarations and must match them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from chaosrun.modules import catalogue

REPO = Path(__file__).resolve().parents[2]


def _gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", REPO / "tools" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_modules_md_matches_the_module_declarations() -> None:
    expected = _gen_docs().render(catalogue())
    current = (REPO / "docs" / "modules.md").read_text(encoding="utf-8")
    assert current == expected, "docs/modules.md is out of date: run .venv/bin/python tools/gen_docs.py"


def test_modules_md_documents_every_module_and_parameter() -> None:
    text = (REPO / "docs" / "modules.md").read_text(encoding="utf-8")
    for decl in catalogue().values():
        assert f"### `{decl.name}`" in text
        for param in decl.params:
            assert f"| `{param.name}` |" in text, f"{decl.name}.{param.name}"


def test_a_pipe_in_a_description_does_not_break_the_table() -> None:
    assert _gen_docs().cell("a | b\nc") == "a \\| b c"
