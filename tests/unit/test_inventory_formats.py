"""Inventories as operators have them: Ansible INI and YAML, CSV; how each is recognised,
read and checked (every error at file:line:col), and how Ansible hosts find their roles."""

from __future__ import annotations

import contextlib
import io
import textwrap
from pathlib import Path

import pytest

from chaosrun import ScenarioErrors
from chaosrun.cli import is_inventory_text, main
from chaosrun.inventory import Inventory, InventoryFormat, inventory_format, load_inventory, parse_inventory
from chaosrun.inventory_ansible import MAX_HOSTS, expand_host_pattern
from chaosrun.lint import load_scenario
from chaosrun.plan import build_plan


def _parse(text: str, file: str, env_per: str = "host") -> Inventory:
    inventory, errors = parse_inventory(textwrap.dedent(text), file, env_per=env_per)
    assert errors == [] and inventory is not None, [str(e) for e in errors]
    return inventory


def _errors(text: str, file: str, env_per: str = "host") -> list[str]:
    return [str(e) for e in parse_inventory(textwrap.dedent(text), file, env_per=env_per)[1]]


def _hosts(inventory: Inventory) -> dict[str, list[tuple[str, str, int, str]]]:
    """Per environment: (name, host, port, user) of each host still to be placed."""
    return {
        e.name: [(h.name, h.spec.host, h.spec.port, h.spec.user) for h in e.unplaced] for e in inventory.environments
    }


# --- format detection ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "text", "expected"),
    [
        ("room.csv", "env,role,host\n", InventoryFormat.CSV),
        ("hosts.ini", "[web]\nh1\n", InventoryFormat.ANSIBLE_INI),
        ("hosts.cfg", "h1\n", InventoryFormat.ANSIBLE_INI),
        ("hosts", "[web]\nh1\n", InventoryFormat.ANSIBLE_INI),
        ("hosts", "h1\nh2 ansible_port=2222\n", InventoryFormat.ANSIBLE_INI),
        ("hosts.yml", "all:\n  hosts:\n    h1:\n", InventoryFormat.ANSIBLE_YAML),
        ("hosts.yaml", "web:\n  children:\n    nginx:\n", InventoryFormat.ANSIBLE_YAML),
        ("hosts", "all:\n  hosts:\n    h1:\n", InventoryFormat.ANSIBLE_YAML),
        ("room.yml", "environments:\n  e: { web: { host: h } }\n", InventoryFormat.CHAOSRUN),
        ("exam.yaml", "version: 1\nname: t\nsteps: []\n", None),
        ("exam.yaml", "[not, a, mapping]\n", None),
    ],
)
def test_the_format_comes_from_the_extension_then_the_content(file: str, text: str, expected: object) -> None:
    assert inventory_format(text, file) is expected


def test_lint_recognises_each_format_as_an_inventory() -> None:
    assert is_inventory_text("[web]\nh1\n", "hosts")
    assert is_inventory_text("env,role,host\n", "room.csv")
    assert is_inventory_text("all:\n  hosts:\n    h1:\n", "room.yml")
    assert not is_inventory_text("version: 1\nname: t\n", "exam.yaml")


# --- Ansible INI -------------------------------------------------------------------------------


def test_an_ini_inventory_reads_groups_children_vars_ranges_and_ports() -> None:
    inventory = _parse(
        """\
        # room B
        loose.example.com
        [web]
        web[01:03].example.com ansible_user=exam
        [db]
        db-[a:b]:2222 ansible_host=10.0.0.9
        [room_b:children]
        web
        db
        [room_b:vars]
        ansible_port=2200 # the room's sshd
        """,
        "/exam/hosts.ini",
    )
    assert inventory.format is InventoryFormat.ANSIBLE_INI
    hosts = {h.name: h for h in inventory.hosts}
    assert list(hosts) == [
        "loose.example.com",
        "web01.example.com",
        "web02.example.com",
        "web03.example.com",
        "db-a",
        "db-b",
    ]
    web = hosts["web02.example.com"]
    assert (web.spec.host, web.spec.port, web.spec.user) == ("web02.example.com", 2200, "exam")
    assert web.groups == ("room_b", "web")  # parents first, as Ansible merges them
    assert (hosts["db-b"].spec.host, hosts["db-b"].spec.port) == ("10.0.0.9", 2222)  # the host's own port wins
    assert hosts["loose.example.com"].groups == ()
    assert web.span.line == 4 and hosts["db-a"].span.line == 6


def test_a_host_range_pads_like_its_start_and_takes_a_step() -> None:
    assert expand_host_pattern("web[01:03]") == ["web01", "web02", "web03"]
    assert expand_host_pattern("web[8:10]") == ["web8", "web9", "web10"]
    assert expand_host_pattern("n[0:20:10]") == ["n0", "n10", "n20"]
    assert expand_host_pattern("r[a:b]-[1:2]") == ["ra-1", "ra-2", "rb-1", "rb-2"]
    assert expand_host_pattern("plain.example.com") == ["plain.example.com"]


def test_variables_merge_all_then_parents_then_children_then_the_host() -> None:
    inventory = _parse(
        """\
        [web]
        w1 tier=host
        w2
        [room:children]
        web
        [room:vars]
        tier=room
        colour=blue
        [web:vars]
        tier=web
        [all:vars]
        tier=all
        zone=eu
        """,
        "/exam/hosts.ini",
    )
    env_vars = {e.name: dict(e.vars) for e in inventory.environments}
    assert env_vars == {
        "w1": {"tier": "host", "colour": "blue", "zone": "eu"},
        "w2": {"tier": "web", "colour": "blue", "zone": "eu"},
    }


def test_ini_values_are_python_literals_when_they_are_one_as_ansible_reads_them() -> None:
    inventory = _parse(
        """\
        [web]
        w1 n=42 f=1.5 yes=True text=FALSE quoted="a b" octal=0644 list="[1, 2]" hash=a#b
        """,
        "/exam/hosts.ini",
    )
    assert dict(inventory.environments[0].vars) == {
        "n": 42,
        "f": 1.5,
        "yes": True,
        "text": "FALSE",
        "quoted": "a b",
        "octal": "0644",
        "list": [1, 2],
        "hash": "a",  # '#' outside quotes starts a comment, as in Ansible's shlex
    }


def test_connection_variables_make_the_host_spec_and_relative_key_paths_follow_the_file() -> None:
    inventory = _parse(
        """\
        [web]
        w1 ansible_host=10.0.0.1 ansible_port=2222 ansible_user=exam ansible_ssh_private_key_file=keys/id chaosrun_known_hosts=kh chaosrun_tmp_dir=/var/tmp
        w2 ansible_ssh_host=10.0.0.2 ansible_host_key_checking=False
        w3 chaosrun_insecure=yes
        """,
        "/exam/inv/hosts.ini",
    )
    w1, w2, w3 = inventory.hosts
    assert (w1.spec.host, w1.spec.port, w1.spec.user) == ("10.0.0.1", 2222, "exam")
    assert (w1.spec.identity, w1.spec.known_hosts, w1.spec.tmp_dir) == ("/exam/inv/keys/id", "/exam/inv/kh", "/var/tmp")
    assert w1.given == frozenset({"host", "port", "user", "identity", "known_hosts", "tmp_dir"})
    assert (w2.spec.host, w2.spec.insecure) == ("10.0.0.2", True)
    assert w3.spec.insecure is True and w3.given == frozenset({"host", "insecure"})
    assert all(e.vars == {} for e in inventory.environments)  # connection variables are no env.vars


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[web\nh1\n", "1:1: not a section: '[web'"),
        ("[web:hosts2]\nh1\n", "1:6: unknown section type 'hosts2'"),
        ("[web]\nh1\n[db:vars]\nx=1\n", "3:2: [db:vars] is for a group this inventory does not define"),
        ("[web:children]\ndb\n[web]\nh0\n", "2:1: child group 'db' is not defined"),
        ("[web]\nh1\n[web:vars]\nnovalue\n", "4:1: expected key=value, got 'novalue'"),
        ("[web]\nh1 novalue\n", "2:4: expected key=value after the host name, got 'novalue'"),
        ("[web]\nh1 1bad=3\n", "2:4: not a variable name: '1bad'"),
        ("[web]\nh1 x='open\n", "2:6: a ' quote that is not closed on this line"),
        ("[web]\nweb[10:01]\n", "2:4: a host range goes up: [10:01] ends below its start"),
        ("[web]\nweb[01:100]\n", "2:4: a zero-padded host range has ends of equal width: [01:100]"),
        ("[web]\nweb[1:x]\n", "2:4: a host range is numbers ([01:10]) or single letters ([a:f]), got [1:x]"),
        ("[web]\nweb[0:2000000]\n", f"2:4: a host range of more than {MAX_HOSTS} hosts"),
        ("[web]\nfe80::1\n", "2:6: an IPv6 address is no inventory host name: name the host and set ansible_host"),
        ("[web]\nh1:abc\n", "2:4: ansible_port: a port is a number from 1 to 65535, got 'abc'"),
        ("[web]\nh1:22 ansible_port=23\n", "2:4: a port twice: after the host name and as ansible_port"),
        ("[web]\nh1 ansible_port=99999\n", "2:17: ansible_port: a port is a number from 1 to 65535, got 99999"),
        ("[web]\nh1 chaosrun_tmp_dir=tmp\n", "2:21: chaosrun_tmp_dir: tmp_dir must be an absolute path, got 'tmp'"),
        ("[web]\nh1 chaosrun_rol=web\n", "2:17: unknown variable 'chaosrun_rol' (did you mean 'chaosrun_role'?)"),
        ("[web]\nh1 chaosrun_role=Web\n", "2:18: chaosrun_role: role names must be lowercase letters"),
        ("[web]\nh1 ansible_connection=local\n", "2:23: ansible_connection: chaosrun connects over ssh, not 'local'"),
        ("[web]\nh1 ansible_password=x\n", "2:21: ansible_password is not supported (chaosrun logs in with a key"),
        ("[web]\nh1 ansible_ssh_common_args='-o X=y'\n", "2:28: ansible_ssh_common_args is not supported"),
        ("[a:children]\nb\n[b:children]\na\n", "4:1: groups are children of each other: a -> b -> a"),
        ("[web]\n", "1:1: no hosts in this inventory"),
    ],
)
def test_ini_errors_are_positioned(text: str, expected: str) -> None:
    errors = _errors(text, "hosts.ini")
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"hosts.ini:{expected}"), errors


def test_an_ignored_ansible_variable_warns_once_per_name() -> None:
    inventory = _parse(
        "[web]\nh1 ansible_become=true\nh2 ansible_become=true ansible_python_interpreter=/usr/bin/python3\n",
        "hosts.ini",
    )
    assert [str(w) for w in inventory.warnings] == [
        "hosts.ini:2:19: warning: ansible_become means nothing to chaosrun (ignored)",
        "hosts.ini:3:51: warning: ansible_python_interpreter means nothing to chaosrun (ignored)",
    ]


# --- Ansible YAML -------------------------------------------------------------------------------


def test_a_yaml_inventory_reads_nested_children_host_vars_and_ranges() -> None:
    inventory = _parse(
        """\
        all:
          vars: { room: B }
          children:
            cand1:
              vars: { seat: 1 }
              hosts:
                c1-web: { ansible_host: 10.0.1.11, chaosrun_role: web }
                c1-db[1:2]: { ansible_port: 2222 }
        """,
        "/exam/hosts.yml",
        env_per="group",
    )
    assert inventory.format is InventoryFormat.ANSIBLE_YAML
    assert _hosts(inventory) == {
        "cand1": [
            ("c1-web", "10.0.1.11", 22, "root"),
            ("c1-db1", "c1-db1", 2222, "root"),
            ("c1-db2", "c1-db2", 2222, "root"),
        ]
    }
    (env,) = inventory.environments
    assert dict(env.vars) == {"room": "B", "seat": 1} and env.span.line == 4
    assert inventory.hosts[0].roles == ("web",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "all:\n  hots:\n    h1:\n",
            "2:3: group 'all': unknown key 'hots' (a group has hosts, children, vars) (did you mean 'hosts'?)",
        ),
        ("all:\n  hosts: [h1, h2]\n", "2:10: group 'all' hosts: expected a mapping of host names, got a list"),
        (
            "all:\n  hosts:\n    h1: { ansible_port: x }\n",
            "3:25: ansible_port: a port is a number from 1 to 65535, got 'x'",
        ),
        ("all:\n  hosts:\n    h1: 3\n", "3:9: host 'h1': expected a mapping of variables, got int 3"),
        (
            "all:\n  children:\n    web: 5\n",
            "3:10: group 'web': expected a mapping with hosts, children or vars, got int 5",
        ),
        ("all:\n  hosts:\n    'h[3:1]':\n", "3:6: a host range goes up: [3:1] ends below its start"),
        (
            "web:\n  hosts:\n    h1:\n  children:\n    all:\n",
            "5:5: 'all' is every group's parent; it cannot be a child",
        ),
        ("all:\n  hosts:\n    h1:\n    h1:\n", "3:5: duplicate key 'h1' (defined again at line 4)"),
    ],
)
def test_yaml_inventory_errors_are_positioned(text: str, expected: str) -> None:
    errors = _errors(text, "hosts.yml")
    assert errors and errors[0].startswith(f"hosts.yml:{expected}"), errors


# --- CSV ---------------------------------------------------------------------------------------


def test_a_csv_inventory_makes_an_environment_per_env_value_with_its_var_columns() -> None:
    inventory = _parse(
        """\
        # exported from the room sheet
        env,role,host,port,user,identity,var.seat,var.room
        cand-001,web,10.0.1.11,22,root,keys/exam,12,B
        cand-001,db,10.0.1.12,,,,12,
        cand-002,web,10.0.2.11,2222,exam,,"0644","a, b"
        """,
        "/exam/room.csv",
    )
    one, two = inventory.environments
    assert (one.name, one.span.line, sorted(one.hosts)) == ("cand-001", 3, ["db", "web"])
    assert one.hosts["web"].identity == "/exam/keys/exam"
    assert one.given == {"web": frozenset({"host", "port", "user", "identity"}), "db": frozenset({"host"})}
    assert dict(one.vars) == {"seat": 12, "room": "B"}
    assert (two.hosts["web"].port, two.hosts["web"].user) == (2222, "exam")
    assert dict(two.vars) == {"seat": "0644", "room": "a, b"}


def test_a_csv_header_without_commas_may_use_semicolons() -> None:
    inventory = _parse("env;role;host;port\ne;web;h;2222\n", "room.csv")
    assert inventory.environments[0].hosts["web"].port == 2222


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "1:1: an empty CSV inventory"),
        ("env,role,host\n", "1:1: no hosts: a CSV inventory has a row per host below its header"),
        ("env,role\n", "1:1: the header lacks column host"),
        ("env,role,host,colour\ne,web,h,red\n", "1:15: unknown column 'colour'"),
        ("env,role,host,prot\ne,web,h,1\n", "1:15: unknown column 'prot' (columns: env, role, host, port"),
        ("env,role,host,env\n", "1:15: column 'env' twice (first at column 1)"),
        ("env,role,host,var.\n", "1:15: a var. column names its variable: var.NAME"),
        ("env,role,host\ne,web\n", "2:1: this row has 2 fields, the header 3"),
        ("env,role,host\ne,web,h,extra\n", "2:9: this row has 4 fields, the header 3"),
        ("env,role,host\n,web,h\n", "2:1: env: empty (every row needs env, role and host)"),
        ("env,role,host,port\ne,web,h,22x\n", "2:9: port: a port is a number from 1 to 65535, got '22x'"),
        ("env,role,host,insecure\ne,web,h,maybe\n", "2:9: insecure: expected true or false, got 'maybe'"),
        ("env,role,host\ne 1,web,h\n", "2:1: environment names are letters, digits, '_', '.' or '-': 'e 1'"),
        ("env,role,host\ne,Web,h\n", "2:3: role names must be lowercase letters"),
        ("env,role,host\ne,vars,h\n", "2:3: 'vars' is not a role name"),
        ("env,role,host\ne,web,h\ne,web,h2\n", "3:3: environment 'e' has role 'web' twice (first at line 2)"),
        ("env,role,host,var.seat\ne,web,h,1\ne,db,h2,2\n", "3:9: environment 'e': var.seat is 2 here, 1 at line 2"),
        ('env,role,host\ne,"web,h\n', "2:3: a quoted field that is not closed on its line"),
        ('env,role,host\ne,"web"x,h\n', "2:8: text after a quoted field"),
    ],
)
def test_csv_errors_are_at_the_row_and_the_field(text: str, expected: str) -> None:
    errors = _errors(text, "room.csv")
    assert len(errors) >= 1 and errors[0].startswith(f"room.csv:{expected}"), errors


# --- environments per host or per group, and roles -----------------------------------------------

ROOM = """\
[web]
c1-web ansible_host=10.0.1.11
c2-web ansible_host=10.0.2.11
[db]
c1-db ansible_host=10.0.1.12
c2-db ansible_host=10.0.2.12
[cand1]
c1-web
c1-db
[cand2]
c2-web
c2-db
"""


def test_per_host_every_host_is_an_environment_and_per_group_every_group_with_hosts() -> None:
    per_host = _parse(ROOM, "hosts.ini")
    assert [e.name for e in per_host.environments] == ["c1-web", "c2-web", "c1-db", "c2-db"]
    per_group = _parse(ROOM, "hosts.ini", env_per="group")
    assert [e.name for e in per_group.environments] == ["web", "db", "cand1", "cand2"]
    # with the scenario's roles known, the groups named like roles are the roles' groups
    envs, errors = per_group.placed({"web", "db"})
    assert errors == []
    assert {e.name: {r: t.host for r, t in e.hosts.items()} for e in envs} == {
        "cand1": {"web": "10.0.1.11", "db": "10.0.1.12"},
        "cand2": {"web": "10.0.2.11", "db": "10.0.2.12"},
    }


def test_a_single_role_scenario_gives_every_host_its_role() -> None:
    envs, errors = _parse("h1\nh2\n", "hosts").placed({"web"})
    assert errors == [] and [(e.name, list(e.hosts)) for e in envs] == [("h1", ["web"]), ("h2", ["web"])]


def test_chaosrun_role_decides_and_may_name_several_roles() -> None:
    inventory = _parse("[cand1]\nbox chaosrun_role=web,db\n", "hosts.ini")
    envs, errors = inventory.placed({"web", "db"})
    assert errors == [] and sorted(envs[0].hosts) == ["db", "web"]


@pytest.mark.parametrize(
    ("text", "env_per", "expected"),
    [
        (
            "[cand1]\nbox\n",
            "host",
            "hosts.ini:2:1: host 'box': which role does it play? The scenario has db, web "
            "(set the host variable chaosrun_role, or put the host in a group named after its role)",
        ),
        (
            "[cand1]\na chaosrun_role=web\nb chaosrun_role=web\n",
            "group",
            "hosts.ini:3:1: environment 'cand1': hosts 'a' and 'b' both play role 'web' "
            "(set chaosrun_role on each host to the role it plays)",
        ),
        (
            "[cand1]\na chaosrun_role=web\n[cand2]\na\n",
            "group",
            "hosts.ini:2:1: host 'a' is in two environments, 'cand1' and 'cand2' (a host belongs to one candidate's group)",
        ),
        (
            "[web]\nlost\n[cand1]\na chaosrun_role=web\n",
            "group",
            "hosts.ini:2:1: host 'lost' is in no environment "
            "(with --env-per group, each host is in the group of its candidate)",
        ),
    ],
)
def test_roles_that_cannot_be_decided_are_errors_at_the_host(text: str, env_per: str, expected: str) -> None:
    _, errors = _parse(text, "hosts.ini", env_per=env_per).placed({"web", "db"})
    assert str(errors[0]) == expected


def test_plan_reports_role_mapping_problems_at_the_inventory_position(tmp_path: Path) -> None:
    scenario_path = tmp_path / "s.yaml"
    scenario_path.write_text(
        "version: 1\nname: t\nsteps:\n"
        "  - { id: a, target: web, chaos: kill_process, with: { name: x } }\n"
        "  - { id: b, target: db, chaos: kill_process, with: { name: x } }\n"
    )
    inventory_path = tmp_path / "hosts.ini"
    inventory_path.write_text(ROOM)
    scenario = load_scenario(scenario_path)
    with pytest.raises(ScenarioErrors) as info:
        build_plan(scenario, seed=1, inventory=load_inventory(inventory_path))
    first = info.value.errors[0]
    assert str(first).startswith(
        f"{inventory_path}:2:1: environment 'c1-web' has no host for role 'db' (with --env-per host"
    )
    plan = build_plan(scenario, seed=1, inventory=load_inventory(inventory_path, env_per="group"))
    assert [e.name for e in plan.environments] == ["cand1", "cand2"]


# --- the command line ----------------------------------------------------------------------------


def _run(*argv: str, cwd: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_lint_checks_every_format_alone(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text(ROOM)
    (tmp_path / "room.csv").write_text("env,role,host\ncand-001,web,10.0.0.1\n")
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    h1:\n")
    assert _run("lint", "hosts", "room.csv", "hosts.yml", cwd=tmp_path) == (0, "", "ok: 3 files checked\n")
    (tmp_path / "bad.ini").write_text("[web]\nh1 ansible_port=x\n")
    (tmp_path / "bad.csv").write_text("env,role,host,port\ne,web,h,x\n")
    code, out, _ = _run("lint", "bad.ini", "bad.csv", cwd=tmp_path)
    assert code == 1
    assert out.splitlines() == [
        "bad.ini:2:17: ansible_port: a port is a number from 1 to 65535, got 'x'",
        "bad.csv:2:9: port: a port is a number from 1 to 65535, got 'x'",
    ]


def test_plan_takes_env_per(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        "version: 1\nname: t\nsteps:\n"
        "  - { id: a, target: web, chaos: kill_process, with: { name: x } }\n"
        "  - { id: b, target: db, chaos: kill_process, with: { name: x } }\n"
    )
    (tmp_path / "hosts").write_text(ROOM)
    code, out, err = _run("plan", "s.yaml", "-i", "hosts", "--env-per", "group", "--seed", "1", cwd=tmp_path)
    assert code == 0, out + err
    assert "environment cand1\n  db: root@10.0.1.12:22\n  web: root@10.0.1.11:22\n" in out
    code, out, _ = _run("plan", "s.yaml", "-i", "hosts", "--seed", "1", cwd=tmp_path)
    assert code == 1 and "hosts:2:1: environment 'c1-web' has no host for role 'db'" in out
