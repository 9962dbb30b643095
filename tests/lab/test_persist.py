"""``persist: true`` on a real lab VM: block_port and sysctl_set write their fault into the
boot configuration, so a real reboot (``chaosrun verify --reboot``) does not repair it; with
``persist: false`` the same faults are gone after that reboot.

One VM of its own (``chaosrun lab up --port 8080``), one ``chaosrun run`` of four steps and
one reboot: port 80 blocked with persist and 8080 without, net.ipv4.icmp_echo_ignore_all
set with persist and vm.swappiness without. nginx answers on both ports inside the VM.

From the monitor, a blocked port still accepts the TCP connection: qemu's user-mode
network (slirp) completes the handshake on the host side and only then connects to the
guest. So "blocked as seen from the monitor" is an HTTP request that gets no answer, and the
verify probe is ``http`` from the monitor, not ``port_open``.

Network rule: the only addresses used are the VM's 127.0.0.N on this machine.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_support import LabVm, chaosrun, own_lab

from chaosrun.lab import Image

pytestmark = [pytest.mark.lab, pytest.mark.e2e]

SCENARIO = """version: 1
name: lab-persist
description: faults with and without persist, graded after a real reboot
monitor: { callback: tunnel }
targets:
  target: { host: 127.0.0.1 }
steps:
  - { id: block_web, target: target, chaos: block_port, with: { port: 80, persist: true } }
  - { id: block_alt, target: target, chaos: block_port, with: { port: 8080 } }
  - id: no_ping
    target: target
    chaos: sysctl_set
    with: { key: net.ipv4.icmp_echo_ignore_all, value: "1", persist: true }
  - { id: swap, target: target, chaos: sysctl_set, with: { key: vm.swappiness, value: "10" } }
verify:
  - { id: web, target: target, from: monitor, probe: http, with: { port: 80, timeout_ms: 8000 }, expect: result.status == 200, points: 1 }
  - { id: alt, target: target, from: monitor, probe: http, with: { port: 8080, timeout_ms: 8000 }, expect: result.status == 200, points: 1 }
  - id: ping
    target: target
    probe: command
    with: { command: "printf %s $(cat /proc/sys/net/ipv4/icmp_echo_ignore_all)" }
    expect: result.stdout == "0"
    points: 1
  - id: swappiness
    target: target
    probe: command
    with: { command: "printf %s $(cat /proc/sys/vm/swappiness)" }
    expect: result.stdout == "60"
    points: 1
"""

#: A second nginx site, so that the persist=false rule has a live service to block too.
ALT_SITE = 'server { listen 8080; location / { return 200 "alt\\n"; } }'


@pytest.fixture(scope="module")
def persist_vm(lab_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabVm]:
    """A VM of this module's own, with 8080 forwarded besides 80, 443 and 53."""
    with own_lab(lab_image, tmp_path_factory.mktemp("persist-lab"), "--port", "8080") as lab:
        yield lab


def _http(address: str, port: int, wait: float = 8) -> bytes:
    """The first bytes of the answer to a GET, or b"" when none comes within ``wait`` s."""
    try:
        with socket.create_connection((address, port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n")
            sock.settimeout(wait)
            return sock.recv(64)
    except OSError:  # refused, reset, or no answer in time
        return b""


def _answers(address: str, port: int) -> bool:
    return _http(address, port).startswith(b"HTTP/1.1 200")


def _ssh(vm: LabVm, command: str) -> str:
    done = vm.ssh(command)
    assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
    return done.stdout


def _chaosrun(vm: LabVm, tmp_path: Path, scenario: Path, *args: str) -> tuple[dict, float]:  # type: ignore[type-arg]
    started = time.monotonic()
    done = chaosrun(
        *args[:1], str(scenario), "-i", str(vm.inventory), "--plain", "--audit", "audit", "--format", "json",
        *args[1:], cwd=tmp_path, config=tmp_path / "config", timeout=900,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return json.loads(done.stdout), seconds


def _steps(report: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    (env,) = report["environments"]
    return {step["id"]: step for step in env["steps"]}


def test_persisted_faults_survive_a_real_reboot_the_others_do_not(persist_vm: LabVm, tmp_path: Path) -> None:
    vm, address = persist_vm, persist_vm.vm.address
    _ssh(vm, f"echo '{ALT_SITE}' > /etc/nginx/conf.d/alt.conf && systemctl reload nginx")
    deadline = time.monotonic() + 60  # a reload returns before the new workers listen
    while not _answers(address, 8080) and time.monotonic() < deadline:
        time.sleep(1)
    assert _answers(address, 80) and _answers(address, 8080), "nginx answers on both ports before the run"
    was_enabled = vm.ssh("systemctl is-enabled nftables.service").stdout.strip()
    assert _ssh(vm, "cat /proc/sys/net/ipv4/icmp_echo_ignore_all /proc/sys/vm/swappiness").split() == ["0", "60"]

    scenario = tmp_path / "persist.yml"
    scenario.write_text(SCENARIO)
    report, run_seconds = _chaosrun(vm, tmp_path, scenario, "run")
    steps = _steps(report)
    assert report["ok"], json.dumps(steps, indent=1)
    assert steps["block_web"]["result"]["persist_files"] == ["/etc/nftables.d/local.nft", "/etc/nftables.conf"]
    assert steps["block_alt"]["result"]["persist_files"] == []
    assert steps["no_ping"]["result"]["persist_file"] == "/etc/sysctl.d/60-local.conf"
    assert steps["swap"]["result"]["persist_file"] == ""

    # before the reboot every fault is live: both ports blocked while nginx runs, both values set
    assert _ssh(vm, "systemctl is-active nginx").strip() == "active"
    assert not _answers(address, 80) and not _answers(address, 8080), "both ports are blocked after the run"
    assert _ssh(vm, "cat /proc/sys/net/ipv4/icmp_echo_ignore_all /proc/sys/vm/swappiness").split() == ["1", "10"]
    # and only the persisted ones are in the boot configuration
    assert _ssh(vm, "systemctl is-enabled nftables.service").strip() == "enabled"
    assert "tcp dport 80 drop" in _ssh(vm, "cat /etc/nftables.d/local.nft")
    assert _ssh(vm, "tail -n 1 /etc/nftables.conf").strip() == 'include "/etc/nftables.d/local.nft"'
    assert _ssh(vm, "cat /etc/sysctl.d/60-local.conf") == "net.ipv4.icmp_echo_ignore_all = 1\n"
    assert "8080" not in _ssh(vm, "cat /etc/nftables.d/local.nft /etc/nftables.conf")
    assert _ssh(vm, "grep -rh '^[^#;]*swappiness' /etc/sysctl.d /usr/lib/sysctl.d; true") == ""

    before = _ssh(vm, "cat /proc/sys/kernel/random/boot_id").strip()
    graded, verify_seconds = _chaosrun(vm, tmp_path, scenario, "verify", "--reboot")
    after = _ssh(vm, "cat /proc/sys/kernel/random/boot_id").strip()
    assert after not in ("", before), "the VM really rebooted"
    points = {step_id: step["points"] for step_id, step in _steps(graded).items()}
    assert points == {"web": 0, "alt": 1, "ping": 0, "swappiness": 1}, json.dumps(_steps(graded), indent=1)

    # after the reboot, seen for ourselves: nginx runs, 80 is still blocked from the monitor, 8080 answers
    assert _ssh(vm, "systemctl is-active nginx nftables.service").split() == ["active", "active"]
    assert not _answers(address, 80), "the persisted rule is back after the reboot"
    assert _answers(address, 8080), "the rule without persist is gone after the reboot"
    ruleset = _ssh(vm, "nft list ruleset")
    assert "tcp dport 80 drop" in ruleset and "dport 8080" not in ruleset, ruleset
    assert _ssh(vm, "cat /proc/sys/net/ipv4/icmp_echo_ignore_all /proc/sys/vm/swappiness").split() == ["1", "60"]
    print(f"nftables.service before the run: {was_enabled}; chaosrun run: {run_seconds:.1f} s; "
          f"verify --reboot: {verify_seconds:.1f} s")  # fmt: skip


#: A firewall as an exam machine might have one: drop by default, the exam's ports open.
FIREWALL = r"""flush ruleset
table inet exam {
  chain input {
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    iif lo accept
    tcp dport 22 accept
    tcp dport { 80, 443, 8080 } accept
    udp dport 53 accept
    icmp type echo-request accept
  }
}
"""

SHORTCUTS = """version: 1
name: lab-shortcuts
description: nginx stopped and a port blocked; the candidate takes every shortcut there is
monitor: { callback: tunnel }
targets:
  target: { host: 127.0.0.1 }
steps:
  - { id: stop_web, target: target, chaos: stop_service, with: { service: nginx } }
  - { id: block_alt, target: target, chaos: block_port, with: { port: 8080 } }
verify:
  - { id: web, target: target, probe: service_active, with: { service: nginx }, expect: result.active, points: 1 }
guards:
  - { target: target, firewall: true, penalty: 2 }
  - { target: target, unit: nginx, penalty: 1 }
  - { target: target, tool: curl, penalty: 1 }
  - { target: target, sudoers: true, penalty: 1 }
  - { target: target, pam: true, penalty: 1 }
"""


def _shortcuts(report: dict) -> dict[str, list[dict]]:  # type: ignore[type-arg]
    (env,) = report["environments"]
    assert env["guarded"] == "ok", env
    out: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for cut in env["shortcuts"]:
        out.setdefault(cut["kind"], []).append(cut)
    return out


def test_the_guard_pass_finds_the_shortcuts_a_real_machine_allows(persist_vm: LabVm, tmp_path: Path) -> None:
    """After the reboot test above (its faults stay: they are not this scenario's)."""
    vm = persist_vm
    _ssh(vm, f"cat > /etc/nftables.conf <<'EOF'\n{FIREWALL}EOF\nnft -f /etc/nftables.conf && systemctl enable nftables")
    _ssh(vm, "rm -f /etc/nftables.d/local.nft; systemctl start nginx")
    scenario = tmp_path / "shortcuts.yml"
    scenario.write_text(SHORTCUTS)
    report, _ = _chaosrun(vm, tmp_path, scenario, "run")
    assert report["ok"], json.dumps(report, indent=1)
    baseline = json.loads(
        next(line for line in (tmp_path / report["audit"]).read_text().splitlines() if '"event":"baseline"' in line)
    )["posture"]
    assert baseline["firewall"]["live"]["rules"] == 6 and baseline["units"]["nginx.service"]["file_state"] == "enabled"

    # one rule of the exam's deleted besides the chaos's own (as many rules as before, one gone)
    _ssh(
        vm, "nft delete rule inet exam input handle $(nft -a list chain inet exam input | awk '/dport 53/ {print $NF}')"
    )
    graded, _ = _chaosrun(vm, tmp_path, scenario, "verify")
    found = _shortcuts(graded)
    assert [k for k in found if k.startswith("firewall")] == ["firewall_rule_deleted"], found
    assert found["firewall_rule_deleted"][0]["penalty"] == 2 and graded["environments"][0]["penalty"] == 2

    # then every shortcut at once: the service comes back, but at what cost
    _ssh(
        vm,
        "nft flush ruleset && : > /etc/nftables.conf && systemctl disable nftables"
        " && systemctl mask nginx"
        " && printf '#!/bin/sh\\necho 200\\n' > /usr/local/bin/curl && chmod 755 /usr/local/bin/curl"
        " && echo 'candidate ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/zz-shortcut"
        " && echo 'auth sufficient pam_permit.so' >> /etc/pam.d/su",
    )
    graded, _ = _chaosrun(vm, tmp_path, scenario, "verify")
    found = _shortcuts(graded)
    wanted = {"firewall_flushed", "firewall_opened", "boot_firewall_changed", "unit_masked", "tool_replaced",
              "sudoers_changed", "pam_changed"}  # fmt: skip
    assert wanted <= set(found), found
    assert "inet exam input" in found["firewall_opened"][0]["detail"]
    assert found["tool_replaced"][0]["detail"].startswith("curl: /usr/local/bin/curl is not the /usr/bin/curl")
    assert "/etc/sudoers.d/zz-shortcut added" in found["sudoers_changed"][0]["detail"]
    (env,) = graded["environments"]
    assert env["penalty"] == 6 and env["points"] == 0, env
    _ssh(vm, "systemctl unmask nginx; rm -f /usr/local/bin/curl /etc/sudoers.d/zz-shortcut")
