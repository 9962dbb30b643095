"""``chaosrun lab`` against real qemu VMs booted from the real Debian image: no mocks.

One VM (the session's ``lab_vm``) serves the tests that look at it; they leave it as they
found it (nginx running). The failure cases each start what they need and check that
nothing is left: no qemu process (looked up by PID and by the overlay's path), no overlay,
no lab folder, no inventory. The last test takes the shared VM down the way a user does.

Network rule: the only addresses used are 127.0.0.N on this machine and the guest's view
of them (10.0.2.2 is qemu's name for this machine).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from lab_support import BOOT_TIMEOUT, LabVm, chaosrun, chaosrun_argv

from chaosrun.lab import Image, ImageBuildError, PortTakenError, ensure_image, load_state
from chaosrun.lab.accel import choose_accel
from chaosrun.lab.network import Forward, allocate_addresses
from chaosrun.lab.recipe import RECIPE, recipe_id
from chaosrun.lab.state import generate_key, known_hosts_line
from chaosrun.lab.vm import VmFiles, create_overlay, find_qemu, qemu_alive, qemu_command, start_qemu

#: ``e2e`` too: these talk to a real sshd (in a VM), so a quick ``-m 'not e2e'`` loop leaves them out.
pytestmark = [pytest.mark.lab, pytest.mark.e2e]


def _qemu_pids_under(folder: Path) -> list[int]:
    """qemu processes whose command line names a file under ``folder`` (this test's own)."""
    needle = str(folder).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"qemu-system" in cmdline and needle in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def _assert_nothing_left(folder: Path, inventory: Path) -> None:
    assert _qemu_pids_under(folder) == []
    assert not inventory.exists()
    assert not inventory.with_name(inventory.name + ".lab").exists()
    assert list(folder.rglob("*.qcow2")) == []


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("chaosrun: ")]
    assert len(errors) == 1, stderr
    return errors[0]


# -- the shared VM --------------------------------------------------------------------------


def test_lab_up_from_nothing_gives_a_vm_answering_ssh_with_its_pinned_host_key(lab_vm: LabVm) -> None:
    state = lab_vm.state
    assert [(v.env, v.role) for v in state.vms] == [("lab-1", "target")]
    assert lab_vm.vm.address.startswith("127.0.0.") and lab_vm.vm.address != "127.0.0.1"
    assert qemu_alive(lab_vm.vm.pid, Path(lab_vm.vm.overlay))
    assert "answers SSH" in lab_vm.up_stderr
    known = Path(state.known_hosts).read_text().split()
    assert known == [lab_vm.vm.address, *lab_vm.vm.host_key.split()]
    done = lab_vm.ssh("cat /etc/ssh/ssh_host_ed25519_key.pub; id -un; hostname")
    assert done.returncode == 0, done.stderr
    host_key, user, hostname = done.stdout.split("\n")[:3]
    assert host_key.split()[:2] == lab_vm.vm.host_key.split()
    assert (user, hostname) == ("root", "target")
    print(f"lab up (image cached) to SSH: {lab_vm.up_seconds:.1f} s")


def test_a_wrong_host_key_is_refused(lab_vm: LabVm, tmp_path: Path) -> None:
    other = generate_key(tmp_path / "other_host_key", "not the lab's")
    wrong = tmp_path / "known_hosts"
    wrong.write_text(known_hosts_line(lab_vm.vm.address, lab_vm.vm.ssh_port, other) + "\n")
    done = lab_vm.ssh("true", known_hosts=wrong)
    assert done.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in done.stderr or "Host key verification failed" in done.stderr


def test_the_candidate_user_logs_in_with_the_lab_key_and_has_sudo(lab_vm: LabVm) -> None:
    from chaosrun.lab.login import ssh_command

    argv = ssh_command(
        "ssh",
        identity=lab_vm.state.identity,
        known_hosts=lab_vm.state.known_hosts,
        address=lab_vm.vm.address,
        port=lab_vm.vm.ssh_port,
        command="id -un; sudo -n id -un",
        user="candidate",
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["candidate", "root"]


def test_the_vm_runs_real_systemd_with_nginx_active(lab_vm: LabVm) -> None:
    done = lab_vm.ssh("cat /proc/1/comm; systemctl is-system-running; systemctl is-active nginx ssh cron rsyslog")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == ["systemd", "running", "active", "active", "active", "active"]
    web = lab_vm.ssh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1/")
    assert web.stdout == "200"


def test_a_service_port_is_forwarded_to_the_vms_own_address(lab_vm: LabVm) -> None:
    with socket.create_connection((lab_vm.vm.address, 80), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n")
        sock.settimeout(30)
        reply = sock.recv(64)
    assert reply.startswith(b"HTTP/1.1 200")


def test_lab_status_says_running_with_pid_address_accel_and_ssh(lab_vm: LabVm) -> None:
    done = chaosrun("lab", "status", "-i", str(lab_vm.inventory), "--format", "json", cwd=lab_vm.inventory.parent)
    assert done.returncode == 0, done.stderr
    (vm,) = json.loads(done.stdout)
    assert vm["running"] is True and vm["ssh"] is True
    assert vm["pid"] == lab_vm.vm.pid
    assert vm["address"] == lab_vm.vm.address
    assert vm["accel"] == choose_accel().name
    assert vm["uptime"] > 0
    text = chaosrun("lab", "status", "-i", str(lab_vm.inventory), cwd=lab_vm.inventory.parent)
    assert text.returncode == 0
    assert f"lab-1/target  {lab_vm.vm.address}:22" in text.stdout
    assert "running" in text.stdout and "answers" in text.stdout


def test_the_guest_reaches_nothing_outside(lab_vm: LabVm) -> None:
    # A listener on this machine's 127.0.0.1: without restrict=on the guest would reach it as 10.0.2.2.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        done = lab_vm.ssh(f"curl -sS -m 5 -o /dev/null http://10.0.2.2:{port}/; echo exit=$?")
        with pytest.raises(TimeoutError):
            listener.accept()
    assert "exit=0" not in done.stdout
    assert "exit=" in done.stdout, done.stderr
    # the same curl inside the guest works, so it is the network that refuses
    inside = lab_vm.ssh("curl -sS -m 5 -o /dev/null http://127.0.0.1/; echo exit=$?")
    assert "exit=0" in inside.stdout


def test_a_real_run_through_the_lab_inventory_stops_nginx_and_verify_sees_it(lab_vm: LabVm, tmp_path: Path) -> None:
    scenario = tmp_path / "stop-nginx.yml"
    scenario.write_text(
        "version: 1\n"
        "name: lab-stop-nginx\n"
        "description: stop nginx on a lab VM through real systemd\n"
        "monitor: { callback: tunnel }\n"
        "targets:\n  target: { host: 127.0.0.1 }\n"
        "steps:\n"
        "  - { id: stop_web, target: target, chaos: stop_service, with: { service: nginx } }\n"
        "verify:\n"
        "  - { id: web_down, target: target, probe: service_active, with: { service: nginx }, expect: result.active == false, points: 1 }\n"
    )
    config = tmp_path / "config"
    tmp_before = lab_vm.ssh("ls -A /tmp").stdout.split()
    try:
        run = chaosrun(
            "run",
            str(scenario),
            "-i",
            str(lab_vm.inventory),
            "--plain",
            "--audit",
            "audit",
            "--format",
            "json",
            cwd=tmp_path,
            config=config,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        (step,) = json.loads(run.stdout)["environments"][0]["steps"]
        assert (step["status"], step["result"]["before_active"], step["result"]["active"]) == (
            "ok",
            "active",
            "inactive",
        )
        # independently of chaosrun: real systemd says so
        assert lab_vm.ssh("systemctl is-active nginx").stdout.strip() == "inactive"
        verify = chaosrun(
            "verify",
            str(scenario),
            "-i",
            str(lab_vm.inventory),
            "--plain",
            "--audit",
            "audit",
            "--format",
            "json",
            cwd=tmp_path,
            config=config,
            timeout=600,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
        report = json.loads(verify.stdout)
        assert (report["points"], report["max_points"]) == (1.0, 1.0)
        probe = report["environments"][0]["steps"][0]["result"]
        assert (probe["active"], probe["state"]) == (False, "inactive")
        # nothing of chaosrun's is left in the guest's temp folder
        assert lab_vm.ssh("ls -A /tmp").stdout.split() == tmp_before
    finally:
        lab_vm.ssh("systemctl start nginx")
    assert lab_vm.ssh("systemctl is-active nginx").stdout.strip() == "active"


def test_the_vm_comes_back_from_a_reboot_with_the_same_pinned_host_key(lab_vm: LabVm) -> None:
    """The keys come from qemu's fw_cfg at every boot: a reboot changes nothing chaosrun relies on."""
    before = lab_vm.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()
    lab_vm.ssh("systemctl reboot")
    state = after = ""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            done = lab_vm.ssh("systemctl is-system-running --wait; cat /proc/sys/kernel/random/boot_id", timeout=60)
            words = done.stdout.split()
            if len(words) == 2 and words[1] != before:
                state, after = words
                break
    assert after, "the VM did not come back (pinned host key, lab key) within 600 s"
    assert state == "running"
    assert lab_vm.ssh("systemctl is-active nginx; hostname").stdout.split() == ["active", "target"]


# -- what goes wrong ------------------------------------------------------------------------


def test_a_port_already_taken_is_a_clear_error_and_nothing_is_left(lab_vm: LabVm, tmp_path: Path) -> None:
    (address,) = allocate_addresses(1)  # where the next VM would go (the shared VM's is taken)
    assert address != lab_vm.vm.address
    inventory = tmp_path / "taken.yml"
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((address, 80))
        squatter.listen(1)
        done = chaosrun("lab", "up", "-o", str(inventory), cwd=tmp_path)
    assert done.returncode == 1
    assert _one_error_line(done.stderr) == (
        f"chaosrun: port {address}:80 is already taken (a VM of this lab would forward it)"
    )
    _assert_nothing_left(tmp_path, inventory)


def test_qemu_itself_refusing_a_taken_port_gives_the_same_error_and_no_process(
    lab_image: Image, tmp_path: Path
) -> None:
    """The port can be taken between the check and qemu's bind: qemu's own refusal reads the same."""
    (address,) = allocate_addresses(1)
    files = VmFiles(tmp_path, "racy")
    generate_key(files.host_key, "racy")
    files.hostname.write_text("racy")
    keys = tmp_path / "id"
    generate_key(keys, "racy")
    create_overlay("qemu-img", lab_image, files.overlay)
    forwards = (Forward("tcp", 22, 22), Forward("tcp", 8080, 8080))
    command = qemu_command(
        "qemu-system-x86_64",
        lab_image,
        choose_accel(),
        files,
        address=address,
        forwards=forwards,
        authorized_keys=keys.with_name("id.pub"),
        memory_mib=256,
        cpus=1,
    )
    with socket.socket() as squatter:
        squatter.bind((address, 8080))
        squatter.listen(1)
        with pytest.raises(PortTakenError, match=rf"^port {address}:8080 is already taken"):
            start_qemu(command, files, address)
    assert find_qemu(files.overlay) is None
    assert _qemu_pids_under(tmp_path) == []


def test_ctrl_c_during_up_leaves_no_qemu_and_no_overlay(lab_image: Image, tmp_path: Path) -> None:
    inventory = tmp_path / "interrupted.yml"
    state_file = tmp_path / "interrupted.yml.lab" / "state.json"
    proc = subprocess.Popen(
        [*chaosrun_argv(), "lab", "up", "-o", str(inventory), "--boot-timeout", BOOT_TIMEOUT],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the SIGINT goes to chaosrun alone, as a Ctrl-C would reach it first
    )
    try:
        pid = None
        deadline = time.monotonic() + 120
        while pid is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                pid = json.loads(state_file.read_text())["vms"][0]["pid"]
        assert pid, "lab up never started its VM"
        overlay = Path(load_state(inventory).vms[0].overlay)
        assert qemu_alive(pid, overlay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not qemu_alive(pid, overlay)
    assert not Path(f"/proc/{pid}").exists() or "qemu" not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    _assert_nothing_left(tmp_path, inventory)


def test_a_vm_that_never_answers_fails_with_its_console_tail_and_leaves_nothing(
    lab_image: Image, tmp_path: Path
) -> None:
    inventory = tmp_path / "slow.yml"
    done = chaosrun("lab", "up", "-o", str(inventory), "--cold", "--boot-timeout", "2s", cwd=tmp_path)
    assert done.returncode == 1
    line = _one_error_line(done.stderr)
    assert "did not answer SSH within 2 s; console (" in line, line
    assert "slow.yml.lab/lab-1-target.console.log): " in line
    assert "stopped lab-1/target" in done.stderr
    _assert_nothing_left(tmp_path, inventory)


def test_an_image_build_that_fails_names_its_log_and_leaves_no_image(tmp_path: Path) -> None:
    """A recipe naming a package Debian does not have: mmdebstrap fails after apt's update."""
    recipe = dataclasses.replace(RECIPE, packages=(*RECIPE.packages, "chaosrun-no-such-package"))
    lines: list[str] = []
    with pytest.raises(ImageBuildError) as caught:
        ensure_image(lines.append, recipe=recipe, cache=tmp_path)
    message = str(caught.value)
    log = tmp_path / "images" / f"{recipe_id(recipe)}.build.log"
    assert message.startswith("building the lab image failed: mmdebstrap exited with status ")
    assert message.endswith(f"; see {log}")
    assert "chaosrun-no-such-package" in log.read_text()
    assert any("building the Debian 12 image" in line for line in lines)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted([log.name, f"{recipe_id(recipe)}.lock"])


# -- last: take the shared VM down -----------------------------------------------------------


def test_lab_down_leaves_no_qemu_process_and_no_overlay(lab_vm: LabVm, lab_image: Image) -> None:
    vm = lab_vm.vm
    overlay = Path(vm.overlay)
    assert qemu_alive(vm.pid, overlay) and overlay.exists()
    started = time.monotonic()
    done = chaosrun("lab", "down", "-i", str(lab_vm.inventory), cwd=lab_vm.inventory.parent)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert f"stopped lab-1/target (qemu pid {vm.pid})" in done.stderr
    assert not qemu_alive(vm.pid, overlay)
    assert vm.pid is not None
    try:
        cmdline = Path(f"/proc/{vm.pid}/cmdline").read_bytes()
    except OSError:
        cmdline = b""
    assert str(overlay).encode() not in cmdline
    _assert_nothing_left(lab_vm.inventory.parent, lab_vm.inventory)
    again = chaosrun("lab", "status", "-i", str(lab_vm.inventory), cwd=lab_vm.inventory.parent)
    assert again.returncode == 1 and "no lab for" in _one_error_line(again.stderr)
    # the VM wrote to its overlay only: the base image is as it was built
    assert lab_image.disk.stat().st_mtime_ns == lab_vm.base_mtime_ns
    print(f"lab down: {seconds:.2f} s")
