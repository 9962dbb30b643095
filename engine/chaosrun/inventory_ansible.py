"""Parse stage for Ansible inventories, read without Ansible: the YAML format here, the
INI format in ``inventory_ini.py``, both into :class:`Builder`, which merges them.

The subset an exam room needs, read strictly (every error at its file:line:col):
groups with ``hosts``, ``children`` and ``vars``; host ranges (``web[01:10].example.com``,
``db-[a:c]``, ``[0:20:5]``); ``host:PORT``; variables at group and host level, merged
as Ansible merges them (``all`` first, a parent group before its children, groups of
one depth by name, the host's own last).

Connection variables make the host's spec: ``ansible_host`` (else the host's name),
``ansible_port``, ``ansible_user``, ``ansible_ssh_private_key_file`` (and their older
``ansible_ssh_*`` names), ``ansible_host_key_checking: false`` (insecure). chaosrun's own
are ``chaosrun_role`` (the role or roles the host plays), ``chaosrun_known_hosts``,
``chaosrun_insecure`` and ``chaosrun_tmp_dir``. Every other variable is the environment's,
read as ``env.vars.NAME``.

SSH options (``ansible_ssh_common_args`` and the like), passwords and connections
other than SSH are errors: chaosrun would connect otherwise than the inventory says.
Any other ``ansible_*`` variable is ignored, with one warning per name.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ._spans import Node, ScenarioError, Span
from .inventory_model import (
    ENV_NAME,
    ENV_NAME_RULE,
    ROLE_NAME,
    ROLE_NAME_RULE,
    Environment,
    Inventory,
    InventoryFormat,
    InventoryHost,
    absolute,
)
from .scenario import TargetSpec

MAX_HOSTS = 100_000  # after ranges are expanded: far above any exam, far below what hurts
SPECIAL_GROUPS = ("all", "ungrouped")
_GROUP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GROUP_KEYS = ("hosts", "children", "vars")

# variable -> the host key it sets
_HOST_VARS = {
    "ansible_host": "host",
    "ansible_ssh_host": "host",
    "ansible_port": "port",
    "ansible_ssh_port": "port",
    "ansible_user": "user",
    "ansible_ssh_user": "user",
    "ansible_ssh_private_key_file": "identity",
    "ansible_private_key_file": "identity",
    "ansible_host_key_checking": "insecure",  # negated
    "ansible_ssh_host_key_checking": "insecure",  # negated
    "chaosrun_known_hosts": "known_hosts",
    "chaosrun_insecure": "insecure",
    "chaosrun_tmp_dir": "tmp_dir",
}
_NEGATED = frozenset({"ansible_host_key_checking", "ansible_ssh_host_key_checking"})
_CHAOSRUN_VARS = ("chaosrun_role", "chaosrun_known_hosts", "chaosrun_insecure", "chaosrun_tmp_dir")
_NO_SSH_OPTIONS = (
    "chaosrun passes no options to ssh: check host keys with chaosrun_known_hosts, "
    "or chaosrun_insecure=true in a lab; reach the host directly"
)
_REFUSED = {
    "ansible_ssh_common_args": _NO_SSH_OPTIONS,
    "ansible_ssh_extra_args": _NO_SSH_OPTIONS,
    "ansible_ssh_args": _NO_SSH_OPTIONS,
    "ansible_sftp_extra_args": _NO_SSH_OPTIONS,
    "ansible_scp_extra_args": _NO_SSH_OPTIONS,
    "ansible_password": "chaosrun logs in with a key: set ansible_ssh_private_key_file",
    "ansible_ssh_pass": "chaosrun logs in with a key: set ansible_ssh_private_key_file",
    "ansible_ssh_password": "chaosrun logs in with a key: set ansible_ssh_private_key_file",
}
_SSH_CONNECTIONS = ("ssh", "smart", "paramiko")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


@dataclass
class Var:
    value: Any
    span: Span  # of the value


@dataclass
class _Group:
    name: str
    span: Span
    hosts: list[str] = field(default_factory=list)  # direct members
    children: dict[str, Span] = field(default_factory=dict)
    vars: dict[str, Var] = field(default_factory=dict)


@dataclass
class _Host:
    name: str
    span: Span
    vars: dict[str, Var] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)  # the groups that list it


class _RangeError(Exception):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


def expand_host_pattern(pattern: str) -> list[str]:
    """The host names a pattern with ranges stands for: ``web[01:03]`` is web01, web02,
    web03 (a leading zero pads to the width of the start), ``[a:c]`` is a, b, c, and
    ``[0:20:10]`` counts in tens.

    Raises:
        _RangeError: a malformed range, with its offset in ``pattern``.
    """
    return _expand(pattern, 0, [0])


def _expand(pattern: str, base: int, count: list[int]) -> list[str]:
    start = pattern.find("[")
    close = pattern.find("]")
    if start < 0:
        if close >= 0:
            raise _RangeError("a ']' without its '[' in a host name", base + close)
        return [pattern]
    end = pattern.find("]", start)
    if end < 0 or (0 <= close < start):
        raise _RangeError("a '[' without its ']' in a host name", base + start)
    head, body, tail = pattern[:start], pattern[start + 1 : end], pattern[end + 1 :]
    at = base + start
    parts = body.split(":")
    if len(parts) not in (2, 3):
        raise _RangeError("a host range is [START:END] or [START:END:STEP], e.g. web[01:10]", at)
    first, last = parts[0] or "0", parts[1]
    step_text = parts[2] if len(parts) == 3 else "1"
    if not step_text.isdigit() or int(step_text) < 1:
        raise _RangeError(f"the step of a host range is a whole number from 1, got {step_text!r}", at)
    step = int(step_text)
    values: list[str]
    if first.isdigit() and last.isdigit():
        width = len(first) if first.startswith("0") and len(first) > 1 else 0
        if width and len(last) != width:
            raise _RangeError(f"a zero-padded host range has ends of equal width: [{first}:{last}]", at)
        lo, hi = int(first), int(last)
        if lo > hi:
            raise _RangeError(f"a host range goes up: [{first}:{last}] ends below its start", at)
        size = (hi - lo) // step + 1
        _count(count, size, at)
        values = [str(i).zfill(width) for i in range(lo, hi + 1, step)]
    elif len(first) == len(last) == 1 and first.isalpha() and last.isalpha() and first.isascii() and last.isascii():
        if first > last:
            raise _RangeError(f"a host range goes up: [{first}:{last}] ends below its start", at)
        values = [chr(c) for c in range(ord(first), ord(last) + 1, step)]
        _count(count, len(values), at)
    else:
        raise _RangeError(f"a host range is numbers ([01:10]) or single letters ([a:f]), got [{body}]", at)
    tails = _expand(tail, base + end + 1, count)
    return [head + v + t for v in values for t in tails]


def _count(count: list[int], size: int, at: int) -> None:
    count[0] = max(count[0], 1) * size
    if count[0] > MAX_HOSTS:
        raise _RangeError(f"a host range of more than {MAX_HOSTS} hosts", at)


def split_port(pattern: str) -> tuple[str, str | None]:
    """``name:PORT`` into (name, PORT text); a colon inside a range is the range's."""
    depth = 0
    colons = []
    for i, c in enumerate(pattern):
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        elif c == ":" and depth == 0:
            colons.append(i)
    if not colons:
        return pattern, None
    if len(colons) > 1:
        raise _RangeError("an IPv6 address is no inventory host name: name the host and set ansible_host", colons[1])
    return pattern[: colons[0]], pattern[colons[0] + 1 :]


class Builder:
    """Groups and hosts as the file defines them; ``finish`` makes the Inventory."""

    def __init__(self, file: str, base_dir: str, fmt: InventoryFormat) -> None:
        self.file = file
        self.base_dir = base_dir
        self.format = fmt
        origin = Span(file, 1, 1)
        self.groups: dict[str, _Group] = {name: _Group(name, origin) for name in SPECIAL_GROUPS}
        self.hosts: dict[str, _Host] = {}
        self.errors: list[ScenarioError] = []
        self.warnings: list[ScenarioError] = []
        self._warned: set[str] = set()

    def error(self, message: str, span: Span, hint: str | None = None) -> None:
        self.errors.append(ScenarioError(message, span, hint))

    def group(self, name: str, span: Span) -> _Group:
        found = self.groups.get(name)
        if found is None:
            found = self.groups[name] = _Group(name, span)
        return found

    def group_name_ok(self, name: str, span: Span) -> bool:
        if _GROUP_NAME.match(name):
            return True
        self.error(f"group names are letters, digits, '_', '.' or '-': {name!r}", span)
        return False

    def add_hosts(self, group: str, pattern: str, span: Span, host_vars: dict[str, Var]) -> None:
        """The hosts ``pattern`` names (ranges, ``:PORT``), in ``group``, with ``host_vars``."""
        try:
            name, port = split_port(pattern)
            names = expand_host_pattern(name)
        except _RangeError as exc:
            self.error(exc.message, Span(span.file, span.line, span.col + exc.offset))
            return
        if port is not None:
            at = Span(span.file, span.line, span.col + len(name) + 1)
            if "ansible_port" in host_vars:
                self.error("a port twice: after the host name and as ansible_port", at)
            host_vars = {**host_vars, "ansible_port": Var(port, at)}
        members = self.groups[group].hosts
        for host_name in names:
            if not host_name or any(c.isspace() for c in host_name):
                self.error(f"not a host name: {host_name!r}", span)
                continue
            host = self.hosts.get(host_name)
            if host is None:
                if len(self.hosts) >= MAX_HOSTS:
                    self.error(f"more than {MAX_HOSTS} hosts in one inventory", span)
                    return
                host = self.hosts[host_name] = _Host(host_name, span)
            host.vars.update(host_vars)
            if group not in host.groups:
                host.groups.append(group)
                members.append(host_name)

    # -- finishing -------------------------------------------------------------------

    def finish(self, env_per: str) -> tuple[Inventory | None, list[ScenarioError]]:
        parents = self._parents()
        if parents is None:
            return None, self.errors
        depth = _depths(parents)
        checked: dict[int, str] = {}
        for name, var in self._all_vars():
            if id(var) not in checked:  # a range's hosts share their line's variables
                checked[id(var)] = self._check(name, var)
        placed: list[InventoryHost] = []
        env_vars: dict[str, dict[str, Var]] = {}
        for host in self.hosts.values():
            groups = self._groups_of(host, parents)
            order = sorted(groups, key=lambda g: (depth.get(g, 0), g))
            merged: dict[str, Var] = {}
            for g in order:
                merged.update(self.groups[g].vars)
            merged.update(host.vars)
            placed.append(self._host(host, merged, checked, tuple(g for g in order if g not in SPECIAL_GROUPS)))
            env_vars[host.name] = {k: v for k, v in merged.items() if checked[id(v)] == "var"}
        if not self.hosts and not self.errors:
            self.error("no hosts in this inventory", Span(self.file, 1, 1))
        envs = self._per_host(placed, env_vars) if env_per == "host" else self._per_group(placed, env_vars)
        if env_per == "group" and self.hosts and not envs:
            self.error(
                "no group has hosts (with --env-per group each group with hosts is an environment)", placed[0].span
            )
        inventory = Inventory(
            self.file, None, frozenset(), tuple(envs), self.format, env_per, tuple(placed), tuple(self.warnings)
        )
        return inventory, self.errors

    def _parents(self) -> dict[str, set[str]] | None:
        """Each group's parent groups (``all`` above the top ones); None on a cycle."""
        parents: dict[str, set[str]] = {name: set() for name in self.groups}
        for group in self.groups.values():
            for child, span in group.children.items():
                if child == "all":
                    self.error("'all' is every group's parent; it cannot be a child", span)
                    continue
                parents[child].add(group.name)
        for name, above in parents.items():
            if name != "all" and not above:
                above.add("all")
        for name in self.groups:
            cycle = _cycle_from(name, parents)
            if cycle:
                first = self.groups[cycle[1]].children[cycle[0]]
                self.error(f"groups are children of each other: {' -> '.join(reversed(cycle))}", first)
                return None
        return parents

    def _groups_of(self, host: _Host, parents: dict[str, set[str]]) -> set[str]:
        direct = set(host.groups)
        if not direct - {"all"}:
            direct.add("ungrouped")
        found: set[str] = set()
        stack = list(direct)
        while stack:
            g = stack.pop()
            if g not in found:
                found.add(g)
                stack.extend(parents.get(g, ()))
        return found

    def _all_vars(self) -> Iterator[tuple[str, Var]]:
        for group in self.groups.values():
            yield from group.vars.items()
        for host in self.hosts.values():
            yield from host.vars.items()

    def _check(self, name: str, var: Var) -> str:
        """What a variable is: "host" (a host key, converted), "role", "var" (env.vars),
        "ignored" or "bad" (reported here, once per place it is written)."""
        if name in _HOST_VARS:
            try:
                var.value = _convert(name, var.value)
            except ValueError as exc:
                self.error(f"{name}: {exc}", var.span)
                return "bad"
            return "host"
        if name == "chaosrun_role":
            roles = _roles(var.value)
            bad = [r for r in roles if not ROLE_NAME.match(r)]
            if not roles or bad:
                shown = bad[0] if bad else var.value
                self.error(f"chaosrun_role: {ROLE_NAME_RULE}, got {shown!r}", var.span)
                return "bad"
            var.value = roles
            return "role"
        if name in _REFUSED:
            if var.value in (None, ""):
                return "ignored"
            self.error(f"{name} is not supported", var.span, _REFUSED[name])
            return "bad"
        if name == "ansible_connection":
            if var.value not in _SSH_CONNECTIONS:
                self.error(f"ansible_connection: chaosrun connects over ssh, not {var.value!r}", var.span)
                return "bad"
            return "ignored"
        if name.startswith("chaosrun_"):
            close = difflib.get_close_matches(name, _CHAOSRUN_VARS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"chaosrun's are {', '.join(_CHAOSRUN_VARS)}"
            self.error(f"unknown variable {name!r}", var.span, hint)
            return "bad"
        if name.startswith("ansible_"):
            if name not in self._warned:
                self._warned.add(name)
                self.warnings.append(ScenarioError(f"warning: {name} means nothing to chaosrun (ignored)", var.span))
            return "ignored"
        return "var"

    def _host(
        self, host: _Host, merged: dict[str, Var], checked: dict[int, str], groups: tuple[str, ...]
    ) -> InventoryHost:
        keys: dict[str, Any] = {"host": host.name}
        roles: tuple[str, ...] = ()
        for name, var in merged.items():
            kind = checked[id(var)]
            if kind == "host":
                keys[_HOST_VARS[name]] = var.value
            elif kind == "role":
                roles = var.value
        spec = TargetSpec(
            role="",
            host=keys["host"],
            span=host.span,
            port=keys.get("port", 22),
            user=keys.get("user", "root"),
            identity=absolute(keys.get("identity"), self.base_dir),
            known_hosts=absolute(keys.get("known_hosts"), self.base_dir),
            insecure=keys.get("insecure", False),
            tmp_dir=keys.get("tmp_dir", "/tmp"),
        )
        return InventoryHost(host.name, host.span, spec, frozenset(keys), roles, groups)

    def _per_host(self, hosts: list[InventoryHost], env_vars: dict[str, dict[str, Var]]) -> list[Environment]:
        envs = []
        for host in hosts:
            if not ENV_NAME.match(host.name):
                self.error(
                    f"host {host.name!r} cannot name an environment ({ENV_NAME_RULE})",
                    host.span,
                    "use --env-per group, or rename the host and set ansible_host",
                )
                continue
            values = {k: v.value for k, v in env_vars[host.name].items()}
            envs.append(Environment(host.name, host.span, {}, {}, values, (host,)))
        return envs

    def _per_group(self, hosts: list[InventoryHost], env_vars: dict[str, dict[str, Var]]) -> list[Environment]:
        envs = []
        in_group: dict[str, list[InventoryHost]] = {}
        for host in hosts:
            for g in host.groups:
                in_group.setdefault(g, []).append(host)
        for group in self.groups.values():
            if group.name in SPECIAL_GROUPS or not group.hosts:
                continue
            if not ENV_NAME.match(group.name):
                self.error(f"group {group.name!r} cannot name an environment ({ENV_NAME_RULE})", group.span)
                continue
            members = tuple(in_group.get(group.name, ()))
            values: dict[str, Any] = {}
            source: dict[str, tuple[str, Var]] = {}
            ambiguous: dict[str, str] = {}
            for host in members:
                for name, var in env_vars[host.name].items():
                    if name in ambiguous:
                        continue
                    if name not in source:
                        source[name] = (host.name, var)
                        values[name] = var.value
                    elif var.value != values[name]:
                        other, first = source[name]
                        ambiguous[name] = (
                            f"host {other!r} has {first.value!r} ({first.span}), "
                            f"host {host.name!r} has {var.value!r} ({var.span})"
                        )
                        del values[name]
            envs.append(Environment(group.name, group.span, {}, {}, values, members, group.name, ambiguous))
        return envs


def _cycle_from(start: str, parents: dict[str, set[str]]) -> list[str] | None:
    """A path child -> parent -> ... back to ``start``, if there is one."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for parent in sorted(parents.get(node, ())):
            if parent == start:
                return [*path, start]
            if parent not in seen:
                seen.add(parent)
                stack.append((parent, [*path, parent]))
    return None


def _depths(parents: dict[str, set[str]]) -> dict[str, int]:
    """``all`` is 0; a group is one deeper than its deepest parent (Ansible's order)."""
    depth: dict[str, int] = {"all": 0}

    def of(name: str) -> int:
        stack = [name]
        while stack:
            node = stack[-1]
            pending = [p for p in parents.get(node, ()) if p not in depth]
            if pending:
                stack.extend(pending)
                continue
            depth[node] = 1 + max((depth[p] for p in parents.get(node, ())), default=-1)
            stack.pop()
        return depth[name]

    for name in parents:
        if name not in depth:
            of(name)
    return depth


def _convert(name: str, value: Any) -> Any:
    key = _HOST_VARS[name]
    if key == "port":
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
            raise ValueError(f"a port is a number from 1 to 65535, got {value!r}")
        return value
    if key == "insecure":
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            value = value.strip().lower() in _TRUE
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return not value if name in _NEGATED else value
    if isinstance(value, int | float) and not isinstance(value, bool) and key == "host":
        value = str(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    if key == "tmp_dir" and not value.startswith("/"):
        raise ValueError(f"tmp_dir must be an absolute path, got {value!r}")
    return value


def _roles(value: Any) -> tuple[str, ...]:
    """``chaosrun_role``: one role, a comma list, or a list."""
    items = value if isinstance(value, list) else str(value).split(",") if isinstance(value, str) else [value]
    return tuple(dict.fromkeys(str(i).strip() for i in items if str(i).strip()))


def parse_yaml_inventory(
    root: Node, file: str, base_dir: str, env_per: str
) -> tuple[Inventory | None, list[ScenarioError]]:
    """An Ansible YAML inventory: groups (``all:`` and others) mapping to ``hosts``
    (host name -> its variables), ``children`` (groups, nested) and ``vars``."""
    b = Builder(file, base_dir, InventoryFormat.ANSIBLE_YAML)
    for name, node in root.value.items():
        _yaml_group(b, name, root.key_spans[name], node, None)
    return b.finish(env_per)


def _yaml_vars(b: Builder, node: Node | None, where: str) -> dict[str, Var]:
    if node is None or node.value is None:
        return {}
    if not isinstance(node.value, dict):
        b.error(f"{where}: expected a mapping of variables, got {_kind(node.value)}", node.span)
        return {}
    out = {}
    for key, value in node.value.items():
        if not VAR_NAME.match(key):
            b.error(f"not a variable name: {key!r}", node.key_spans[key])
            continue
        out[key] = Var(value.plain(), value.span)
    return out


def _yaml_group(b: Builder, name: str, span: Span, node: Node, parent: str | None) -> None:
    if not b.group_name_ok(name, span):
        return
    group = b.group(name, span)
    if parent is not None:
        b.groups[parent].children.setdefault(name, span)
    if node.value is None:
        return
    if not isinstance(node.value, dict):
        b.error(f"group {name!r}: expected a mapping with hosts, children or vars, got {_kind(node.value)}", node.span)
        return
    for key in node.value:
        if key not in _GROUP_KEYS:
            close = difflib.get_close_matches(key, _GROUP_KEYS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else None
            b.error(
                f"group {name!r}: unknown key {key!r} (a group has hosts, children, vars)", node.key_spans[key], hint
            )
    group.vars.update(_yaml_vars(b, node.at("vars"), f"group {name!r} vars"))
    hosts = node.at("hosts")
    if hosts is not None and hosts.value is not None:
        if not isinstance(hosts.value, dict):
            b.error(
                f"group {name!r} hosts: expected a mapping of host names, got {_kind(hosts.value)}",
                hosts.span,
                "write each host as a key, e.g. 'web1.example.com:' on its own line",
            )
        else:
            for pattern, host_node in hosts.value.items():
                host_vars = _yaml_vars(b, host_node, f"host {pattern!r}")
                b.add_hosts(name, pattern, hosts.key_spans[pattern], host_vars)
    children = node.at("children")
    if children is not None and children.value is not None:
        if not isinstance(children.value, dict):
            b.error(
                f"group {name!r} children: expected a mapping of groups, got {_kind(children.value)}", children.span
            )
        else:
            for child, child_node in children.value.items():
                _yaml_group(b, child, children.key_spans[child], child_node, name)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {value!r}"
