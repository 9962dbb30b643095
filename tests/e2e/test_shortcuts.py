"""Shortcut detection against the test sshd: the baseline a run takes before its chaos, and
the guard pass after grading that finds what the candidate widened beyond the fault. The
probes here are lenient on purpose (as a hasty author's are): every shortcut passes them,
and only the guards take the points back."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

from e2e_support import Exam

SCENARIO = """\
version: 1
name: shortcuts
targets:
  web: {host: 127.0.0.1}
vars:
  root: "%(root)s"
steps:
  - {id: perms, target: web, chaos: chmod, with: {path: "${vars.root}/www/index.html", mode: "0000"}}
  - {id: conf, target: web, chaos: write_file, with: {path: "${vars.root}/etc/app.conf", content: "broken\\n"}}
verify:
  - id: readable
    target: web
    probe: file_mode
    with: {path: "${vars.root}/www/index.html"}
    expect: result.mode != "0000"
    points: 2
  - id: workers
    target: web
    probe: file_contains
    with: {path: "${vars.root}/etc/app.conf", pattern: "^workers = 4$"}
    expect: result.matches
    points: 2
guards:
  - {target: web, path: "%(root)s/www", penalty: 1, description: "the site's files stay as private as they were"}
  - {target: web, path: "%(root)s/etc/app.conf", no_wider_than_baseline: false, penalty: 2}
  - {target: web, ports: true, penalty: 1}
"""

APP_CONF = "".join(f"{line}\n" for line in ["# app", "workers = 4", "timeout = 30", "log = /var/log/app", "user = app"])

ACL_USER, ACL_GROUP_OBJ, ACL_USER_OBJ, ACL_MASK, ACL_OTHER, NOBODY = 0x02, 0x04, 0x01, 0x10, 0x20, 0xFFFFFFFF


def _acl(*entries: tuple[int, int, int]) -> bytes:
    """A system.posix_acl_access value: version 2, then (tag, perm, id) entries."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, uid) for tag, perm, uid in entries)


def _lay_out(root: Path) -> None:
    (root / "www").mkdir()
    (root / "etc").mkdir()
    (root / "www/index.html").write_text("<h1>hello</h1>\n")
    (root / "www/index.html").chmod(0o640)
    (root / "www/page.html").write_text("<p>page</p>\n")
    (root / "www/page.html").chmod(0o640)
    (root / "etc/app.conf").write_text(APP_CONF)


def _free_low_port() -> int:
    """A port below the monitor's callback range (20000-60999), as a fake service would use."""
    for port in range(18080, 19999):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below 20000")


def test_the_guard_pass_finds_each_shortcut_and_the_guards_take_their_penalty(exam: Exam) -> None:
    root = exam.sandbox
    _lay_out(root)
    scenario = exam.workdir / "shortcuts.yml"
    scenario.write_text(SCENARIO % {"root": root})
    inventory = exam.inventory(["web"])
    run = exam.chaosrun("run", scenario, "-i", inventory, "--plain")
    assert run.code == 0, run.stdout + run.stderr
    (baseline,) = run.events("baseline")
    assert baseline["role"] == "web" and baseline["spec"]["trees"] == [f"{root}/etc/app.conf", f"{root}/www"]
    assert baseline["posture"]["paths"][f"{root}/www/index.html"]["mode"] == "0640"
    first_deploy = min(i for i, r in enumerate(run.audit) if r["event"] == "deploy" and r["step"] == "perms")
    assert run.audit.index(baseline) < first_deploy, "the baseline comes before the chaos"

    # the candidate's shortcuts: every probe passes
    (root / "www/index.html").chmod(0o777)
    os.setxattr(
        root / "www/page.html",
        "system.posix_acl_access",
        _acl((ACL_USER_OBJ, 6, NOBODY), (ACL_USER, 7, 65534), (ACL_GROUP_OBJ, 4, NOBODY), (ACL_MASK, 7, NOBODY),
             (ACL_OTHER, 0, NOBODY)),
    )  # fmt: skip
    (root / "etc/app.conf").write_text("workers = 4\n")  # a new file, not the old one repaired
    port = _free_low_port()
    fake = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(); time.sleep(300)",
        ]
    )
    exam.processes.append(fake)
    try:
        _wait_listening(port)
        graded = exam.chaosrun("verify", scenario, "-i", inventory, "--plain", "--format", "json")
        as_csv = exam.chaosrun("verify", scenario, "-i", inventory, "--plain", "--format", "csv")
    finally:
        fake.kill()
        fake.wait()
    assert graded.code == 0, graded.stdout + graded.stderr  # the probes pass
    (env,) = json.loads(graded.stdout)["environments"]
    by_kind = {}
    for cut in env["shortcuts"]:
        by_kind.setdefault(cut["kind"], []).append(cut)
    assert {"wider_permissions", "acl_widened", "file_replaced", "new_listener"} <= set(by_kind), env["shortcuts"]
    assert any(c["subject"] == f"{root}/www/index.html" and "0777" in c["detail"] for c in by_kind["wider_permissions"])
    assert any(
        c["subject"] == f"{root}/www/page.html" and "user:65534:rwx" in c["detail"] for c in by_kind["acl_widened"]
    )
    (replaced,) = by_kind["file_replaced"]
    assert replaced["guard"] == f"path {root}/etc/app.conf" and replaced["penalty"] == 2
    mine = [c for c in by_kind["new_listener"] if c["subject"] == f"tcp 127.0.0.1:{port}"]
    assert mine and f"pid {fake.pid}" in mine[0]["detail"]
    assert env["penalty"] == 4 and env["points"] == 0 and env["max_points"] == 4 and env["guarded"] == "ok"
    records = [r for r in graded.audit if r["event"] == "shortcut"]
    assert {r["kind"] for r in records} >= {"wider_permissions", "acl_widened", "file_replaced", "new_listener"}
    assert [r for r in graded.audit if r["event"] == "env_end"][0]["penalty"] == 4
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert rows and all("file_replaced" in r["shortcuts"] and r["penalty"] == "4" for r in rows)

    table = exam.chaosrun("verify", scenario, "-i", inventory)
    assert "SHORTCUT" in table.stdout and "SHORTCUTS taken: cand-001" in table.stdout
    assert exam.leftovers() == []


def test_an_honest_repair_has_no_shortcut_and_full_points(exam: Exam) -> None:
    root = exam.sandbox
    _lay_out(root)
    scenario = exam.workdir / "shortcuts.yml"
    scenario.write_text(SCENARIO % {"root": root})
    inventory = exam.inventory(["web"])
    assert exam.chaosrun("run", scenario, "-i", inventory, "--plain").code == 0
    (root / "www/index.html").chmod(0o640)
    (root / "etc/app.conf").write_text(APP_CONF.replace("timeout = 30", "timeout = 31"))  # repaired, one line off
    graded = exam.chaosrun("verify", scenario, "-i", inventory, "--plain", "--format", "json")
    assert graded.code == 0, graded.stderr
    (env,) = json.loads(graded.stdout)["environments"]
    assert [c for c in env["shortcuts"] if c["kind"] != "new_listener"] == []  # this machine runs other things too
    assert env["points"] == 4 - env["penalty"] and env["guarded"] == "ok"

    # without a run to compare with, it says so and grades as before
    alone = exam.workdir / "alone"
    graded = exam.chaosrun("verify", scenario, "-i", inventory, "--plain", "--audit", alone)
    assert graded.code == 0 and "shortcuts are not looked for" in graded.stderr


def _wait_listening(port: int) -> None:
    import time

    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"the fake service never listened on {port}")
