"""Inventories as operators have them, on a real run against the test sshd: an Ansible INI
inventory (an environment per host, and per group) and a CSV one, each environment's
``env.vars`` reaching the target in a file a chaos module writes."""

from __future__ import annotations

from pathlib import Path

from e2e_support import Exam

SCENARIO = """\
version: 1
name: seats
vars:
  root: "%(root)s"
steps:
  - id: seat
    target: web
    chaos: write_file
    with:
      path: "${vars.root}/${env.name}-${env.vars.seat}.txt"
      content: "seat ${env.vars.seat} in room ${env.vars.room}\\n"
  - id: after
    target: web
    chaos: write_file
    when: env.vars.room == "B"
    with:
      path: "${vars.root}/${env.name}.after"
      content: "${env.vars.seat} ${steps.seat.result.existed}\\n"
"""


def _scenario(exam: Exam, body: str = SCENARIO) -> Path:
    path = exam.workdir / "seats.yml"
    path.write_text(body % {"root": exam.sandbox})
    return path


def _connection_vars(exam: Exam) -> str:
    s = exam.sshd
    return (
        f"ansible_host={s.host} ansible_port={s.port} ansible_user={s.user} "
        f"ansible_ssh_private_key_file={s.identity} chaosrun_known_hosts={s.known_hosts} "
        f"chaosrun_tmp_dir={exam.remote_tmp}"
    )


def test_an_ansible_ini_inventory_runs_an_environment_per_host_with_its_vars(exam: Exam) -> None:
    inventory = exam.workdir / "hosts.ini"
    inventory.write_text(
        "[room_b]\n"
        f"cand-001 {_connection_vars(exam)} seat=11\n"
        f"cand-002 {_connection_vars(exam)} seat=12\n"
        "[room_b:vars]\n"
        "room=B\n"
    )
    scenario = _scenario(exam)
    assert exam.chaosrun("lint", inventory).code == 0
    result = exam.chaosrun("run", scenario, "-i", inventory, "--plain", "--seed", "1")
    assert result.code == 0, result.stdout + result.stderr
    assert {r["env"] for r in result.events("env_end")} == {"cand-001", "cand-002"}
    # rendered by plan (env.vars alone) and by the runner (with steps.*)
    assert (exam.sandbox / "cand-001-11.txt").read_text() == "seat 11 in room B\n"
    assert (exam.sandbox / "cand-002-12.txt").read_text() == "seat 12 in room B\n"
    assert (exam.sandbox / "cand-001.after").read_text() == "11 false\n"
    assert (exam.sandbox / "cand-002.after").read_text() == "12 false\n"


def test_an_ansible_ini_inventory_per_group_puts_a_candidates_hosts_together(exam: Exam) -> None:
    two_roles = SCENARIO.replace(
        "    target: web\n    chaos: write_file\n    when", "    target: db\n    chaos: write_file\n    when"
    )
    inventory = exam.workdir / "hosts"  # no extension: INI by its content
    inventory.write_text(
        "[web]\nc1-web\nc2-web\n[db]\nc1-db\nc2-db\n"
        "[cand1]\nc1-web\nc1-db\n[cand1:vars]\nseat=1\n"
        "[cand2]\nc2-web\nc2-db\n[cand2:vars]\nseat=2\n"
        f"[all:vars]\nroom=B\n{_connection_vars(exam).replace(' ', chr(10))}\n"
    )
    scenario = _scenario(exam, two_roles)
    result = exam.chaosrun("run", scenario, "-i", inventory, "--env-per", "group", "--plain", "--seed", "1")
    assert result.code == 0, result.stdout + result.stderr
    assert {r["env"] for r in result.events("env_end")} == {"cand1", "cand2"}
    assert (exam.sandbox / "cand1-1.txt").read_text() == "seat 1 in room B\n"
    assert (exam.sandbox / "cand2.after").read_text() == "2 false\n"
    # per host, each host is an environment of its own and lacks the other role
    per_host = exam.chaosrun("plan", scenario, "-i", inventory, "--seed", "1")
    assert per_host.code == 1
    assert f"{inventory}:2:1: environment 'c1-web' has no host for role 'db'" in per_host.stdout


def test_a_csv_inventory_runs_each_row_with_its_var_columns(exam: Exam) -> None:
    s = exam.sshd
    inventory = exam.workdir / "room.csv"
    inventory.write_text(
        "env,role,host,port,user,identity,known_hosts,tmp_dir,var.seat,var.room\n"
        f"cand-001,web,{s.host},{s.port},{s.user},{s.identity},{s.known_hosts},{exam.remote_tmp},21,B\n"
        f"cand-002,web,{s.host},{s.port},{s.user},{s.identity},{s.known_hosts},{exam.remote_tmp},22,C\n"
    )
    scenario = _scenario(exam)
    result = exam.chaosrun("run", scenario, "-i", inventory, "--plain", "--seed", "1")
    assert result.code == 0, result.stdout + result.stderr
    assert (exam.sandbox / "cand-001-21.txt").read_text() == "seat 21 in room B\n"
    assert (exam.sandbox / "cand-002-22.txt").read_text() == "seat 22 in room C\n"
    assert (exam.sandbox / "cand-001.after").read_text() == "21 false\n"
    assert not (exam.sandbox / "cand-002.after").exists()  # room C: its `when` is false
    skipped = [r for r in result.events("step_end") if r["step"] == "after" and r["env"] == "cand-002"]
    assert [r["status"] for r in skipped] == ["skipped"]


def test_a_var_missing_in_one_environment_stops_the_run_before_any_host(exam: Exam) -> None:
    s = exam.sshd
    inventory = exam.workdir / "room.csv"
    inventory.write_text(
        "env,role,host,port,user,identity,known_hosts,tmp_dir,var.seat,var.room\n"
        f"cand-001,web,{s.host},{s.port},{s.user},{s.identity},{s.known_hosts},{exam.remote_tmp},21,B\n"
        f"cand-002,web,{s.host},{s.port},{s.user},{s.identity},{s.known_hosts},{exam.remote_tmp},,B\n"
    )
    scenario = _scenario(exam)
    result = exam.chaosrun("run", scenario, "-i", inventory, "--plain")
    assert result.code == 1
    # one error per place the scenario reads it, naming the environment
    assert [line.split(": ", 1)[0] for line in result.stdout.splitlines()] == [
        f"{scenario}:10:41",
        f"{scenario}:11:24",
        f"{scenario}:18:19",
    ]
    assert all("env.vars.seat is not set in environment cand-002" in line for line in result.stdout.splitlines())
    assert result.audit == [] and list(exam.sandbox.iterdir()) == []
