"""The module catalogue, read from each module's declaration.

``chaos_go/modules/<name>/params.schema.json`` is the single source of truth for a
module's kind, description, parameters and result fields: lint checks ``with:`` against
it, ``chaosrun modules`` prints it, the docs are generated from it, and the Go binary
embeds it and checks its parameters again at run time.

Probes that run only on the monitor (``from: monitor``; no binary, so no folder in
``chaos_go/``) are declared the same way in ``schemas/monitor_probes/<name>.schema.json``.
``x-from`` says where a probe can run: ``["target"]`` (the default), ``["monitor"]``, or
both; ``run.monitor`` implements the monitor side.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._resources import data_dir
from .scenario import Origin, parse_duration

if TYPE_CHECKING:
    import jsonschema

MONITOR_PROBES = "monitor_probes"  # the folder of schemas/ holding monitor-only declarations
#: What every probe run ``from: monitor`` has in common (``chaosrun modules`` and docs/modules.md).
MONITOR_NOTE = (
    "From the monitor (`from: monitor`), `host` is an address as the monitor sees it and defaults "
    "to the target's address, target.host (port_open's 127.0.0.1 is its default on the target "
    "only); file parameters name files on the monitor."
)


class ModuleKind(enum.Enum):
    CHAOS = "chaos"
    PROBE = "probe"
    INTERNAL = "internal"  # chaosrun's own tool (restore): built and deployed, not in the catalogue


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    required: bool
    description: str
    default: Any = None
    has_default: bool = False
    enum: tuple[Any, ...] = ()
    unit: str | None = None  # x-unit of a duration: "s" or "ms"; a scenario may write "30s"
    regex: bool = False  # x-regex: an RE2 pattern, compiled by lint

    @property
    def shown_type(self) -> str:
        """The type as the catalogue shows it: ``duration (s)`` for a duration."""
        return f"duration ({self.unit})" if self.unit else self.type


#: The units a duration parameter may be declared in, as seconds.
DURATION_UNITS: Mapping[str, float] = {"s": 1.0, "ms": 0.001}


def duration_in(unit: str, value: Any) -> int:
    """A duration parameter's value as the module takes it: whole ``unit``s.

    ``value`` is an int (already in the unit) or a duration text (``30s``, ``500ms``,
    ``5m``, ``2h``, ``1d``).

    Raises:
        ValueError: not a duration, or not a whole number of the unit.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    seconds = parse_duration(value) if isinstance(value, str) else None
    if seconds is None:
        raise ValueError(f"{value!r} is not a duration (500ms, 30s, 5m, 2h, 1d, or a number of {_UNIT_WORD[unit]})")
    amount = seconds / DURATION_UNITS[unit]
    whole = round(amount)
    if abs(amount - whole) > 1e-9:
        raise ValueError(f"{value} is not a whole number of {_UNIT_WORD[unit]}")
    return whole


_UNIT_WORD = {"s": "seconds", "ms": "milliseconds"}


def normalize_params(decl: ModuleDecl, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with every duration written as text turned into the module's unit.

    Raises:
        ValueError: ``with.NAME: ...`` for a value that is not a duration.
    """
    out = dict(params)
    for param in decl.params:
        if param.unit and isinstance(out.get(param.name), str):
            try:
                out[param.name] = duration_in(param.unit, out[param.name])
            except ValueError as exc:
                raise ValueError(f"with.{param.name}: {exc}") from None
    return out


@dataclass(frozen=True)
class ResultField:
    name: str
    type: str
    description: str


_ABBREVIATIONS = ("e.g", "i.e", "etc", "vs", "cf")


def first_sentence(text: str) -> str:
    """``text`` up to the first period that ends a sentence: followed by white space, outside
    parentheses and backticks, and not ending an abbreviation (``e.g.``, ``i.e.``, ``etc.``)."""
    depth, quoted = 0, False
    for i, ch in enumerate(text):
        if ch == "`":
            quoted = not quoted
        elif quoted:
            continue
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif ch == "." and depth == 0 and (i + 1 == len(text) or text[i + 1].isspace()):
            words = text[:i].split()
            last = words[-1].lower() if words else ""
            if last.lstrip("(") not in _ABBREVIATIONS:
                return text[:i]
    return text.rstrip(".")


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
    origins: tuple[Origin, ...] = (Origin.TARGET,)  # x-from: where it can run
    requires: tuple[str, ...] = ()  # x-requires: what the machine must have (REQUIREMENTS)
    warnings: tuple[tuple[Mapping[str, Any], str], ...] = ()  # x-warnings: (unless, message)

    @property
    def summary(self) -> str:
        """The description's first sentence, without its period (the catalogue's line)."""
        return first_sentence(self.description)

    @property
    def validator(self) -> jsonschema.Draft202012Validator:
        return _validator(self.path)

    def runs_from(self, origin: Origin) -> bool:
        return origin in self.origins

    @property
    def needs(self) -> str:
        """What the machine must have, in words (``""`` when nothing special)."""
        return "; ".join(REQUIREMENTS[r] for r in self.requires)

    @property
    def where(self) -> str:
        """Where it runs, as ``from:`` spells it: ``target``, ``monitor`` or ``target, monitor``."""
        return ", ".join(o.value for o in self.origins)


@cache
def _validator(path: Path) -> jsonschema.Draft202012Validator:
    from . import _schema  # JSON Schema: for lint, not for a run of a linted scenario

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
    if kind == "object" and isinstance(spec.get("additionalProperties"), Mapping):
        return f"map of {spec['additionalProperties'].get('type', 'any')}"
    return str(kind)


def _origins(data: Mapping[str, Any], path: Path, kind: ModuleKind) -> tuple[Origin, ...]:
    raw = data.get("x-from", ["target"])
    names = [o.value for o in Origin]
    if not isinstance(raw, list) or not raw or not all(v in names for v in raw) or len(set(raw)) != len(raw):
        raise ValueError(f"{path}: x-from must be a list of 'target' and/or 'monitor'")
    if kind is ModuleKind.CHAOS and raw != ["target"]:
        raise ValueError(f"{path}: chaos runs on the target only (x-from)")
    return tuple(Origin(v) for v in raw)


#: What ``x-requires`` may name, and how the catalogue and lint say it.
REQUIREMENTS = {
    "selinux": "SELinux enabled (RHEL, Fedora, Rocky, Alma); Debian, Ubuntu and the chaosrun lab VMs have none",
}


def _requires(data: Mapping[str, Any], path: Path) -> tuple[str, ...]:
    raw = data.get("x-requires", [])
    if not isinstance(raw, list) or not all(r in REQUIREMENTS for r in raw):
        raise ValueError(f"{path}: x-requires must be a list of {', '.join(map(repr, REQUIREMENTS))}")
    return tuple(raw)


def _warnings(data: Mapping[str, Any], path: Path) -> tuple[tuple[Mapping[str, Any], str], ...]:
    """``x-warnings``: ``[{"unless": {PARAM: VALUE...}, "message": TEXT}]``, what lint says
    at a step that does not give those values (a valid use that is usually a mistake)."""
    out = []
    for item in data.get("x-warnings", []):
        unless = item.get("unless") if isinstance(item, dict) else None
        message = item.get("message") if isinstance(item, dict) else None
        if not isinstance(unless, dict) or not unless or not isinstance(message, str) or not message:
            raise ValueError(f'{path}: x-warnings items are {{"unless": {{PARAM: VALUE}}, "message": TEXT}}')
        if not set(unless) <= set(data.get("properties", {})):
            raise ValueError(f"{path}: x-warnings names a parameter the module does not have")
        out.append((dict(unless), message))
    return tuple(out)


def _unit(spec: Mapping[str, Any], path: Path, pname: str) -> str | None:
    unit = spec.get("x-unit")
    if unit is None:
        return None
    if unit not in DURATION_UNITS or spec.get("type") != "integer":
        raise ValueError(f"{path}: {pname}: x-unit is 's' or 'ms', on an integer parameter")
    return str(unit)


def parse_declaration(path: Path, *, name: str | None = None) -> ModuleDecl:
    """Read one declaration: a module's ``params.schema.json``, named by its folder, or
    a monitor probe's ``schemas/monitor_probes/<name>.schema.json`` (``name`` given).

    Raises:
        ValueError: the declaration is malformed (a bug in the module, not the scenario).
    """
    data = _read(path)
    name = name or path.parent.name
    if data.get("title", name) != name:
        raise ValueError(f"{path}: title {data.get('title')!r} differs from its name {name!r}")
    try:
        kind = ModuleKind(data["x-kind"])
    except (KeyError, ValueError):
        raise ValueError(f"{path}: x-kind must be 'chaos', 'probe' or 'internal'") from None
    origins = _origins(data, path, kind)
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
            unit=_unit(spec, path, pname),
            regex=spec.get("x-regex") is True,
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
        origins=origins,
        requires=_requires(data, path),
        warnings=_warnings(data, path),
    )


def _monitor_declaration(path: Path) -> ModuleDecl:
    decl = parse_declaration(path, name=path.name.removesuffix(".schema.json"))
    if decl.kind is not ModuleKind.PROBE or decl.origins != (Origin.MONITOR,):
        raise ValueError(f'{path}: a declaration without Go code is a probe with x-from ["monitor"]')
    return decl


@cache
def catalogue(root: Path | None = None, monitor_root: Path | None = None) -> Mapping[str, ModuleDecl]:
    """Every module under ``chaos_go/modules/`` and every monitor-only probe under
    ``schemas/monitor_probes/``, by name, in catalogue order (kind, rank).

    Raises:
        ValueError: a declaration is malformed, or two declare the same name.
    """
    base = (root or data_dir("chaos_go")) / "modules"
    monitor = monitor_root or data_dir("schemas") / MONITOR_PROBES
    decls = [parse_declaration(p) for p in sorted(base.glob("*/params.schema.json"))]
    decls = [d for d in decls if d.kind is not ModuleKind.INTERNAL]
    decls += [_monitor_declaration(p) for p in sorted(monitor.glob("*.schema.json"))]
    decls.sort(key=lambda d: (d.kind != ModuleKind.CHAOS, d.rank, d.name))
    found: dict[str, ModuleDecl] = {}
    for d in decls:
        if d.name in found:
            raise ValueError(f"{d.path}: module {d.name!r} is also declared in {found[d.name].path}")
        found[d.name] = d
    return found


def module_line(decl: ModuleDecl) -> str:
    """One line of ``chaosrun modules``: name, summary, where a probe runs, what it needs."""
    first = decl.summary
    where = f" [from: {decl.where}]" if decl.kind.value == "probe" and decl.where != "target" else ""
    needs = f" [needs: {', '.join(decl.requires)}]" if decl.requires else ""
    return f"  {decl.name:<18} {first}{where}{needs}"


def format_module(decl: ModuleDecl) -> str:
    """``chaosrun modules NAME``: what the module does, its parameters and result fields."""
    lines = [f"{decl.name} ({decl.kind.value})", f"  {decl.description}"]
    if decl.needs:
        lines.append(f"  needs: {decl.needs}")
    if decl.kind.value == "probe":
        lines.append(f"  runs from: {decl.where}" + (f". {MONITOR_NOTE}" if "monitor" in decl.where else ""))
    lines += ["", "parameters:"]
    if not decl.params:
        lines.append("  (none)")
    for p in decl.params:
        if p.required:
            flag = "required"
        elif p.has_default:
            flag = f"default {json.dumps(p.default)}"
        else:
            flag = "optional"
        choices = f" one of {', '.join(json.dumps(v) for v in p.enum)}." if p.enum else ""
        lines.append(f"  {p.name:<16} {p.shown_type:<16} {flag}")
        if p.description or choices:
            lines.append(f"      {p.description}{choices}")
    if decl.results:
        lines += ["", "result fields (steps.ID.result.FIELD, or result.FIELD in expect):"]
        for f in decl.results:
            lines.append(f"  {f.name:<16} {f.type:<16} {f.description}")
    return "\n".join(lines)
