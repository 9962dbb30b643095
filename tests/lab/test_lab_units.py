"""The lab's parts that need no VM: KVM detection, the recipe's hash, addresses and ports,
the inventory it writes, the qemu command line, and the errors raised before anything starts.

The ones that run the ``chaosrun`` command stop before booting anything (a tool missing, too
little memory), so they take a second each. Loopback addresses only (127.0.0.N).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
from pathlib import Path

import pytest
from lab_support import chaosrun, chaosrun_argv

from chaosrun.inventory import load_inventory
from chaosrun.lab import Image, LabState, PortTakenError, VmRecord, scenario_lab
from chaosrun.lab.accel import KVM_ARGS, TCG_ARGS, choose_accel, cpu_virt_flags, detect_accel
from chaosrun.lab.errors import LabError
from chaosrun.lab.network import Forward, allocate_addresses, check_forwards, forwards_for, ports_from_scenario
from chaosrun.lab.recipe import CUSTOMIZE, PACKAGES, RECIPE, Recipe, recipe_id
from chaosrun.lab.state import generate_key, known_hosts_line, load_state, save_state, write_inventory
from chaosrun.lab.vm import VmFiles, console_tail, qemu_command
from chaosrun.lab.warm import crash_line
from chaosrun.lint import lint_scenario, load_scenario
from chaosrun.plan import build_plan

CPUINFO_TCG = (
    "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr pae sse sse2 hypervisor\n\nprocessor\t: 1\nflags\t\t: fpu sse2\n"
)
CPUINFO_VMX = "processor\t: 0\nflags\t\t: fpu vme vmx sse2\n"
CPUINFO_SVM = "processor\t: 0\nflags\t\t: fpu svm sse2\n"


# -- KVM or TCG -----------------------------------------------------------------------------


def test_no_vmx_or_svm_flag_means_tcg_even_when_dev_kvm_exists(tmp_path: Path) -> None:
    device = tmp_path / "kvm"
    device.write_text("")
    accel = detect_accel(CPUINFO_TCG, device)
    assert (accel.name, accel.args) == ("tcg", TCG_ARGS)
    assert accel.reason == f"the CPU has no vmx/svm flag ({device} exists, but a KVM guest would hang)"
    assert TCG_ARGS == ("-accel", "tcg,thread=multi", "-cpu", "max")


@pytest.mark.parametrize("cpuinfo, flag", [(CPUINFO_VMX, "vmx"), (CPUINFO_SVM, "svm")])
def test_a_flag_and_a_usable_device_mean_kvm(tmp_path: Path, cpuinfo: str, flag: str) -> None:
    device = tmp_path / "kvm"
    device.write_text("")
    accel = detect_accel(cpuinfo, device)
    assert (accel.name, accel.args) == ("kvm", KVM_ARGS)
    assert flag in accel.reason


def test_a_flag_without_the_device_means_tcg(tmp_path: Path) -> None:
    accel = detect_accel(CPUINFO_VMX, tmp_path / "missing")
    assert accel.name == "tcg" and "does not exist" in accel.reason


def test_a_device_that_does_not_open_means_tcg(tmp_path: Path) -> None:
    # A directory refuses O_RDWR even to root, as a node without a driver would (EISDIR, ENXIO).
    device = tmp_path / "kvm"
    device.mkdir()
    accel = detect_accel(CPUINFO_VMX, device)
    assert accel.name == "tcg" and accel.reason.startswith(f"cannot open {device}: ")


def test_the_flags_are_read_only_from_flags_lines() -> None:
    assert cpu_virt_flags("model name\t: vmx svm lookalike\nflags\t: sse2\n") == set()
    assert cpu_virt_flags(CPUINFO_VMX + CPUINFO_SVM) == {"vmx", "svm"}


def test_the_accelerator_can_be_forced_and_a_wrong_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_accel("tcg").name == "tcg"
    assert choose_accel("KVM").name == "kvm"
    monkeypatch.setenv("CHAOSRUN_LAB_ACCEL", "tcg")
    assert choose_accel().name == "tcg"
    with pytest.raises(LabError, match="unknown accelerator 'xen'"):
        choose_accel("xen")


def test_this_machine_without_vmx_or_svm_gets_tcg() -> None:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    if cpu_virt_flags(cpuinfo):
        pytest.skip("this CPU has hardware virtualisation")
    assert choose_accel("auto").name == "tcg"


# -- the recipe's hash ----------------------------------------------------------------------


def test_the_recipe_id_is_16_hex_digits_and_stable() -> None:
    assert recipe_id() == recipe_id(Recipe())
    assert len(recipe_id()) == 16 and int(recipe_id(), 16) >= 0


def test_the_package_order_does_not_change_the_image() -> None:
    assert recipe_id(dataclasses.replace(RECIPE, packages=tuple(reversed(PACKAGES)))) == recipe_id()


@pytest.mark.parametrize(
    "change",
    [
        {"packages": (*PACKAGES, "htop")},
        {"customize": CUSTOMIZE + "\necho one more line\n"},
        {"version": RECIPE.version + 1},
        {"suite": "trixie"},
        {"size": "4G"},
    ],
)
def test_anything_in_the_recipe_makes_another_image(change: dict[str, object]) -> None:
    assert recipe_id(dataclasses.replace(RECIPE, **change)) != recipe_id()  # type: ignore[arg-type]


def test_the_image_has_what_an_exam_machine_needs() -> None:
    for package in ("linux-image-amd64", "systemd-sysv", "openssh-server", "nginx", "nftables", "cron", "rsyslog"):
        assert package in PACKAGES
    for package in ("sudo", "curl", "e2fsprogs", "iproute2", "procps"):
        assert package in PACKAGES
    assert "useradd --create-home --shell /bin/bash --groups sudo candidate" in CUSTOMIZE
    assert "systemctl enable chaosrun-lab-keys.service" in CUSTOMIZE
    assert 'rm -f "$root"/etc/ssh/ssh_host_*' in CUSTOMIZE  # no host key shared by every VM


# -- addresses and ports --------------------------------------------------------------------


def _free_port(address: str) -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, 0))
    sock.listen(1)
    return sock, sock.getsockname()[1]


def test_addresses_start_at_127_0_0_2_and_skip_one_whose_ssh_port_is_taken() -> None:
    first, port = _free_port("127.0.0.2")
    try:
        got = allocate_addresses(2, ssh_port=port)
    finally:
        first.close()
    assert got[0] != "127.0.0.2"
    assert all(a.startswith("127.0.0.") and a not in ("127.0.0.1", "127.0.0.2") for a in got)
    assert len(set(got)) == 2
    assert allocate_addresses(1, ssh_port=port) == ["127.0.0.2"]  # free again


def test_addresses_already_handed_out_are_not_handed_out_again() -> None:
    sock, port = _free_port("127.0.0.1")
    sock.close()
    assert allocate_addresses(1, ssh_port=port, exclude=["127.0.0.2"]) == ["127.0.0.3"]


def test_a_taken_service_port_is_the_one_line_error() -> None:
    sock, port = _free_port("127.0.0.5")
    try:
        with pytest.raises(PortTakenError) as caught:
            check_forwards("127.0.0.5", forwards_for([port], ssh_port=port + 1 if port < 65535 else port - 1))
    finally:
        sock.close()
    assert str(caught.value) == f"port 127.0.0.5:{port} is already taken (a VM of this lab would forward it)"
    check_forwards("127.0.0.5", [Forward("tcp", port, port)])  # free once closed


def test_ssh_and_service_ports_become_forwards_and_dns_is_udp_too() -> None:
    forwards = forwards_for((80, 443, 53))
    assert [(f.proto, f.host_port, f.guest_port) for f in forwards] == [
        ("tcp", 22, 22),
        ("tcp", 53, 53),
        ("udp", 53, 53),
        ("tcp", 80, 80),
        ("tcp", 443, 443),
    ]
    assert forwards_for((22,)) == (Forward("tcp", 22, 22),)
    assert forwards_for((22,), ssh_port=2222) == (Forward("tcp", 22, 22), Forward("tcp", 2222, 22))
    assert forwards[0].hostfwd("127.0.0.7") == "hostfwd=tcp:127.0.0.7:22-:22"


def _scenario(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yml"
    path.write_text(text)
    return path


TWO_ROLES = """version: 1
name: two-roles
monitor: { callback: tunnel }
vars: { web_port: 8080 }
targets:
  web: { host: 127.0.0.1 }
  db: { host: 127.0.0.1 }
steps:
  - { id: stop_web, target: web, chaos: stop_service, with: { service: nginx } }
verify:
  - { id: web_port, target: web, probe: port_open, with: { port: "${vars.web_port}" }, expect: result.open, points: 1 }
  - { id: tls, target: web, probe: port_open, with: { port: 443 }, expect: result.open, points: 1 }
  - { id: db_up, target: db, probe: service_active, with: { service: postgresql }, expect: result.active, points: 1 }
"""


def test_a_scenario_gives_its_roles_and_the_ports_its_probes_name(tmp_path: Path) -> None:
    scenario = load_scenario(_scenario(tmp_path, TWO_ROLES))
    assert lint_scenario(scenario) == []
    assert scenario_lab(scenario) == (("db", "web"), (443, 8080))
    assert ports_from_scenario(scenario) == (443, 8080)


# -- the inventory and the state ------------------------------------------------------------


def _state(tmp_path: Path, envs: int = 2) -> LabState:
    lab_dir = tmp_path / "lab.yml.lab"
    lab_dir.mkdir()
    generate_key(lab_dir / "id_ed25519", "lab")
    state = LabState(
        inventory=str(tmp_path / "lab.yml"),
        dir=str(lab_dir),
        image="0123456789abcdef",
        accel="tcg",
        accel_reason="test",
        memory_mib=1024,
        cpus=2,
        identity=str(lab_dir / "id_ed25519"),
        known_hosts=str(lab_dir / "known_hosts"),
        created_at=0.0,
    )
    n = 2
    for i in range(1, envs + 1):
        for role in ("db", "web"):
            host_key = generate_key(lab_dir / f"lab-{i}-{role}.host_key", "h")
            state = state.with_vm(
                VmRecord(
                    name=f"lab-{i}-{role}",
                    env=f"lab-{i}",
                    role=role,
                    address=f"127.0.0.{n}",
                    ssh_port=22,
                    forwards=forwards_for((80,)),
                    overlay=str(lab_dir / f"lab-{i}-{role}.qcow2"),
                    console=str(lab_dir / f"lab-{i}-{role}.console.log"),
                    host_key=" ".join(host_key.split()[:2]),
                    pid=None,
                )
            )
            n += 1
    return state


def test_the_inventory_lints_and_plans_every_role_on_its_vm(tmp_path: Path) -> None:
    state = _state(tmp_path)
    write_inventory(state)
    inventory_path = Path(state.inventory)
    assert inventory_path.read_text().startswith("# chaosrun lab inventory")
    done = chaosrun("lint", str(inventory_path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    scenario = load_scenario(_scenario(tmp_path, TWO_ROLES))
    plan = build_plan(scenario, seed=1, inventory=load_inventory(inventory_path))
    hosts = {(env.name, role): spec for env in plan.environments for role, spec in env.targets.items()}
    assert sorted(hosts) == [("lab-1", "db"), ("lab-1", "web"), ("lab-2", "db"), ("lab-2", "web")]
    web2 = hosts[("lab-2", "web")]
    assert (web2.host, web2.port, web2.user, web2.insecure, web2.tmp_dir) == ("127.0.0.5", 22, "root", False, "/tmp")
    assert (web2.identity, web2.known_hosts) == (state.identity, state.known_hosts)


def test_the_state_reads_back_as_written(tmp_path: Path) -> None:
    state = _state(tmp_path, envs=1)
    save_state(state)
    assert load_state(Path(state.inventory)) == state
    started = dataclasses.replace(state.vms[0], pid=1234, started_at=5.0)
    assert state.with_vm(started).vms == (started, state.vms[1])


def test_no_state_is_a_clear_error(tmp_path: Path) -> None:
    done = chaosrun("lab", "down", "-i", str(tmp_path / "nothing.yml"), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"chaosrun: no lab for {tmp_path / 'nothing.yml'}: {tmp_path / 'nothing.yml.lab' / 'state.json'} "
        "does not exist (was it made by `chaosrun lab up`?)"
    )


def test_known_hosts_lines_are_written_as_openssh_does() -> None:
    assert known_hosts_line("127.0.0.2", 22, "ssh-ed25519 AAAA c") == "127.0.0.2 ssh-ed25519 AAAA"
    assert known_hosts_line("127.0.0.2", 2222, "ssh-ed25519 AAAA") == "[127.0.0.2]:2222 ssh-ed25519 AAAA"


def test_a_generated_key_is_one_openssh_accepts(tmp_path: Path) -> None:
    public = generate_key(tmp_path / "key", "comment")
    assert oct((tmp_path / "key").stat().st_mode & 0o777) == "0o600"
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(tmp_path / "key")], capture_output=True, text=True)
    assert derived.returncode == 0, derived.stderr
    assert derived.stdout.split()[:2] == public.split()[:2]


# -- the qemu command line ------------------------------------------------------------------


def test_the_qemu_command_isolates_the_guest_and_hands_it_its_keys(tmp_path: Path) -> None:
    image = Image("0123456789abcdef", tmp_path / "image")
    files = VmFiles(tmp_path, "lab-1-web")
    command = qemu_command(
        "qemu-system-x86_64",
        image,
        choose_accel("tcg"),
        files,
        address="127.0.0.4",
        forwards=forwards_for((80,)),
        authorized_keys=tmp_path / "id_ed25519.pub",
        memory_mib=768,
        cpus=1,
    )
    text = " ".join(command)
    assert "-netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.4:22-:22,hostfwd=tcp:127.0.0.4:80-:80" in text
    assert "-accel tcg,thread=multi,tb-size=256 -cpu max -smp 1 -m 768" in text
    assert f"-kernel {image.kernel} -initrd {image.initrd}" in text
    assert "root=/dev/vda rw console=ttyS0 net.ifnames=0" in text
    assert f"file={files.overlay},format=qcow2" in text  # the overlay, never the base image
    assert str(image.disk) not in text
    for item in ("host_key", "host_key.pub", "authorized_keys", "hostname"):
        assert f"name=opt/chaosrun/{item}," in text
    assert f"path={files.console}" in text
    assert command[-3:] == ["-daemonize", "-pidfile", str(files.pidfile)]


def test_the_console_tail_is_one_line(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"first\r\n\r\n[  1.0]  second   line\nthird\n")
    assert console_tail(log, lines=2) == "[ 1.0] second line | third"
    assert console_tail(tmp_path / "missing") == "(no console log)"
    (tmp_path / "empty").write_text("")
    assert console_tail(tmp_path / "empty") == "(the console stayed empty)"


#: The console of a VM restored from the saved VM whose kernel crashed (CI, under load).
RESTORED_AND_CRASHED = (
    b"[   18.352651] random: crng reseeded due to virtual machine fork\r\n"
    b"[   18.352651] BUG: unable to handle page fault for address: 0000557f1e302260\r\n"
    b"[   18.352651] #PF: supervisor read access in kernel mode\r\n"
    b"[   18.352651] CR2: 0000557f1e302260 CR3: 0000000005cb8000 CR4: 0000000000751ef0\r\n"
    b"[   18.352651] PKRU: 55555554\r\n"
    b"[   18.352651] note: kworker/0:1[17] exited with irqs disabled\r\n"
)


def test_a_crashed_kernel_is_found_in_the_console_and_a_slow_one_is_not(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(RESTORED_AND_CRASHED)
    assert crash_line(log) == "[ 18.352651] BUG: unable to handle page fault for address: 0000557f1e302260"
    log.write_bytes(b"[ 1.0] Kernel panic - not syncing: Fatal exception\n")
    assert crash_line(log) == "[ 1.0] Kernel panic - not syncing: Fatal exception"
    # a slow host, a clock that jumped: not a crash, so the restored VM is waited for
    log.write_bytes(
        b"[ 18.3] random: crng reseeded due to virtual machine fork\r\n"
        b"[ 40.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [kworker/0:1:17]\r\n"
        b"[ 41.0] rcu: INFO: rcu_preempt self-detected stall on CPU\r\n"
    )
    assert crash_line(log) == ""
    assert crash_line(tmp_path / "missing") == ""


# -- errors before anything starts ----------------------------------------------------------


def _bin_without(tmp_path: Path, missing: str) -> str:
    """A PATH holding this machine's programs except ``missing`` (links in a folder of our own)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("qemu-system-x86_64", "qemu-img", "ssh", "mmdebstrap"):
        found = subprocess.run(["sh", "-c", f"command -v {name}"], capture_output=True, text=True).stdout.strip()
        if found and name != missing:
            (folder / name).symlink_to(found)
    return str(folder)


def test_qemu_missing_says_which_package_to_install(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": _bin_without(tmp_path, "qemu-system-x86_64")}
    done = subprocess.run(
        [*chaosrun_argv(), "lab", "up", "-o", str(tmp_path / "lab.yml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "chaosrun: qemu-system-x86_64 is not installed: `apt-get install qemu-system-x86` "
        "(scripts/install installs what the lab needs)"
    )
    assert not (tmp_path / "lab.yml").exists() and not (tmp_path / "lab.yml.lab").exists()


def test_too_little_memory_is_said_before_anything_starts(tmp_path: Path) -> None:
    done = chaosrun("lab", "up", "-o", str(tmp_path / "lab.yml"), "--memory", "100000000", "--envs", "2", cwd=tmp_path)
    assert done.returncode == 1
    line = done.stderr.strip()
    assert line.startswith("chaosrun: not enough memory for 2 VM(s) of 100000000 MiB: "), line
    assert line.endswith("MiB needed; use --memory or fewer --envs")
    assert not (tmp_path / "lab.yml.lab").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--envs", "0"], "chaosrun: --envs must be at least 1, not 0"),
        (["--memory", "64"], "chaosrun: --memory must be at least 256 MiB, not 64"),
        (["--boot-timeout", "soon"], "chaosrun: --boot-timeout wants a duration such as 300s or 5m, not 'soon'"),
        (["--port", "70000"], "chaosrun: port 70000 is not a TCP port (1-65535)"),
    ],
)
def test_bad_settings_are_one_line(tmp_path: Path, argv: list[str], message: str) -> None:
    done = chaosrun("lab", "up", "-o", str(tmp_path / "lab.yml"), *argv, cwd=tmp_path)
    assert (done.returncode, done.stderr.strip()) == (1, message)


def test_an_inventory_not_written_by_the_lab_is_never_overwritten(tmp_path: Path) -> None:
    mine = tmp_path / "exam.yml"
    mine.write_text("environments:\n  cand-001: { web: { host: 127.0.0.1 } }\n")
    done = chaosrun("lab", "up", "-o", str(mine), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"chaosrun: {mine} exists and was not written by `chaosrun lab up`; choose another -o"
    )
    assert mine.read_text().startswith("environments:")
