"""Every example scenario, end to end against a real sshd: build, deploy, callback,
cleanup, audit. Each points its paths at a sandbox (``--var root=...``) and its process
names and ports at things the test owns; effects are checked on those files and
processes, then ``verify`` grades the untouched (unrepaired) sandbox."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import stat
import subprocess
from pathlib import Path
from typing import Any

from e2e_support import REPO, Exam, RunResult, free_port

from chaosrun.lint import load_scenario
from chaosrun.run.audit import verify_file

SCENARIOS = REPO / "scenarios"


def run_and_verify(exam: Exam, name: str, *vars: str, seed: int = 1) -> tuple[RunResult, RunResult]:
    scenario = SCENARIOS / name
    inventory = exam.inventory(exam.roles_of(scenario))
    args: list[str] = ["--seed", str(seed)]
    has_root = "root" in load_scenario(scenario).vars
    for v in (*(["root=" + str(exam.sandbox)] if has_root else []), *vars):
        args += ["--var", v]
    run = exam.chaosrun("run", scenario, "-i", inventory, "--plain", *args)
    assert run.audit_path is not None and verify_file(run.audit_path).ok
    grade = exam.chaosrun("verify", scenario, "-i", inventory, "--plain", "--format", "json", *args)
    assert grade.audit_path is not None and verify_file(grade.audit_path).ok
    return run, grade


def result_of(run: RunResult, step: str) -> dict[str, Any]:
    found = [r for r in run.events("result") if r["step"] == step]
    assert found, f"no result for {step}"
    return dict(found[-1]["result"])


def points(grade: RunResult) -> dict[str, float]:
    return {r["step"]: r["points"] for r in grade.events("step_end")}


def assert_not_suspect(run: RunResult) -> None:
    """A clean machine stays clean: a module's own fault process (a squatter, a logger), which
    runs the module's executable, is no watcher of it (no ``binary_watched``)."""
    assert run.events("signal") == []
    assert {e["integrity"] for e in run.events("run_end")[0]["environments"].values()} == {"ok"}


def kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_web_outage_fills_the_log_kills_the_server_and_breaks_its_config(exam: Exam) -> None:
    sb = exam.sandbox
    (sb / "var/log/nginx").mkdir(parents=True)
    (sb / "etc/nginx").mkdir(parents=True)
    (sb / "var/www/html").mkdir(parents=True)
    conf = sb / "etc/nginx/nginx.conf"
    conf.write_text("worker_processes 1;\n")
    conf.chmod(0o644)
    page = sb / "var/www/html/index.nginx-debian.html"
    page.write_text("<h1>Welcome to nginx!</h1>\n")
    page.chmod(0o644)
    name = "web-" + secrets.token_hex(3)
    server = exam.sleeper(name)
    run, grade = run_and_verify(exam, "web_outage.yaml", "fill_mb=4", f"web_process={name}", f"web_port={free_port()}")
    assert run.code == 0, run.stdout + run.stderr
    assert (sb / "var/log/nginx/access.log.1").stat().st_size == 4 * 1024 * 1024
    assert server.wait(timeout=5) == -signal.SIGKILL
    picked = run.events("run_start")[0]["plan"]["environments"][0]["picks"]["pick_one"]
    if picked == "break_perms":
        assert stat.S_IMODE(page.stat().st_mode) == 0
    else:
        assert conf.read_text() == "worker_processes 1;\nworker_processes two;\n"
    assert {r["step"]: r["status"] for r in run.events("step_end")}["pause"] == "ok"
    # Not repaired: no page answers on the port; this disk still has space (3 of 8 points).
    assert points(grade) == {"web_answers": 0, "space_back": 3}
    assert grade.code == 1


def test_disk_full_fills_a_directory_and_hides_a_deleted_open_file(exam: Exam) -> None:
    sb = exam.sandbox
    (sb / "var/tmp").mkdir(parents=True)
    (sb / "var/log").mkdir(parents=True)
    logger = "applog-" + secrets.token_hex(3)
    run, grade = run_and_verify(exam, "disk_full.yaml", "fill_mb=3", f"logger={logger}")
    pid = int(result_of(run, "ghost_log")["pid"])
    try:
        assert run.code == 0, run.stdout + run.stderr
        assert (sb / "var/tmp/.journal.tmp").stat().st_size == 3 * 1024 * 1024
        assert Path(f"/proc/{pid}/comm").read_text().strip() == logger[:15]
        fds = [os.readlink(f) for f in Path(f"/proc/{pid}/fd").iterdir()]
        assert any(f.endswith("app-debug.log (deleted)") for f in fds), fds
        assert not (sb / "var/log/app-debug.log").exists()
        assert points(grade) == {"filler_removed": 0, "logger_gone": 0, "space_back": 3}
        assert_not_suspect(run)
    finally:
        kill_pid(pid)


def _stand_in_systemctl(folder: Path) -> tuple[Path, Path]:
    """A systemctl for a machine where systemd does not run: it logs its arguments and says
    the unit is enabled until someone disables it (the real one is tested on lab VMs)."""
    calls = folder / "systemctl.calls"
    state = folder / "systemctl.state"
    script = folder / "systemctl"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        'case "$1" in\n'
        f"  disable) echo disabled > {state} ;;\n"
        f'  is-enabled) cat {state} 2>/dev/null || echo enabled; [ "$(cat {state} 2>/dev/null)" != disabled ] ;;\n'
        "  is-active) echo inactive; exit 3 ;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    return script, calls


def test_killed_service_kills_the_server_disables_it_and_squats_on_its_port(exam: Exam, tmp_path: Path) -> None:
    name = "svc-" + secrets.token_hex(3)
    squatter = "sq-" + secrets.token_hex(3)
    server = exam.sleeper(name)
    port = free_port()
    systemctl, calls = _stand_in_systemctl(tmp_path)
    run, grade = run_and_verify(
        exam,
        "killed_service.yaml",
        f"service_process={name}",
        f"port={port}",
        f"squatter={squatter}",
        f"systemctl={systemctl}",
    )
    pid = int(result_of(run, "squat_port")["pid"])
    try:
        assert run.code == 0, run.stdout + run.stderr
        assert server.wait(timeout=5) == -signal.SIGKILL
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == squatter.encode()
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the squatter holds the port
        assert "disable --now nginx" in calls.read_text()
        assert points(grade) == {"squatter_gone": 0, "starts_at_boot": 0, "page_answers": 0}
        assert_not_suspect(run)
    finally:
        kill_pid(pid)


def test_broken_permissions_opens_a_key_steals_a_dir_and_locks_a_file(exam: Exam) -> None:
    sb = exam.sandbox
    key = sb / "home/candidate/.ssh/authorized_keys"
    key.parent.mkdir(parents=True)
    key.write_text("ssh-ed25519 AAAA... candidate\n")
    key.chmod(0o600)
    www = sb / "var/www/html"
    www.mkdir(parents=True)
    index = www / "index.nginx-debian.html"
    index.write_text("<h1>hi</h1>\n")
    try:
        run, grade = run_and_verify(exam, "broken_permissions.yaml")
        assert run.code == 0, run.stdout + run.stderr
        assert stat.S_IMODE(key.stat().st_mode) == 0o666
        assert www.stat().st_uid == 65534  # nobody
        lsattr = subprocess.run(["lsattr", "-d", str(index)], capture_output=True, text=True, check=True).stdout
        assert "i" in lsattr.split()[0]
        assert points(grade) == {"key_private": 0, "webroot_owner": 0, "index_writable": 0}
    finally:
        subprocess.run(["chattr", "-i", str(index)], check=False)


def test_bad_config_line_corrupts_sshd_config_and_one_more_file(exam: Exam) -> None:
    sb = exam.sandbox
    (sb / "etc/ssh").mkdir(parents=True)
    (sb / "etc/ssh/sshd_config").write_text("Port 22\n#PermitRootLogin prohibit-password\nUsePAM yes\n")
    (sb / "etc/fstab").write_text("UUID=1234 / ext4 defaults 0 1\n")
    (sb / "etc/sudoers").write_text("root ALL=(ALL:ALL) ALL\n")
    run, grade = run_and_verify(exam, "bad_config_line.yaml", seed=3)
    assert run.code == 0, run.stdout + run.stderr
    assert (sb / "etc/ssh/sshd_config").read_text() == "Port 22\nPermitRootLogin yess\nUsePAM yes\n"
    picked = run.events("run_start")[0]["plan"]["environments"][0]["picks"]["second_fault"]
    fstab, sudoers = (sb / "etc/fstab").read_text(), (sb / "etc/sudoers").read_text()
    if picked == "break_fstab":
        assert "\nUUID=0badc0de" in fstab and sudoers == "root ALL=(ALL:ALL) ALL\n"
    else:
        assert "\nDefaults requiretty,,\n" in sudoers and fstab == "UUID=1234 / ext4 defaults 0 1\n"
    got = points(grade)
    assert got["sshd_line_fixed"] == 0
    assert got["fstab_clean"] + got["sudoers_clean"] == (2 if picked == "break_fstab" else 3)


def test_hosts_dns_poisons_hosts_and_resolv_conf(exam: Exam) -> None:
    sb = exam.sandbox
    (sb / "etc").mkdir()
    (sb / "etc/hosts").write_text("127.0.0.1 localhost\n")
    (sb / "etc/resolv.conf").write_text("nameserver 127.0.0.53\n")
    run, grade = run_and_verify(exam, "hosts_dns.yaml")
    assert run.code == 0, run.stdout + run.stderr
    assert "192.0.2.10" in (sb / "etc/hosts").read_text() and "deb.example.org" in (sb / "etc/hosts").read_text()
    resolv = (sb / "etc/resolv.conf").read_text()
    assert "nameserver 192.0.2.53" in resolv and "127.0.0.53" not in resolv
    assert points(grade) == {"hosts_clean": 0, "resolver_back": 0, "localhost_kept": 2}


def test_user_locked_out_locks_the_account_one_of_three_ways(exam: Exam) -> None:
    sb = exam.sandbox
    (sb / "etc").mkdir()
    (sb / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\noperator:x:1001:1001::/home/operator:/bin/bash\n")
    (sb / "etc/shadow").write_text("root:*:19000:0:99999:7:::\noperator:$6$abc$def:19000:0:99999:7:::\n")
    run, grade = run_and_verify(exam, "user_locked_out.yaml", "user=operator", seed=5)
    assert run.code == 0, run.stdout + run.stderr
    picked = run.events("run_start")[0]["plan"]["environments"][0]["picks"]["lock"]
    passwd, shadow = (sb / "etc/passwd").read_text(), (sb / "etc/shadow").read_text()
    expected = {
        "lock_password": (
            "operator:!$6$abc$def:" in shadow,
            {"password_unlocked": 0, "not_expired": 3, "has_shell": 3, "has_password": 2},
        ),
        "expire_account": (
            ":99999:7::1:" in shadow,
            {"password_unlocked": 4, "not_expired": 0, "has_shell": 3, "has_password": 2},
        ),
        "no_shell": (
            "/home/operator:/usr/sbin/nologin" in passwd,
            {"password_unlocked": 4, "not_expired": 3, "has_shell": 0, "has_password": 2},
        ),
    }[picked]
    assert expected[0], (picked, passwd, shadow)
    assert points(grade) == expected[1]
