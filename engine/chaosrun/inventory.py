"""Parse stage for inventories: which hosts play the scenario's roles in each environment.

Four formats, told apart by :func:`inventory_format`:

- chaosrun's own YAML (``schemas/inventory.schema.json``)::

      defaults: { user: root, identity: keys/exam_ed25519, known_hosts: keys/known_hosts }
      environments:
        cand-001: { vars: { seat: 12 }, web: { host: 10.0.1.11 } }

- Ansible inventories, YAML and INI (``inventory_ansible.py``): an environment per host
  or per group (``env_per``); which role a host plays is decided by :meth:`Inventory.placed`
  once the scenario's roles are known (at plan time);
- CSV, one row per host: ``env,role,host,port,user,identity`` (``inventory_csv.py``).

Relative ``identity``/``known_hosts`` paths are relative to the inventory file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import _schema
from ._source import MAX_YAML_BYTES, load_yaml
from ._spans import Node, ScenarioError, ScenarioErrors, Span
from .inventory_ansible import parse_yaml_inventory
from .inventory_csv import parse_csv_inventory
from .inventory_ini import parse_ini_inventory
from .inventory_model import (
    ENV_PER,
    Environment,
    Inventory,
    InventoryFormat,
    InventoryHost,
    absolute,
    absolute_paths,
)
from .parse import read_source, target_spec
from .scenario import TargetSpec

__all__ = [
    "ENV_PER",
    "Environment",
    "Inventory",
    "InventoryFormat",
    "InventoryHost",
    "absolute",
    "inventory_format",
    "load_inventory",
    "looks_like_ansible_yaml",
    "parse_inventory",
]

_YAML_SUFFIXES = frozenset({".yml", ".yaml", ".json"})
_SCENARIO_KEYS = frozenset({"version", "name", "steps", "verify", "targets", "vars", "monitor"})


def looks_like_ansible_yaml(root: Node) -> bool:
    """A YAML mapping of Ansible groups: ``all:``, or a group with ``hosts`` or ``children``."""
    if not isinstance(root.value, dict) or "environments" in root.value:
        return False
    if "all" in root.value:
        return True
    return any(isinstance(n.value, dict) and ("hosts" in n.value or "children" in n.value) for n in root.value.values())


def inventory_format(text: str, file: str) -> InventoryFormat | None:
    """The inventory format of a file; None when it is not an inventory (a scenario).

    By extension: ``.csv`` is CSV; ``.ini`` and ``.cfg`` are Ansible INI; ``.yml``,
    ``.yaml`` and ``.json`` are Ansible YAML when they look like it (``all:``, or a group
    with ``hosts`` or ``children``), chaosrun's YAML with ``environments`` or ``defaults``
    and no scenario key. Any other name (``hosts``, ``inventory``) is read as YAML when
    it holds a YAML mapping, else as INI.
    """
    return _sniff(text, file)[0]


def _sniff(text: str, file: str) -> tuple[InventoryFormat | None, Node | None]:
    """The format, and the YAML tree when the text is YAML (parsed once)."""
    suffix = Path(file).suffix.lower()
    if suffix == ".csv":
        return InventoryFormat.CSV, None
    if suffix in (".ini", ".cfg"):
        return InventoryFormat.ANSIBLE_INI, None
    yaml_named = suffix in _YAML_SUFFIXES
    try:
        root = load_yaml(text, file)
    except ScenarioErrors:
        return (None if yaml_named else InventoryFormat.ANSIBLE_INI), None
    if not isinstance(root.value, dict) or (not root.value and not yaml_named):
        return (None if yaml_named else InventoryFormat.ANSIBLE_INI), None
    if looks_like_ansible_yaml(root):
        return InventoryFormat.ANSIBLE_YAML, root
    keys = set(root.value)
    if keys & {"environments", "defaults"} and not keys & _SCENARIO_KEYS:
        return InventoryFormat.CHAOSRUN, root
    return None, root


def parse_inventory(text: str, file: str, *, env_per: str = "host") -> tuple[Inventory | None, list[ScenarioError]]:
    """Parse an inventory of any format (:func:`inventory_format`; chaosrun's YAML when
    it is none of them); returns it (None if unusable) and every error found, sorted.

    Args:
        text: the file's text.
        file: its name, for error positions and relative key paths.
        env_per: ``"host"`` or ``"group"``: what an environment is in an Ansible
            inventory (other formats say it themselves).
    """
    if env_per not in ENV_PER:
        raise ValueError(f"env_per must be one of {ENV_PER}, got {env_per!r}")
    fmt, root = _sniff(text, file)
    fmt = fmt or InventoryFormat.CHAOSRUN
    if fmt is not InventoryFormat.CHAOSRUN and len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        message = f"file larger than {MAX_YAML_BYTES // (1024 * 1024)} MiB (the limit for an inventory)"
        return None, [ScenarioError(message, Span(file, 1, 1))]
    base_dir = str(Path(file).resolve().parent)
    if fmt is InventoryFormat.CSV:
        inventory, errors = parse_csv_inventory(text, file, base_dir)
    elif fmt is InventoryFormat.ANSIBLE_INI:
        inventory, errors = parse_ini_inventory(text, file, base_dir, env_per)
    elif root is None:
        try:
            root = load_yaml(text, file)
        except ScenarioErrors as exc:
            return None, exc.errors
        inventory, errors = _parse_chaosrun(root, file, base_dir)
    elif fmt is InventoryFormat.ANSIBLE_YAML:
        inventory, errors = parse_yaml_inventory(root, file, base_dir, env_per)
    else:
        inventory, errors = _parse_chaosrun(root, file, base_dir)
    return inventory, ScenarioErrors(errors).errors


def _parse_chaosrun(root: Node, file: str, base_dir: str) -> tuple[Inventory | None, list[ScenarioError]]:
    if not isinstance(root.value, dict):
        return None, [ScenarioError("an inventory is a mapping with 'environments'", root.span)]
    errors = _schema.schema_errors(root, _schema.validator_for("inventory.schema.json"))
    defaults_node = root.at("defaults")
    defaults = None
    defaults_given: frozenset[str] = frozenset()
    if defaults_node is not None and isinstance(defaults_node.value, dict):
        defaults = absolute_paths(target_spec("", defaults_node), base_dir)
        defaults_given = frozenset(defaults_node.value)
    envs: list[Environment] = []
    envs_node = root.at("environments")
    if envs_node is not None and isinstance(envs_node.value, dict):
        for name, env_node in envs_node.value.items():
            if not isinstance(env_node.value, dict):
                continue
            hosts: dict[str, TargetSpec] = {}
            given: dict[str, frozenset[str]] = {}
            env_vars: dict[str, Any] = {}
            for role, spec_node in env_node.value.items():
                if role == "vars":
                    if isinstance(spec_node.value, dict):
                        env_vars = spec_node.plain()
                elif isinstance(spec_node.value, dict):
                    hosts[role] = absolute_paths(target_spec(role, spec_node), base_dir)
                    given[role] = frozenset(spec_node.value)
            envs.append(Environment(name, envs_node.key_spans[name], hosts, given, env_vars))
    inventory = Inventory(file, defaults, defaults_given, tuple(envs))
    return inventory, ScenarioErrors(errors).errors


def load_inventory(path: str | Path, *, env_per: str = "host") -> Inventory:
    """Read and check an inventory file of any format (:func:`parse_inventory`).

    Raises:
        ScenarioErrors: every problem found, sorted by position.
    """
    text, name = read_source(path)
    inventory, errors = parse_inventory(text, name, env_per=env_per)
    if errors or inventory is None:
        raise ScenarioErrors(errors)
    return inventory
