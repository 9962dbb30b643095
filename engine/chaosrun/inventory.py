"""Inventory files: which hosts play the scenario's roles in each environment.

```yaml
defaults: { user: root, identity: keys/exam_ed25519, known_hosts: keys/known_hosts }
environments:
  cand-001: { web: { host: 10.0.1.11 } }
```
Relative ``identity``/``known_hosts`` paths are relative to the inventory file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from . import _schema
from ._source import ScenarioError, ScenarioErrors, Span, load_yaml
from .parse import read_source, target_spec
from .scenario import TargetSpec


@dataclass(frozen=True)
class Environment:
    """One candidate's machines, by role. Host specs may still lack fields the
    scenario's own targets supply; :func:`chaosrun.plan.build_plan` merges them."""

    name: str
    span: Span
    hosts: Mapping[str, TargetSpec]
    given: Mapping[str, frozenset[str]]  # per role: keys written in the inventory


@dataclass(frozen=True)
class Inventory:
    file: str
    defaults: TargetSpec | None
    defaults_given: frozenset[str]
    environments: tuple[Environment, ...]


def absolute(path: str | None, base_dir: str) -> str | None:
    """Expand ``~`` and make a relative path absolute from ``base_dir``."""
    if path is None:
        return None
    expanded = os.path.expanduser(path)
    return expanded if os.path.isabs(expanded) else os.path.normpath(os.path.join(base_dir, expanded))


def _absolute_paths(spec: TargetSpec, base_dir: str) -> TargetSpec:
    return replace(
        spec,
        identity=absolute(spec.identity, base_dir),
        known_hosts=absolute(spec.known_hosts, base_dir),
    )


def parse_inventory(text: str, file: str) -> tuple[Inventory | None, list[ScenarioError]]:
    """Parse an inventory; returns it (None if unusable) and every error found."""
    try:
        root = load_yaml(text, file)
    except ScenarioErrors as exc:
        return None, exc.errors
    if not isinstance(root.value, dict):
        return None, [ScenarioError("an inventory is a mapping with 'environments'", root.span)]
    errors = _schema.schema_errors(root, _schema.validator_for("inventory.schema.json"))
    base_dir = str(Path(file).resolve().parent)
    defaults_node = root.at("defaults")
    defaults = None
    defaults_given: frozenset[str] = frozenset()
    if defaults_node is not None and isinstance(defaults_node.value, dict):
        defaults = _absolute_paths(target_spec("", defaults_node), base_dir)
        defaults_given = frozenset(defaults_node.value)
    envs: list[Environment] = []
    envs_node = root.at("environments")
    if envs_node is not None and isinstance(envs_node.value, dict):
        for name, env_node in envs_node.value.items():
            if not isinstance(env_node.value, dict):
                continue
            hosts: dict[str, TargetSpec] = {}
            given: dict[str, frozenset[str]] = {}
            for role, spec_node in env_node.value.items():
                if isinstance(spec_node.value, dict):
                    hosts[role] = _absolute_paths(target_spec(role, spec_node), base_dir)
                    given[role] = frozenset(spec_node.value)
            envs.append(Environment(name, envs_node.key_spans[name], hosts, given))
    inventory = Inventory(file, defaults, defaults_given, tuple(envs))
    return inventory, ScenarioErrors(errors).errors


def load_inventory(path: str | Path) -> Inventory:
    """Read and check an inventory file.

    Raises:
        ScenarioErrors: every problem found, sorted by position.
    """
    text, name = read_source(path)
    inventory, errors = parse_inventory(text, name)
    if errors or inventory is None:
        raise ScenarioErrors(errors)
    return inventory
