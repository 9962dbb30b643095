"""The module catalogue, read from each module's declaration.

``chaos_go/modules/<name>/params.schema.json`` is the single source of truth for a
module's kind, description, parameters and result fields: lint checks ``with:`` against
it, ``chaosrun modules`` prints it, the docs are generated from it, and the Go binary
embeds it and checks its parameters again at run time.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from . import _schema
from ._resources import data_dir


class ModuleKind(enum.Enum):
    CHAOS = "chaos"
    PROBE = "probe"


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    required: bool
    description: str
    default: Any = None
    has_default: bool = False
    enum: tuple[Any, ...] = ()


@dataclass(frozen=True)
class ResultField:
    name: str
    type: str
    description: str


@dataclass(frozen=True)
class ModuleDecl:
    """One module's declaration."""

    name: str
    kind: ModuleKind
    description: str
    rank: int
    schema: Mapping[str, Any]
    params: tuple[Param, ...]
    results: tuple[ResultField, ...]
    path: Path

    @property
    def validator(self) -> jsonschema.Draft202012Validator:
        return _validator(self.path)


@cache
def _validator(path: Path) -> jsonschema.Draft202012Validator:
    return _schema.compile_validator(_read(path))


def _read(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def _type_name(spec: Mapping[str, Any]) -> str:
    kind = spec.get("type", "any")
    if isinstance(kind, list):
        return "|".join(kind)
    if kind == "array":
        return f"list of {spec.get('items', {}).get('type', 'any')}"
    return str(kind)


def parse_declaration(path: Path) -> ModuleDecl:
    """Read one ``params.schema.json``.

    Raises:
        ValueError: the declaration is malformed (a bug in the module, not the scenario).
    """
    data = _read(path)
    name = path.parent.name
    if data.get("title", name) != name:
        raise ValueError(f"{path}: title {data.get('title')!r} differs from folder name {name!r}")
    try:
        kind = ModuleKind(data["x-kind"])
    except (KeyError, ValueError):
        raise ValueError(f"{path}: x-kind must be 'chaos' or 'probe'") from None
    required = set(data.get("required", []))
    params = tuple(
        Param(
            name=pname,
            type=_type_name(spec),
            required=pname in required,
            description=spec.get("description", ""),
            default=spec.get("default"),
            has_default="default" in spec,
            enum=tuple(spec.get("enum", ())),
        )
        for pname, spec in data.get("properties", {}).items()
    )
    results = tuple(
        ResultField(rname, _type_name(spec), spec.get("description", ""))
        for rname, spec in data.get("x-result", {}).items()
    )
    return ModuleDecl(
        name=name,
        kind=kind,
        description=data.get("description", ""),
        rank=int(data.get("x-rank", 99)),
        schema=data,
        params=params,
        results=results,
        path=path,
    )


@cache
def catalogue(root: Path | None = None) -> Mapping[str, ModuleDecl]:
    """Every module under ``chaos_go/modules/``, by name, in catalogue order (kind, rank)."""
    base = (root or data_dir("chaos_go")) / "modules"
    decls = [parse_declaration(p) for p in sorted(base.glob("*/params.schema.json"))]
    decls.sort(key=lambda d: (d.kind != ModuleKind.CHAOS, d.rank, d.name))
    return {d.name: d for d in decls}
