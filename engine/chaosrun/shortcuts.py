"""Shortcut detection: what a candidate widened or switched off beyond the fault.

Before a run's first chaos step, chaosrun deploys its internal ``guard`` module to every
machine the chaos touches (``chaos_go/modules/guard``: read-only, binary gone afterwards)
and keeps what it reports as the machine's **baseline** in the run's audit log (a
``baseline`` record): the modes, owners and ACLs of every path the chaos steps name and of
its parents, the lines of those files, the states of the units they name, the firewall
live and at boot, SELinux's mode, digests of sudoers and PAM, the listening sockets, and
the hashes of the tools probes rely on. After grading, ``verify`` asks the same questions
again (a ``guard_pass`` record) and :func:`compare` lists what differs in a way a
repair has no business causing:

====================  ==========================================================
``wider_permissions`` a mode with a bit the baseline did not have (0777, o+w)
``acl_widened``       an ACL entry the baseline did not have (``other::rwx``, a user)
``owner_changed``     another owner or group than in the baseline
``file_replaced``     a file the chaos touched that lost most of its lines: replaced
                      (a default config copied over), not repaired
``firewall_flushed``  no rule left where the baseline had some
``firewall_opened``   a base chain's drop policy turned to accept (or the chain gone)
``firewall_rule_deleted`` a rule of the baseline gone (the chaos's own are not in it)
``boot_firewall_changed`` fewer rules in the boot files, or their unit disabled
``unit_masked``       a unit masked that was not
``selinux_permissive`` enforcing before the run, not now (``setenforce 0``)
``sudoers_changed``, ``pam_changed`` a file of /etc/sudoers(.d), /etc/pam.d changed
``tool_replaced``     a program (curl, systemctl, ss...) that is another file now
``new_listener``      a socket listening that did not before the run (a fake service)
``listener_replaced`` a port held by another program than before the run
====================  ==========================================================

What the chaos itself left (a path still in the state its change record says, the fault
processes it started) is the fault, not a shortcut. The scenario's ``guards:`` add what to
look at (a tree, a unit, a tool) and a ``penalty`` in points for breaking it; a shortcut
no guard covers is listed, with no points off.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .run.model import Shortcut
from .scenario import Guard

__all__ = ["Baseline", "Faults", "compare", "load_baseline", "posture_spec"]

MODULE = "guard"
FILE_KEPT = 0.75  # a changed file the chaos touched must keep this share of its lines
UNIT_KEYS = ("service", "unit", "units")
TOOL_KEYS = ("systemctl_path", "nft_path")  # the guard runs the program its machine's steps ran
PATH_KINDS = frozenset({"wider_permissions", "acl_widened", "owner_changed", "file_replaced"})
FIREWALL_KINDS = frozenset({"firewall_flushed", "firewall_opened", "firewall_rule_deleted", "boot_firewall_changed"})
GUARD_OF_KIND = {
    "unit_masked": "unit",
    "selinux_permissive": "selinux",
    "sudoers_changed": "sudoers",
    "pam_changed": "pam",
    "tool_replaced": "tool",
    "new_listener": "ports",
    "listener_replaced": "ports",
    **dict.fromkeys(PATH_KINDS, "path"),
    **dict.fromkeys(FIREWALL_KINDS, "firewall"),
}


def _unit(name: str) -> str:
    return name if "." in name else f"{name}.service"


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                yield item


def posture_spec(params: Iterable[Mapping[str, Any]], guards: Sequence[Guard]) -> dict[str, Any]:
    """The guard module's parameters for one machine: what its chaos steps' parameters name
    (absolute paths, units) and what its guards add (trees, units, tools)."""
    paths: list[str] = []
    units: list[str] = []
    programs: dict[str, str] = {}
    for p in params:
        for key, value in p.items():
            if key in TOOL_KEYS and isinstance(value, str):
                programs.setdefault(key, value)  # the program the steps' sensors saw
                continue
            for text in _strings(value):
                if key in UNIT_KEYS and text and not text.startswith("/"):
                    units.append(_unit(text))
                elif text.startswith("/") and "\n" not in text and len(text) < 4096:
                    paths.append(posixpath.normpath(text))
    trees = [g.subject for g in guards if g.kind == "path"]
    units += [_unit(g.subject) for g in guards if g.kind == "unit"]
    tools = [g.subject for g in guards if g.kind == "tool"]
    spec = {
        "paths": sorted({*paths, *trees}),
        "trees": sorted(set(trees)),
        "lines": sorted(set(paths)),
        "units": sorted(set(units)),
        "tools": sorted(set(tools)),
    }
    return {**{k: v for k, v in spec.items() if v}, **programs}


@dataclass(frozen=True)
class Faults:
    """What the run's chaos left on one machine: the state each changed path was left in,
    and the fault processes it started. Such a state is the fault, not a shortcut."""

    states: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # path -> state_after
    touched: frozenset[str] = frozenset()  # paths the chaos changed
    pids: frozenset[int] = frozenset()


def faults_of(changes: Iterable[Mapping[str, Any]]) -> Faults:
    """Faults from a machine's change records (``restore.Machine.changes`` entries)."""
    states: dict[str, Mapping[str, Any]] = {}
    touched: set[str] = set()
    pids: set[int] = set()
    for entry in changes:
        change = entry.get("change") or {}
        detail = change.get("detail") or {}
        path = change.get("path")
        if isinstance(path, str) and path.startswith("/"):
            touched.add(posixpath.normpath(path))
            if isinstance(detail.get("state_after"), dict):
                states[posixpath.normpath(path)] = detail["state_after"]
        for key in ("pid", "written_by"):
            if isinstance(detail.get(key), int) and not isinstance(detail.get(key), bool):
                pids.add(int(detail[key]))
        if isinstance(change.get("after"), dict) and isinstance(change["after"].get("pid"), int):
            pids.add(int(change["after"]["pid"]))
    return Faults(states, frozenset(touched), frozenset(pids))


# -- comparing --------------------------------------------------------------------------


_BITS = (
    (0o4000, "u+s"),
    (0o2000, "g+s"),
    (0o1000, "+t"),
    (0o400, "u+r"),
    (0o200, "u+w"),
    (0o100, "u+x"),
    (0o040, "g+r"),
    (0o020, "g+w"),
    (0o010, "g+x"),
    (0o004, "o+r"),
    (0o002, "o+w"),
    (0o001, "o+x"),
)


def _mode(state: Mapping[str, Any]) -> int | None:
    try:
        return int(str(state.get("mode")), 8)
    except ValueError:
        return None


def _is_fault(state: Mapping[str, Any], fault: Mapping[str, Any] | None, keys: Sequence[str]) -> bool:
    return fault is not None and all(str(state.get(k)) == str(fault.get(k)) for k in keys if k in fault)


def _path_states(posture: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for tree in (posture.get("trees") or {}).values():
        if isinstance(tree, dict):
            out.update({k: v for k, v in (tree.get("entries") or {}).items() if isinstance(v, dict)})
    out.update({k: v for k, v in (posture.get("paths") or {}).items() if isinstance(v, dict)})
    return out


def _rwx(bits: int) -> str:
    return ("r" if bits & 4 else "-") + ("w" if bits & 2 else "-") + ("x" if bits & 1 else "-")


def _granting(state: Mapping[str, Any], key: str) -> set[str]:
    """The entries of a path's ACL that grant something (the mask only limits); a path
    without an extended ACL has the three its mode says."""
    acl = state.get(key)
    if not isinstance(acl, list):
        mode = _mode(state)
        if key != "acl" or mode is None:
            return set()
        acl = [f"user::{_rwx(mode >> 6)}", f"group::{_rwx(mode >> 3)}", f"other::{_rwx(mode)}"]
    return {e for e in acl if isinstance(e, str) and not e.endswith("---") and not e.startswith("mask:")}


def _paths(role: str, base: Mapping[str, Any], now: Mapping[str, Any], faults: Faults) -> list[Shortcut]:
    found = []
    before, after = _path_states(base), _path_states(now)
    for path in sorted(before.keys() & after.keys()):
        b, n = before[path], after[path]
        if not (b.get("exists", True) and n.get("exists", True)) or "symlink" in (b.get("type"), n.get("type")):
            continue
        fault = faults.states.get(path)
        old, new = _mode(b), _mode(n)
        added = new & ~old & 0o7777 if old is not None and new is not None else 0
        if added and not _is_fault(n, fault, ("mode",)):
            bits = ", ".join(name for bit, name in _BITS if added & bit)
            found.append(
                Shortcut(
                    role,
                    "wider_permissions",
                    path,
                    f"{path}: mode {n['mode']}, {b['mode']} before the run ({bits})",
                )
            )
        for key in ("acl", "default_acl"):
            wider = sorted(_granting(n, key) - _granting(b, key))
            if wider and (b.get(key) is not None or n.get(key) is not None):
                what = "default ACL" if key == "default_acl" else "ACL"
                found.append(Shortcut(role, "acl_widened", path, f"{path}: {what} grants {', '.join(wider)}"))
        if (b.get("uid"), b.get("gid")) != (n.get("uid"), n.get("gid")) and not _is_fault(n, fault, ("uid", "gid")):
            found.append(
                Shortcut(
                    role,
                    "owner_changed",
                    path,
                    f"{path}: owner {n.get('uid')}:{n.get('gid')}, {b.get('uid')}:{b.get('gid')} before the run",
                )
            )
        lines = isinstance(b.get("lines"), list) and isinstance(n.get("lines"), list)
        if path in faults.touched and lines and b.get("sha256") != n.get("sha256") and len(b["lines"]) >= 4:
            kept = sum((Counter(b["lines"]) & Counter(n["lines"])).values())
            if kept < FILE_KEPT * len(b["lines"]):
                found.append(
                    Shortcut(
                        role,
                        "file_replaced",
                        path,
                        f"{path}: {kept} of its {len(b['lines'])} lines from before the run are left: "
                        "replaced, not repaired",
                    )
                )
    return found


def _firewall(role: str, base: Mapping[str, Any], now: Mapping[str, Any]) -> list[Shortcut]:
    found = []
    b, n = (base.get("firewall") or {}).get("live") or {}, (now.get("firewall") or {}).get("live") or {}
    if (
        not b.get("error")
        and not n.get("error")
        and isinstance(b.get("rules"), int)
        and isinstance(n.get("rules"), int)
    ):
        digests = isinstance(b.get("rule_digests"), list) and isinstance(n.get("rule_digests"), list)
        # which of the baseline's rules are gone (the chaos's own are not in it); else how many fewer
        gone = (
            sum((Counter(b["rule_digests"]) - Counter(n["rule_digests"])).values())
            if digests
            else max(0, b["rules"] - n["rules"])
        )
        if b["rules"] > 0 and n["rules"] == 0:
            found.append(
                Shortcut(role, "firewall_flushed", "live", f"no firewall rule left ({b['rules']} before the run)")
            )
        elif gone:
            found.append(
                Shortcut(
                    role,
                    "firewall_rule_deleted",
                    "live",
                    f"{gone} firewall rule(s) from before the run deleted ({n['rules']} now, {b['rules']} before)",
                )
            )
        chains = {(c.get("family"), c.get("table"), c.get("chain")): c for c in n.get("chains") or []}
        for c in b.get("chains") or []:
            if str(c.get("policy")) not in ("drop", "reject", "DROP", "REJECT"):
                continue
            name = f"{c.get('family')} {c.get('table')} {c.get('chain')}"
            now_chain = chains.get((c.get("family"), c.get("table"), c.get("chain")))
            if now_chain is None:
                found.append(Shortcut(role, "firewall_opened", name, f"chain {name} (policy {c['policy']}) is gone"))
            elif str(now_chain.get("policy")).lower() not in ("drop", "reject"):
                found.append(
                    Shortcut(
                        role,
                        "firewall_opened",
                        name,
                        f"chain {name}: policy {now_chain.get('policy')}, {c['policy']} before the run",
                    )
                )
    bb, nb = (base.get("firewall") or {}).get("boot") or {}, (now.get("firewall") or {}).get("boot") or {}
    for path, b_file in sorted((bb.get("files") or {}).items()):
        n_file = (nb.get("files") or {}).get(path) or {}
        if not isinstance(b_file, dict) or not b_file.get("exists") or not b_file.get("rules"):
            continue
        if not n_file.get("exists"):
            found.append(
                Shortcut(role, "boot_firewall_changed", path, f"{path} is gone ({b_file['rules']} rules before)")
            )
        elif isinstance(n_file.get("rules"), int) and n_file["rules"] < b_file["rules"]:
            found.append(
                Shortcut(
                    role,
                    "boot_firewall_changed",
                    path,
                    f"{path}: {n_file['rules']} rules, {b_file['rules']} before the run",
                )
            )
    for unit, state in sorted((bb.get("units") or {}).items()):
        now_state = (nb.get("units") or {}).get(unit)
        if state == "enabled" and now_state in ("disabled", "masked"):
            found.append(
                Shortcut(role, "boot_firewall_changed", unit, f"{unit} is {now_state}, enabled before the run")
            )
    return found


def _files(role: str, kind: str, what: str, base: Any, now: Any, touched: frozenset[str]) -> list[Shortcut]:
    b = (base or {}).get("files") if isinstance(base, dict) else None
    n = (now or {}).get("files") if isinstance(now, dict) else None
    if not isinstance(b, dict) or not isinstance(n, dict):
        return []
    said = []
    for path in sorted(b.keys() | n.keys()):
        if path in touched or b.get(path) == n.get(path):
            continue
        said.append(f"{path} {'added' if path not in b else 'removed' if path not in n else 'changed'}")
    if not said:
        return []
    return [Shortcut(role, kind, what, f"{what}: {', '.join(said[:10])}" + (" ..." if len(said) > 10 else ""))]


def _listeners(role: str, base: Mapping[str, Any], now: Mapping[str, Any], faults: Faults) -> list[Shortcut]:
    def key(entry: Mapping[str, Any]) -> tuple[str, int]:
        return (str(entry.get("proto")), int(entry.get("port") or 0))

    before: dict[tuple[str, int], Mapping[str, Any]] = {}
    for entry in base.get("listeners") or []:
        before.setdefault(key(entry), entry)
    found, seen = [], set()
    for entry in now.get("listeners") or []:
        k = key(entry)
        if k in seen or entry.get("pid") in faults.pids:
            continue
        seen.add(k)
        who = f"{entry.get('exe') or '?'} (pid {entry.get('pid')})"
        where = f"{entry.get('proto')} {entry.get('address')}:{entry.get('port')}"
        if k not in before:
            found.append(Shortcut(role, "new_listener", where, f"{where} held by {who}, not listening before the run"))
        elif before[k].get("exe") and entry.get("exe") and before[k]["exe"] != entry["exe"]:
            found.append(
                Shortcut(
                    role, "listener_replaced", where, f"{where} held by {who}, by {before[k]['exe']} before the run"
                )
            )
    return found


def compare(
    role: str,
    base: Mapping[str, Any],
    now: Mapping[str, Any],
    guards: Sequence[Guard] = (),
    faults: Faults | None = None,
) -> list[Shortcut]:
    """The shortcuts on one machine: its posture ``now`` against its ``base``line, each
    matched with the guard of ``guards`` (this role's) it breaks, the guard's penalty on
    the first shortcut that breaks it."""
    faults = faults or Faults()
    found = [*_paths(role, base, now, faults), *_firewall(role, base, now)]
    b_units, n_units = base.get("units") or {}, now.get("units") or {}
    for unit in sorted(b_units.keys() & n_units.keys()):
        was, state = b_units[unit], n_units[unit]
        if not isinstance(was, dict) or not isinstance(state, dict) or was.get("error"):
            continue
        if state.get("file_state") == "masked" and was.get("file_state") != "masked":
            found.append(Shortcut(role, "unit_masked", unit, f"{unit} is masked ({was.get('file_state')} before)"))
    mode_was = (base.get("selinux") or {}).get("mode")
    mode_now = (now.get("selinux") or {}).get("mode")
    if mode_was == "enforcing" and mode_now in ("permissive", "disabled"):
        found.append(
            Shortcut(role, "selinux_permissive", "selinux", f"SELinux is {mode_now}, enforcing before the run")
        )
    found += _files(role, "sudoers_changed", "sudoers", base.get("sudoers"), now.get("sudoers"), faults.touched)
    found += _files(role, "pam_changed", "pam", base.get("pam"), now.get("pam"), faults.touched)
    b_tools, n_tools = base.get("tools") or {}, now.get("tools") or {}
    for tool in sorted(b_tools.keys() & n_tools.keys()):
        was, state = b_tools[tool], n_tools[tool]
        if not isinstance(was, dict) or not was.get("sha256") or not isinstance(state, dict):
            continue
        if state.get("sha256") != was.get("sha256") or state.get("path") != was.get("path"):
            now_is = state.get("path") or state.get("error") or "?"
            found.append(
                Shortcut(role, "tool_replaced", tool, f"{tool}: {now_is} is not the {was.get('path')} of before")
            )
    found += _listeners(role, base, now, faults)
    return _charge(found, guards)


def _covers(guard: Guard, s: Shortcut) -> bool:
    if GUARD_OF_KIND.get(s.kind) != guard.kind:
        return False
    if guard.kind == "path":
        if s.kind != "file_replaced" and not guard.widening:
            return False
        root = posixpath.normpath(guard.subject)
        inside = s.subject == root or s.subject.startswith(root.rstrip("/") + "/")
        above = root == s.subject or root.startswith(s.subject.rstrip("/") + "/")  # a parent of the guarded path
        return inside or above
    if guard.kind == "unit":
        return s.subject == _unit(guard.subject)
    if guard.kind == "tool":
        return s.subject == guard.subject
    return True


def _charge(found: list[Shortcut], guards: Sequence[Guard]) -> list[Shortcut]:
    charged: set[int] = set()
    out = []
    for s in found:
        guard = next((g for g in guards if _covers(g, s)), None)
        if guard is None:
            out.append(s)
            continue
        penalty = guard.penalty if id(guard) not in charged else 0.0
        charged.add(id(guard))
        out.append(Shortcut(s.role, s.kind, s.subject, s.detail, guard.label, penalty))
    return out


# -- the baseline of a past run -------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """The baselines a run took, per (environment, role): the guard module's parameters and
    what it reported, and what the run's chaos left there."""

    run_id: str
    postures: Mapping[tuple[str, str], Mapping[str, Any]]  # (env, role) -> {"spec", "posture"}
    faults: Mapping[tuple[str, str], Faults]


def load_baseline(path: Path) -> Baseline:
    """The baselines of the run whose audit log is ``path`` (and of the runs it resumes: an
    environment's first baseline counts).

    Raises:
        LogError: the log (or one it resumes) cannot be trusted.
    """
    from .restore import chain, read_run

    postures: dict[tuple[str, str], Mapping[str, Any]] = {}
    for _, records, _ in chain(path):
        for r in records:
            if r.get("event") == "baseline" and isinstance(r.get("posture"), dict):
                postures.setdefault((str(r.get("env")), str(r.get("role"))), r)
    past = read_run(path)
    faults = {key: faults_of(m.changes) for key, m in past.machines.items()}
    return Baseline(past.run_id, postures, faults)
