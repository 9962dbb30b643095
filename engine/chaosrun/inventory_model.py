"""Parse stage, inventories' data: environments, hosts and the placing of Ansible hosts
in the scenario's roles. Every inventory format (``inventory.py`` tells them apart)
parses into these."""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ._spans import ScenarioError, Span
from .scenario import TargetSpec

#: ``--env-per``: an environment per Ansible host (the default) or per Ansible group.
ENV_PER = ("host", "group")
ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ROLE_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
ENV_NAME_RULE = "environment names are letters, digits, '_', '.' or '-'"
ROLE_NAME_RULE = "role names must be lowercase letters, digits, '_' or '-', starting with a letter"


class InventoryFormat(enum.Enum):
    CHAOSRUN = "chaosrun"
    ANSIBLE_YAML = "ansible-yaml"
    ANSIBLE_INI = "ansible-ini"
    CSV = "csv"


@dataclass(frozen=True)
class InventoryHost:
    """A host of an Ansible inventory. The roles it plays are only known with the
    scenario: ``chaosrun_role``, else the groups it is in named like a role, else the
    scenario's only role (:meth:`Inventory.placed`)."""

    name: str  # the inventory host name
    span: Span  # where it is first written
    spec: TargetSpec  # role "" until placed
    given: frozenset[str]  # the host keys its variables set
    roles: tuple[str, ...] = ()  # chaosrun_role
    groups: tuple[str, ...] = ()  # every group it is in, its groups' parents too


@dataclass(frozen=True)
class Environment:
    """One candidate's machines, by role. Host specs may still lack fields the
    scenario's own targets supply; :func:`chaosrun.plan.build_plan` merges them."""

    name: str
    span: Span
    hosts: Mapping[str, TargetSpec]
    given: Mapping[str, frozenset[str]]  # per role: keys written in the inventory
    vars: Mapping[str, Any] = field(default_factory=dict)  # env.vars
    unplaced: tuple[InventoryHost, ...] = ()  # Ansible hosts whose roles the scenario decides
    group: str | None = None  # --env-per group: the Ansible group it is made of
    # env.vars names whose hosts disagree (--env-per group), and how; reading one is an error
    ambiguous: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Inventory:
    file: str
    defaults: TargetSpec | None
    defaults_given: frozenset[str]
    environments: tuple[Environment, ...]
    format: InventoryFormat = InventoryFormat.CHAOSRUN
    env_per: str = "host"
    hosts: tuple[InventoryHost, ...] = ()  # an Ansible inventory's hosts, in file order
    warnings: tuple[ScenarioError, ...] = ()

    def placed(self, roles: Collection[str]) -> tuple[tuple[Environment, ...], list[ScenarioError]]:
        """The environments with every Ansible host placed in the roles it plays, for a
        scenario with ``roles``; and every problem doing so, at the host's position.

        With ``env_per="group"`` a group named like a role is a role's group, not an
        environment; every host must then be in exactly one environment.
        """
        if not self.hosts:
            return self.environments, []
        errors: list[ScenarioError] = []
        envs = [e for e in self.environments if e.group is None or e.group not in roles]
        if self.env_per == "group":
            errors += _one_environment_each(self.hosts, envs)
        out = []
        for env in envs:
            hosts: dict[str, TargetSpec] = {}
            given: dict[str, frozenset[str]] = {}
            played_by: dict[str, str] = {}
            for host in env.unplaced:
                found = _roles_of(host, roles)
                if isinstance(found, ScenarioError):
                    errors.append(found)
                    continue
                for role in found:
                    if role in played_by:
                        errors.append(
                            ScenarioError(
                                f"environment {env.name!r}: hosts {played_by[role]!r} and {host.name!r} "
                                f"both play role {role!r}",
                                host.span,
                                "set chaosrun_role on each host to the role it plays",
                            )
                        )
                        continue
                    played_by[role] = host.name
                    hosts[role] = replace(host.spec, role=role)
                    given[role] = host.given
            out.append(replace(env, hosts=hosts, given=given, unplaced=()))
        return tuple(out), errors


def _roles_of(host: InventoryHost, roles: Collection[str]) -> tuple[str, ...] | ScenarioError:
    if host.roles:
        return host.roles
    grouped = tuple(dict.fromkeys(g for g in host.groups if g in roles))
    if grouped:
        return grouped
    if len(roles) <= 1:
        return tuple(roles)
    return ScenarioError(
        f"host {host.name!r}: which role does it play? The scenario has {', '.join(sorted(roles))}",
        host.span,
        "set the host variable chaosrun_role, or put the host in a group named after its role",
    )


def _one_environment_each(hosts: tuple[InventoryHost, ...], envs: list[Environment]) -> list[ScenarioError]:
    errors = []
    env_of: dict[str, str] = {}
    for env in envs:
        for host in env.unplaced:
            if host.name in env_of:
                errors.append(
                    ScenarioError(
                        f"host {host.name!r} is in two environments, {env_of[host.name]!r} and {env.name!r}",
                        host.span,
                        "a host belongs to one candidate's group",
                    )
                )
            else:
                env_of[host.name] = env.name
    for host in hosts:
        if host.name not in env_of:
            errors.append(
                ScenarioError(
                    f"host {host.name!r} is in no environment",
                    host.span,
                    "with --env-per group, each host is in the group of its candidate",
                )
            )
    return errors


def absolute(path: str | None, base_dir: str) -> str | None:
    """Expand ``~`` and make a relative path absolute from ``base_dir``."""
    if path is None:
        return None
    expanded = os.path.expanduser(path)
    return expanded if os.path.isabs(expanded) else os.path.normpath(os.path.join(base_dir, expanded))


def absolute_paths(spec: TargetSpec, base_dir: str) -> TargetSpec:
    """``spec`` with its key files made absolute from ``base_dir``."""
    return replace(
        spec,
        identity=absolute(spec.identity, base_dir),
        known_hosts=absolute(spec.known_hosts, base_dir),
    )
