"""What the guard pass calls a shortcut: a posture after grading against its baseline.

Postures here are what the ``guard`` module reports (its result shape); the real module
against real machines is in ``tests/e2e/test_shortcuts.py`` and the lab tier tests."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from chaosrun._spans import Span
from chaosrun.scenario import Guard
from chaosrun.shortcuts import Faults, compare, faults_of, posture_spec

SPAN = Span("exam.yml", 1, 1)


def _file(mode: str, **more: Any) -> dict[str, Any]:
    return {"exists": True, "type": "file", "mode": mode, "uid": 0, "gid": 0, "acl": None, **more}


BASE: dict[str, Any] = {
    "paths": {
        "/": {"exists": True, "type": "dir", "mode": "0755", "uid": 0, "gid": 0, "acl": None},
        "/etc": {"exists": True, "type": "dir", "mode": "0755", "uid": 0, "gid": 0, "acl": None},
        "/etc/app.conf": _file("0640", sha256="a" * 64, lines=["l1", "l2", "l3", "l4", "l5", "l6", "l7", "l8"]),
    },
    "trees": {"/etc": {"entries": {"/etc/shadow": _file("0640")}, "truncated": False}},
    "units": {"nginx.service": {"load": "loaded", "active": "active", "file_state": "enabled"}},
    "firewall": {
        "live": {
            "tool": "nft",
            "rules": 3,
            "chains": [{"family": "inet", "table": "filter", "chain": "input", "hook": "input", "policy": "drop"}],
            "error": "",
        },
        "boot": {
            "files": {"/etc/nftables.conf": {"exists": True, "sha256": "b" * 64, "rules": 3}},
            "units": {"nftables.service": "enabled"},
        },
    },
    "selinux": {"mode": "enforcing"},
    "sudoers": {"files": {"/etc/sudoers": "c" * 64}},
    "pam": {"files": {"/etc/pam.d/sshd": "d" * 64}},
    "listeners": [{"proto": "tcp", "address": "0.0.0.0", "port": 80, "pid": 10, "exe": "/usr/sbin/nginx"}],
    "tools": {"curl": {"path": "/usr/bin/curl", "sha256": "e" * 64}},
}


def kinds(now: dict[str, Any], **kw: Any) -> list[str]:
    return [s.kind for s in compare("web", BASE, now, **kw)]


def test_a_machine_as_before_has_no_shortcut() -> None:
    assert compare("web", BASE, copy.deepcopy(BASE)) == []


def test_each_way_of_widening_or_switching_off_is_a_shortcut() -> None:
    now = copy.deepcopy(BASE)
    now["paths"]["/etc/app.conf"]["mode"] = "0777"
    now["trees"]["/etc"]["entries"]["/etc/shadow"]["acl"] = ["user::rw-", "group::r--", "other::rw-", "mask::rw-"]
    now["paths"]["/etc"]["uid"] = 1000
    now["firewall"]["live"]["chains"][0]["policy"] = "accept"
    now["firewall"]["live"]["rules"] = 0
    now["firewall"]["boot"]["files"]["/etc/nftables.conf"]["rules"] = 1
    now["firewall"]["boot"]["units"]["nftables.service"] = "disabled"
    now["units"]["nginx.service"]["file_state"] = "masked"
    now["selinux"]["mode"] = "permissive"
    now["sudoers"]["files"]["/etc/sudoers.d/me"] = "f" * 64
    now["pam"]["files"]["/etc/pam.d/sshd"] = "0" * 64
    now["tools"]["curl"] = {"path": "/usr/local/bin/curl", "sha256": "1" * 64}
    now["listeners"] = [
        {"proto": "tcp", "address": "0.0.0.0", "port": 80, "pid": 11, "exe": "/usr/bin/python3.11"},
        {"proto": "tcp", "address": "0.0.0.0", "port": 8080, "pid": 12, "exe": "/usr/bin/nc.openbsd"},
    ]
    found = {s.kind: s for s in compare("web", BASE, now)}
    assert sorted(found) == [
        "acl_widened",
        "boot_firewall_changed",
        "firewall_flushed",
        "firewall_opened",
        "listener_replaced",
        "new_listener",
        "owner_changed",
        "pam_changed",
        "selinux_permissive",
        "sudoers_changed",
        "tool_replaced",
        "unit_masked",
        "wider_permissions",
    ]
    assert (
        found["wider_permissions"].detail
        == "/etc/app.conf: mode 0777, 0640 before the run (u+x, g+w, g+x, o+r, o+w, o+x)"
    )
    assert found["acl_widened"].detail == "/etc/shadow: ACL grants other::rw-"
    assert found["firewall_opened"].detail == "chain inet filter input: policy accept, drop before the run"
    assert found["sudoers_changed"].detail == "sudoers: /etc/sudoers.d/me added"
    assert "8080 held by /usr/bin/nc.openbsd (pid 12), not listening before the run" in found["new_listener"].detail
    assert all(s.guard is None and s.penalty == 0 for s in found.values())


def test_a_rule_deleted_beyond_the_chaos_is_counted_against_the_baseline() -> None:
    now = copy.deepcopy(BASE)
    now["firewall"]["live"]["rules"] = 2  # without digests: one fewer than before
    (cut,) = compare("web", BASE, now)
    assert cut.kind == "firewall_rule_deleted" and cut.detail.startswith(
        "1 firewall rule(s) from before the run deleted"
    )
    # with digests: the chaos's rule added, one of the baseline's deleted: as many rules, one gone
    base = copy.deepcopy(BASE)
    base["firewall"]["live"].update(rules=3, rule_digests=["ssh", "web", "dns"])
    now = copy.deepcopy(base)
    now["firewall"]["live"].update(rules=3, rule_digests=["ssh", "dns", "chaos-drop-80"])
    (cut,) = compare("web", base, now)
    assert cut.kind == "firewall_rule_deleted" and "1 firewall rule(s)" in cut.detail
    now["firewall"]["live"].update(rules=4, rule_digests=["ssh", "web", "dns", "chaos-drop-80"])
    assert compare("web", base, now) == [], "the chaos's own rule is the fault"


def test_a_file_the_chaos_touched_must_be_repaired_not_replaced() -> None:
    touched = Faults(touched=frozenset({"/etc/app.conf"}))
    repaired = copy.deepcopy(BASE)
    repaired["paths"]["/etc/app.conf"].update(
        sha256="9" * 64, lines=["l1", "l2", "fixed", "l4", "l5", "l6", "l7", "l8"]
    )
    assert compare("web", BASE, repaired, faults=touched) == []
    replaced = copy.deepcopy(BASE)
    replaced["paths"]["/etc/app.conf"].update(sha256="8" * 64, lines=["d1", "d2", "l1", "d4"])
    (cut,) = compare("web", BASE, replaced, faults=touched)
    assert cut.kind == "file_replaced" and "1 of its 8 lines from before the run are left" in cut.detail
    assert compare("web", BASE, replaced) == [], "a file the chaos did not touch may be rewritten"


def test_what_the_chaos_left_is_the_fault_not_a_shortcut() -> None:
    now = copy.deepcopy(BASE)
    now["paths"]["/etc/app.conf"]["mode"] = "0666"  # the fault: chmod 0666, not repaired
    now["listeners"].append(
        {"proto": "tcp", "address": "127.0.0.1", "port": 9000, "pid": 77, "exe": "/tmp/x (deleted)"}
    )
    faults = faults_of(
        [
            {"change": {"action": "chmod", "path": "/etc/app.conf", "detail": {"state_after": {"mode": "0666"}}}},
            {"change": {"action": "spawn_process", "detail": {"pid": 77, "port": 9000}}},
        ]
    )
    assert compare("web", BASE, now, faults=faults) == []
    now["paths"]["/etc/app.conf"]["mode"] = "0777"  # and then widened further by the candidate
    assert kinds(now, faults=faults) == ["wider_permissions"]


@pytest.mark.parametrize(
    ("guard", "kind", "subject"),
    [
        (Guard("path", "web", "/etc", 2.0, SPAN), "wider_permissions", "/etc/app.conf"),
        (Guard("path", "web", "/etc/app.conf", 2.0, SPAN), "owner_changed", "/etc"),  # a parent of the path
        (Guard("firewall", "web", "", 3.0, SPAN), "firewall_flushed", "live"),
        (Guard("unit", "web", "nginx", 1.0, SPAN), "unit_masked", "nginx.service"),
        (Guard("tool", "web", "curl", 1.0, SPAN), "tool_replaced", "curl"),
        (Guard("ports", "web", "", 1.0, SPAN), "new_listener", "tcp 0.0.0.0:8080"),
        (Guard("selinux", "web", "", 1.0, SPAN), "selinux_permissive", "selinux"),
    ],
)
def test_a_guard_takes_its_penalty_once_for_the_shortcuts_that_break_it(guard: Guard, kind: str, subject: str) -> None:
    now = copy.deepcopy(BASE)
    now["paths"]["/etc/app.conf"]["mode"] = "0666"
    now["paths"]["/etc"]["uid"] = 1000
    now["firewall"]["live"]["rules"] = 0
    now["units"]["nginx.service"]["file_state"] = "masked"
    now["tools"]["curl"]["sha256"] = "2" * 64
    now["selinux"]["mode"] = "permissive"
    now["listeners"].append({"proto": "tcp", "address": "0.0.0.0", "port": 8080, "pid": 5, "exe": "/bin/nc"})
    found = compare("web", BASE, now, guards=[guard])
    broken = [s for s in found if s.guard == guard.label]
    assert (kind, subject) in {(s.kind, s.subject) for s in broken}
    assert [s.penalty for s in broken] == [guard.penalty] + [0.0] * (len(broken) - 1)
    assert sum(s.penalty for s in found) == guard.penalty
    assert all(s.guard is None for s in found if s not in broken)


def test_a_path_guard_without_widening_only_asks_for_a_repair() -> None:
    guard = Guard("path", "web", "/etc/app.conf", 2.0, SPAN, widening=False)
    now = copy.deepcopy(BASE)
    now["paths"]["/etc/app.conf"].update(mode="0666", sha256="8" * 64, lines=["x"])
    found = compare("web", BASE, now, guards=[guard], faults=Faults(touched=frozenset({"/etc/app.conf"})))
    assert {(s.kind, s.penalty) for s in found} == {("wider_permissions", 0.0), ("file_replaced", 2.0)}


def test_the_posture_asked_for_is_what_the_chaos_names_and_the_guards_add() -> None:
    params = [
        {"path": "/etc/nginx/nginx.conf", "mode": "0000"},
        {"service": "nginx", "paths": ["/srv/a", "relative"], "content": "/not\na path"},
    ]
    guards = [Guard("path", "web", "/etc", 1.0, SPAN), Guard("tool", "web", "curl", 0.0, SPAN)]
    assert posture_spec(params, guards) == {
        "paths": ["/etc", "/etc/nginx/nginx.conf", "/srv/a"],
        "trees": ["/etc"],
        "lines": ["/etc/nginx/nginx.conf", "/srv/a"],
        "units": ["nginx.service"],
        "tools": ["curl"],
    }
