"""The VM tier, probe half: every probe, on the target and from the monitor, grades a real
Debian machine (a lab VM of this module's own) in both directions. The test sets the state
itself, with the system's own tools over SSH: first a machine where every expectation holds
(each probe must give its points, and what it reports must match what the system says),
then one where every expectation fails (each probe must give none).

Network rule: the only address used is the VM's 127.0.0.N.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_support import LabVm, chaosrun, own_lab

from chaosrun.lab import Image

pytestmark = [pytest.mark.lab, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]

#: A machine where every expectation below holds.
GOOD = r"""set -eu
mkdir -p /etc/exam /srv/data
truncate -s 48M /var/lib/exam-data.img && mkfs.ext4 -q -F /var/lib/exam-data.img
printf '/var/lib/exam-data.img /srv/data ext4 loop 0 0\n' >> /etc/fstab && systemctl daemon-reload && mount /srv/data
printf 'here\n' > /etc/exam/exists.txt
printf 'name=lab\nanswer=42\n' > /etc/exam/contains.txt
printf 'secret\n' > /etc/exam/mode.txt && chmod 0640 /etc/exam/mode.txt && chown root:adm /etc/exam/mode.txt
systemd-run --quiet --unit exam-proc -p LimitNOFILE=4096 bash -c 'exec -a exam-proc sleep infinity'
printf '192.0.2.7 app.exam.test\n' >> /etc/hosts && systemctl restart dnsmasq
sysctl -q -w vm.swappiness=10 && printf 'vm.swappiness = 10\n' > /etc/sysctl.d/60-exam.conf
printf '*/5 * * * * /usr/local/bin/exam-backup --quick\n' | crontab -u candidate -
systemctl is-active --quiet nginx cron dnsmasq
"""

#: The same machine with every expectation broken, each by what an administrator would do.
BAD = r"""set -eu
systemctl stop nginx
rm /etc/exam/exists.txt
sed -i 's/^answer=42$/answer=41/' /etc/exam/contains.txt
chmod 0644 /etc/exam/mode.txt
systemctl stop exam-proc
fallocate -l "$(df --output=avail -B1 /srv/data | tail -1)" /srv/data/fill || true
systemctl disable --now cron
sed -i '/app.exam.test/d' /etc/hosts && systemctl restart dnsmasq
usermod --expiredate 1 candidate
rm /etc/sysctl.d/60-exam.conf  # the value stays 10 until the next boot
dpkg --remove --force-depends nginx >/dev/null 2>&1
crontab -u candidate -r
mount -o remount,ro /srv/data
nft add table inet exam && nft add chain inet exam input '{ type filter hook input priority 0; }'
nft add rule inet exam input tcp dport 80 reject with tcp reset  # not drop: qemu's user network would accept for the VM
printf 'flush ruleset\ntable inet filter {\n chain input {\n  type filter hook input priority 0;\n  tcp dport 80 drop\n }\n}\n' > /etc/nftables.conf
systemctl enable nftables 2>/dev/null
sed -i 's#^/var/lib/exam-data.img #UUID=0b6f2c1e-6c7a-4d55-9f5e-2a1f0e1d9c11 #' /etc/fstab
"""

SCENARIO = """version: 1
name: lab-tier-probes
description: every probe, on the target and from the monitor
monitor: {{ callback: tunnel }}
targets:
  target: {{ host: 127.0.0.1 }}
steps: []
verify:
  - {{ id: service_active, target: target, probe: service_active, with: {{ service: nginx }}, expect: result.active, points: 1 }}
  - {{ id: port_open, target: target, probe: port_open, with: {{ port: 80 }}, expect: result.open, points: 1 }}
  - {{ id: file_exists, target: target, probe: file_exists, with: {{ path: /etc/exam/exists.txt }}, expect: result.exists, points: 1 }}
  - id: file_contains
    target: target
    probe: file_contains
    with: {{ path: /etc/exam/contains.txt, pattern: "^answer=42$" }}
    expect: result.matches
    points: 1
  - id: file_mode
    target: target
    probe: file_mode
    with: {{ path: /etc/exam/mode.txt }}
    expect: result.mode == "0640" and result.group == "adm"
    points: 1
  - id: account
    target: target
    probe: account
    with: {{ user: candidate }}
    expect: result.exists and not result.expired and not result.locked and "sudo" in result.groups
    points: 1
  - id: unit
    target: target
    probe: unit
    with: {{ unit: exam-proc.service, properties: [ActiveState, LoadState, LimitNOFILE, ExecMainPID] }}
    expect: result.active and result.properties.LimitNOFILE == "4096"
    points: 1
  - {{ id: sysctl, target: target, probe: sysctl, with: {{ key: vm.swappiness }}, expect: result.value == "10" and result.persisted, points: 1 }}
  - {{ id: package, target: target, probe: package, with: {{ name: nginx, min_version: "1.22" }}, expect: result.version_ok, points: 1 }}
  - {{ id: cron, target: target, probe: cron, with: {{ match: "exam-backup", user: candidate }}, expect: result.present, points: 1 }}
  - {{ id: process_running, target: target, probe: process_running, with: {{ name: exam-proc }}, expect: result.running, points: 1 }}
  - id: mount
    target: target
    probe: mount
    with: {{ path: /srv/data }}
    expect: result.mounted and not result.read_only and result.fstype == "ext4" and result.fstab_ok
    points: 1
  - id: firewall
    target: target
    probe: firewall
    with: {{ port: 80 }}
    expect: result.open and result.boot_open
    points: 1
  - {{ id: disk_free, target: target, probe: disk_free, with: {{ path: /srv/data }}, expect: result.free_mb > 20, points: 1 }}
  - id: command
    target: target
    probe: command
    with: {{ command: "systemctl is-enabled cron" }}
    expect: result.exit_status == 0 and result.stdout == "enabled\\n"
    points: 1
  - id: http
    target: target
    from: monitor
    probe: http
    with: {{ port: 80, expect_status: 200, body_pattern: "nginx", timeout_ms: 8000 }}
    expect: result.status_matches and result.body_matches
    points: 1
  - id: http_target
    target: target
    probe: http
    with: {{ port: 80, body_pattern: "Welcome to nginx" }}
    expect: result.status_matches and result.body_matches and startswith(result.headers.server, "nginx")
    points: 1
  - id: port_open_monitor
    target: target
    from: monitor
    probe: port_open
    with: {{ port: 80, timeout_ms: 8000, settle_ms: 1500 }}  # qemu's user network accepts for the VM
    expect: result.open
    points: 1
  - id: dns
    target: target
    from: monitor
    probe: dns
    with: {{ name: app.exam.test, protocol: tcp, timeout_ms: 8000 }}  # UDP replies do not come back through qemu restrict=on
    expect: '"192.0.2.7" in result.addresses'
    points: 1
  - id: ssh_login
    target: target
    from: monitor
    probe: ssh_login
    with: {{ user: candidate, identity: {identity}, known_hosts: {known_hosts}, timeout_ms: 60000 }}
    expect: result.ok and result.user == "candidate"
    points: 1
"""


@pytest.fixture(scope="module")
def lab(lab_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabVm]:
    with own_lab(lab_image, tmp_path_factory.mktemp("tier-probes")) as vm:
        yield vm


def _sh(lab: LabVm, command: str) -> str:
    done = lab.ssh(command, timeout=180)
    assert done.returncode == 0, f"{command}: exit {done.returncode}: {done.stdout}{done.stderr}"
    return done.stdout.strip()


def _verify(lab: LabVm, folder: Path) -> dict[str, dict[str, Any]]:
    scenario = folder / "probes.yml"
    scenario.write_text(SCENARIO.format(identity=lab.state.identity, known_hosts=lab.state.known_hosts))
    done = chaosrun(
        "verify", str(scenario), "-i", str(lab.inventory), "--plain", "--audit", "audit", "--format", "json",
        cwd=folder, config=folder / "config", timeout=1200,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout + done.stderr
    (env,) = json.loads(done.stdout)["environments"]
    return {step["id"]: step for step in env["steps"]}


def _probes() -> list[str]:
    """Every probe there is: the modules of kind probe, and the monitor's."""
    on_target = [
        p.parent.name
        for p in (REPO / "chaos_go" / "modules").glob("*/params.schema.json")
        if json.loads(p.read_text()).get("x-kind") == "probe"
    ]
    monitor = [p.name.removesuffix(".schema.json") for p in (REPO / "schemas" / "monitor_probes").glob("*.json")]
    return sorted({*on_target, *monitor})


def test_every_probe_is_graded_on_the_real_machine() -> None:
    graded = set(re.findall(r"probe: (\w+)", SCENARIO))
    assert graded == set(_probes())
    assert "from: monitor\n    probe: http" in SCENARIO and "from: monitor\n    probe: port_open" in SCENARIO
    assert "id: http_target\n    target: target\n    probe: http" in SCENARIO  # and on the target


def test_every_probe_gives_its_points_where_the_state_is_right_and_none_where_it_is_not(
    lab: LabVm, tmp_path: Path
) -> None:
    _sh(lab, GOOD)
    good = _verify(lab, tmp_path)
    assert {k: s["points"] for k, s in good.items()} == dict.fromkeys(good, 1), json.dumps(good, indent=1)
    # what the probes report is what the system itself says
    df = _sh(lab, "df --output=avail,size -B1M /srv/data | tail -1").split()
    assert abs(good["disk_free"]["result"]["free_mb"] - int(df[0])) <= 1, (good["disk_free"]["result"], df)
    assert abs(good["disk_free"]["result"]["total_mb"] - int(df[1])) <= 1  # df -B1M rounds up
    pids = sorted(int(p) for p in _sh(lab, "pgrep -f '^exam-proc'").split())
    assert sorted(good["process_running"]["result"]["pids"]) == pids
    assert good["service_active"]["result"]["enabled"] == _sh(lab, "systemctl is-enabled nginx")
    assert good["file_mode"]["result"]["owner"] == "root" and good["file_mode"]["result"]["gid"] == int(
        _sh(lab, "getent group adm | cut -d: -f3")
    )
    assert good["file_contains"]["result"]["line_number"] == 2
    unit = good["unit"]["result"]["properties"]
    assert unit["ExecMainPID"] == _sh(lab, "systemctl show -P MainPID exam-proc"), unit
    assert unit["LimitNOFILE"] == _sh(
        lab, "cat /proc/$(systemctl show -P MainPID exam-proc)/limits | awk '/open files/ {print $4}'"
    )
    assert good["sysctl"]["result"]["value"] == _sh(lab, "sysctl -n vm.swappiness") == "10"
    assert good["sysctl"]["result"]["boot_file"] == "/etc/sysctl.d/60-exam.conf"
    assert good["package"]["result"]["version"] == _sh(lab, "dpkg-query -W -f '${Version}' nginx")
    (job,) = good["cron"]["result"]["jobs"]
    assert job["command"] == "/usr/local/bin/exam-backup --quick" and job["schedule"] == "*/5 * * * *"
    assert job["file"] == "/var/spool/cron/crontabs/candidate", job
    account = good["account"]["result"]
    assert (account["uid"], account["shell"]) == (int(_sh(lab, "id -u candidate")), "/bin/bash")
    assert sorted(account["groups"]) == sorted(_sh(lab, "id -Gn candidate").split())
    assert account["has_password"] and account["expires"] == ""
    fw = good["firewall"]["result"]
    assert (fw["verdict"], fw["boot_enabled"], fw["reason"]) == ("accept", False, ""), fw
    mount = good["mount"]["result"]
    assert (mount["source"], mount["fstab_options"]) == (_sh(lab, "findmnt -no SOURCE /srv/data"), "loop")
    assert ",".join(mount["options"]).startswith(_sh(lab, "findmnt -no VFS-OPTIONS /srv/data")), mount

    _sh(lab, BAD)
    live = _sh(lab, "nft list ruleset")
    bad = _verify(lab, tmp_path)
    assert {k: s["points"] for k, s in bad.items()} == dict.fromkeys(bad, 0), json.dumps(bad, indent=1)
    assert bad["file_contains"]["result"]["exists"] and not bad["file_contains"]["result"]["matches"]
    assert bad["disk_free"]["result"]["free_mb"] <= 1
    assert bad["service_active"]["result"]["state"] == "inactive"
    assert bad["sysctl"]["result"]["value"] == "10" and not bad["sysctl"]["result"]["persisted"]
    assert not bad["package"]["result"]["installed"], bad["package"]["result"]
    # dpkg dropped its status stanza (nothing of it is left); dpkg-query says the same in its words
    assert (bad["package"]["result"]["status"], bad["package"]["result"]["version"]) == ("", "")
    assert _sh(lab, "dpkg-query -W -f '${Status}' nginx 2>&1 || true").endswith("not-installed")
    assert bad["account"]["result"]["expired"] and bad["account"]["result"]["expires"] == "1970-01-02"
    fw = bad["firewall"]["result"]
    (handle,) = re.findall(r"reject with tcp reset # handle (\d+)", _sh(lab, "nft -a list chain inet exam input"))
    assert (fw["verdict"], fw["rule"], fw["boot_enabled"]) == ("reject", f"inet exam input handle {handle}", True), fw
    assert (fw["boot_verdict"], fw["boot_rule"]) == ("drop", "inet filter input handle 2"), fw
    assert _sh(lab, "nft list ruleset") == live, "judging the boot file left the live ruleset as it was"
    mount = bad["mount"]["result"]
    assert mount["mounted"] and mount["read_only"] and not mount["fstab_ok"], mount
    assert any(e.startswith("/srv/data: ") and "0b6f2c1e" in e for e in mount["fstab_errors"]), mount
