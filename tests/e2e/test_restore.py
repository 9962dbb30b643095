"""``chaosrun restore`` on a real run against the test sshd: every change undone, the
sandbox exactly as it was, the fault processes gone, a second restore a no-op, and a file the
candidate changed since the run reported and left alone."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

from e2e_support import Exam, free_port

SCENARIO = """\
version: 1
name: restore
targets:
  web: {host: 127.0.0.1}
vars:
  root: "%(root)s"
  port: %(port)d
steps:
  - {id: perms, target: web, chaos: chmod, with: {path: "${vars.root}/www/index.html", mode: "0000"}}
  - {id: owner, target: web, chaos: chown, with: {path: "${vars.root}/www/key.pem", user: "65534", group: "65534"}}
  - id: override
    target: web
    chaos: write_file
    with: {path: "${vars.root}/etc/app.d/10-x.conf", content: "workers = 0\\n", mode: "0600", make_dirs: true}
  - {id: conf, target: web, chaos: write_file, with: {path: "${vars.root}/etc/app.conf", content: "broken\\n"}}
  - id: typo
    target: web
    chaos: corrupt_config
    with: {path: "${vars.root}/etc/site.conf", action: replace, match: "^listen", text: "listen 8O"}
  - {id: hosts, target: web, chaos: hosts_entry, with: {hosts_file: "${vars.root}/etc/hosts", hostname: db.local, address: 10.9.9.9}}
  - {id: gone, target: web, chaos: delete_file, with: {path: "${vars.root}/www/data.txt", mode: delete}}
  - {id: aside, target: web, chaos: delete_file, with: {path: "${vars.root}/www/page.html"}}
  - {id: inodes, target: web, chaos: exhaust_inodes, with: {dir: "${vars.root}/spool/sess", count: 300}}
  - {id: disk, target: web, chaos: fill_disk, with: {path: "${vars.root}/var/big.bin", size_mb: 3}}
  - id: lock
    target: web
    chaos: lock_user
    with: {user: alice, action: lock, shadow_file: "${vars.root}/etc/shadow", passwd_file: "${vars.root}/etc/passwd"}
  - {id: squat, target: web, chaos: occupy_port, with: {port: "${vars.port}", address: 127.0.0.1, process_name: "httpd"}}
"""


def _lay_out(root: Path) -> None:
    for folder in ("www", "etc", "spool", "var"):
        (root / folder).mkdir()
    (root / "www/index.html").write_text("<h1>hello</h1>\n")
    (root / "www/key.pem").write_text("KEY\n")
    os.chmod(root / "www/key.pem", 0o4640)
    (root / "www/data.txt").write_text("rows\n" * 50)
    (root / "www/page.html").write_text("<p>page</p>\n")
    (root / "etc/app.conf").write_text("workers = 4\n")
    os.chmod(root / "etc/app.conf", 0o640)
    (root / "etc/site.conf").write_text("server {\nlisten 80\n}\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\nalice:$y$j9T$abc$def:19000:0:99999:7:::\n")
    os.chmod(root / "etc/shadow", 0o640)


def snapshot(root: Path) -> dict[str, Any]:
    """Every path under root: type, mode, owner, and a file's content digest."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            entry: dict[str, Any] = {"mode": oct(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISREG(st.st_mode):
                entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(root))] = entry
    return out


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _our_processes(binaries: set[str]) -> list[int]:
    """Running processes whose deleted executable is one of the run's binaries."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if not os.readlink(f"/proc/{pid}/exe").endswith(" (deleted)"):
                continue
            digest = hashlib.sha256(Path(f"/proc/{pid}/exe").read_bytes()).hexdigest()
        except OSError:
            continue
        if digest in binaries:
            found.append(int(pid))
    return found


def test_restore_puts_the_machine_back_and_a_second_restore_is_a_no_op(exam: Exam) -> None:
    root = exam.sandbox
    _lay_out(root)
    before = snapshot(root)
    port = free_port()
    scenario = exam.workdir / "restore.yml"
    scenario.write_text(SCENARIO % {"root": root, "port": port})
    inventory = exam.inventory(["web"])
    audit = exam.workdir / "audit"
    run = exam.chaosrun("run", scenario, "-i", inventory, "--plain")
    assert run.code == 0, run.stdout + run.stderr
    assert snapshot(root) != before and _port_taken(port)
    binaries = {r["sha256"] for r in run.events("deploy")}
    assert _our_processes(binaries), "the squatter runs one of the run's binaries"

    done = exam.chaosrun("restore", scenario, "-i", inventory, "--audit", audit)
    assert done.code == 0, done.stdout + done.stderr
    assert "cand-001/web: 12 restored; 1 fault process(es) stopped" in done.stdout
    assert snapshot(root) == before
    assert not _port_taken(port) and _our_processes(binaries) == []
    start = done.audit[0]
    assert start["section"] == "restore" and start["restores"] == run.audit_path.name.removesuffix(".jsonl")
    assert done.audit_path is not None and done.audit_path.name.endswith("-restore.jsonl")
    verified = exam.chaosrun("audit", "verify", done.audit_path)
    assert verified.code == 0, verified.stdout + verified.stderr

    again = exam.chaosrun("restore", scenario, "-i", inventory, "--audit", audit, "--format", "json")
    assert again.code == 0, again.stderr
    assert "nothing to restore" in again.stderr and json.loads(again.stdout)["machines"] == []
    assert again.audit_path is None  # no machine was touched, no log written
    assert exam.leftovers() == []


def test_restore_leaves_what_the_candidate_changed_and_says_so(exam: Exam) -> None:
    root = exam.sandbox
    _lay_out(root)
    port = free_port()
    scenario = exam.workdir / "restore.yml"
    scenario.write_text(SCENARIO % {"root": root, "port": port})
    inventory = exam.inventory(["web"])
    audit = exam.workdir / "audit"
    run = exam.chaosrun("run", scenario, "-i", inventory, "--plain")
    assert run.code == 0, run.stdout + run.stderr
    # the candidate's own repair of app.conf (not the content from before), and mode 0640 on index.html
    (root / "etc/app.conf").write_text("workers = 2\n")
    os.chmod(root / "www/index.html", 0o640)

    done = exam.chaosrun("restore", scenario, "-i", inventory, "--audit", audit, "--format", "json")
    assert done.code == 1, done.stdout + done.stderr
    machine = json.loads(done.stdout)["machines"][0]
    assert machine["counts"] == {"restored": 10, "changed": 2}, machine
    assert any(
        "write_file" in line and "app.conf" in line and "changed since the run" in line for line in machine["left"]
    )
    assert any("chmod" in line and "index.html" in line and "0640" in line for line in machine["left"])
    assert (root / "etc/app.conf").read_text() == "workers = 2\n"  # not forced
    assert (root / "etc/site.conf").read_text() == "server {\nlisten 80\n}\n"  # the rest is back
    assert not _port_taken(port)

    # the two left are tried again by the next restore (and left again); nothing else is sent
    again = exam.chaosrun("restore", scenario, "-i", inventory, "--audit", audit, "--format", "json")
    assert again.code == 1
    assert json.loads(again.stdout)["machines"][0]["counts"] == {"changed": 2}
    assert again.audit_path is not None and again.audit_path.name.endswith("-restore-2.jsonl")


def test_restore_refuses_a_log_that_was_altered(exam: Exam) -> None:
    root = exam.sandbox
    _lay_out(root)
    scenario = exam.workdir / "restore.yml"
    scenario.write_text(SCENARIO % {"root": root, "port": free_port()})
    inventory = exam.inventory(["web"])
    run = exam.chaosrun("run", scenario, "-i", inventory, "--plain")
    assert run.code == 0 and run.audit_path is not None
    original = run.audit_path.read_text()
    lines = original.splitlines()
    lines[5] = lines[5].replace('"env"', '"env" ', 1)
    run.audit_path.write_text("\n".join(lines) + "\n")
    bad = exam.chaosrun("restore", scenario, "-i", inventory, "--from", run.audit_path)
    assert bad.code == 2
    assert f"{run.audit_path}:7: hash chain broken: this record or the one before it was altered" in bad.stderr
    run.audit_path.write_text(original)  # the log as it was: the squatter goes
    assert exam.chaosrun("restore", scenario, "-i", inventory, "--from", run.audit_path).code == 0
