"""The saved VM (``chaosrun.lab.warm``): VMs restored from one saved VM in seconds, each
made a machine of its own; a saved VM that does not restore is forgotten and the lab boots
cold; a Ctrl-C while a VM is being saved leaves nothing. Real qemu, real VMs, no mocks.

The tests that need a saved VM in a state of their own (none yet, a broken one) use a cache
of their own (``XDG_CACHE_HOME``) whose ``images`` folder is the real cache's, so no image is
built twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from lab_support import BOOT_TIMEOUT, chaosrun, chaosrun_argv

from chaosrun.lab import Image, cache_dir, load_state
from chaosrun.lab.accel import choose_accel
from chaosrun.lab.image import find_tool
from chaosrun.lab.login import ssh_command
from chaosrun.lab.state import known_hosts_line
from chaosrun.lab.warm import ensure_warm, warm_path

pytestmark = [pytest.mark.lab, pytest.mark.e2e]


def _own_cache(tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    (cache / "chaosrun" / "lab").mkdir(parents=True)
    (cache / "chaosrun" / "lab" / "images").symlink_to(cache_dir() / "images")
    return cache


def _run_in(cache: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "COLUMNS": "200"}
    env.pop("CHAOSRUN_KEY", None)
    return subprocess.run([*chaosrun_argv(), *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _ssh(inventory: Path, index: int, command: str, identity: Path | None = None) -> subprocess.CompletedProcess[str]:
    state = load_state(inventory)
    vm = state.vms[index]
    argv = ssh_command(
        "ssh",
        identity=identity or state.identity,
        known_hosts=state.known_hosts,
        address=vm.address,
        port=vm.ssh_port,
        command=command,
    )
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_two_vms_restored_from_the_saved_vm_are_each_a_machine_of_their_own(lab_image: Image, tmp_path: Path) -> None:
    inventory = tmp_path / "two.yml"
    started = time.monotonic()
    up = chaosrun("lab", "up", "--envs", "2", "-o", str(inventory), "--boot-timeout", BOOT_TIMEOUT, cwd=tmp_path)
    seconds = time.monotonic() - started
    try:
        assert up.returncode == 0, up.stderr
        assert up.stderr.count("restoring the saved VM") == 2, up.stderr
        state = load_state(inventory)
        qemu = find_tool("qemu-system-x86_64", "qemu-system-x86")
        saved_key = warm_path(lab_image, choose_accel(None), qemu, 1024, 2) / "id_ed25519"  # the one restored
        seen = []
        for i, vm in enumerate(state.vms):
            done = _ssh(
                inventory,
                i,
                "cat /etc/ssh/ssh_host_ed25519_key.pub; hostname; date +%s; "
                "cat /root/.ssh/authorized_keys /home/candidate/.ssh/authorized_keys; "
                "cat /proc/sys/kernel/random/uuid",
            )
            assert done.returncode == 0, done.stderr
            lines = done.stdout.splitlines()
            host_key, hostname, clock, root_keys, user_keys, uuid = lines
            # its own host key, the one the lab pinned; its own name; the clock of now
            assert host_key.split()[:2] == vm.host_key.split()
            assert hostname == f"target-{i + 1}"
            assert abs(int(clock) - time.time()) < 30
            # only the lab's client key: the saved VM's is gone, and refused
            lab_key = Path(state.identity + ".pub").read_text().split()[:2]
            assert root_keys.split()[:2] == lab_key and user_keys.split()[:2] == lab_key
            refused = _ssh(inventory, i, "true", identity=saved_key)
            assert refused.returncode == 255, refused.stdout
            # the guest kernel knew it was a copy and reseeded its random numbers
            assert "crng reseeded due to virtual machine fork" in Path(vm.console).read_text(errors="replace")
            seen.append((host_key, uuid))
        assert seen[0][0] != seen[1][0] and seen[0][1] != seen[1][1]
        print(f"lab up --envs 2 from the saved VM: {seconds:.1f} s")
    finally:
        down = chaosrun("lab", "down", "-i", str(inventory), cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert down.stderr.count("lab: stopped") == 2, down.stderr
    assert not _qemu_pids_naming(tmp_path)  # no VM outlives its lab


def test_a_saved_vm_that_does_not_restore_is_forgotten_and_the_lab_boots_cold(lab_image: Image, tmp_path: Path) -> None:
    cache = _own_cache(tmp_path)
    said: list[str] = []
    qemu = find_tool("qemu-system-x86_64", "qemu-system-x86")
    warm = ensure_warm(
        lab_image,
        choose_accel(None),
        qemu,
        find_tool("qemu-img", "qemu-utils"),
        "ssh",
        memory_mib=1024,
        cpus=2,
        boot_timeout=float(BOOT_TIMEOUT.removesuffix("s")),
        progress=said.append,
        cache=cache / "chaosrun" / "lab",
    )
    assert any("booting a VM to save for fast starts" in line for line in said), said
    assert any("saved the VM in" in line for line in said), said
    assert warm.dir == warm_path(lab_image, choose_accel(None), qemu, 1024, 2, cache / "chaosrun" / "lab")
    (saved,) = (cache / "chaosrun" / "lab" / "saved").glob("*/saved.memory")
    saved.chmod(0o644)
    with open(saved, "r+b") as f:  # a memory file qemu cannot load
        f.truncate(4096)
    inventory = tmp_path / "b.yml"
    second = _run_in(cache, "lab", "up", "-o", str(inventory), "--boot-timeout", BOOT_TIMEOUT, cwd=tmp_path)
    try:
        assert second.returncode == 0, second.stderr
        assert "forgetting the saved VM and booting cold" in second.stderr, second.stderr
        assert "(qemu pid" in second.stderr and ", booting)" in second.stderr
        assert not saved.parent.exists()
        assert _ssh(inventory, 0, "true").returncode == 0
    finally:
        _run_in(cache, "lab", "down", "-i", str(inventory), cwd=tmp_path)


def _qemu_pids_naming(folder: Path) -> list[int]:
    needle = str(folder).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"qemu-system" in (entry / "cmdline").read_bytes() and needle in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_ctrl_c_while_a_vm_is_being_saved_leaves_no_qemu_and_no_saved_vm(lab_image: Image, tmp_path: Path) -> None:
    cache = _own_cache(tmp_path)
    saved = cache / "chaosrun" / "lab" / "saved"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    proc = subprocess.Popen(
        [*chaosrun_argv(), "lab", "up", "-o", str(tmp_path / "c.yml"), "--boot-timeout", BOOT_TIMEOUT],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not _qemu_pids_naming(saved) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        pids = _qemu_pids_naming(saved)
        assert pids, "the VM to be saved never started"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert _qemu_pids_naming(saved) == []
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or b"qemu" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert [p.name for p in saved.iterdir() if not p.name.endswith(".lock")] == []
    assert not (tmp_path / "c.yml").exists()


def test_the_saved_vm_records_what_it_is(lab_image: Image, tmp_path: Path) -> None:
    """What ``warm.json`` says is what `docs/lab.md` quotes: boot and save times, size."""
    up = chaosrun("lab", "up", "-o", str(tmp_path / "d.yml"), "--boot-timeout", BOOT_TIMEOUT, cwd=tmp_path)
    try:
        assert up.returncode == 0, up.stderr
    finally:
        chaosrun("lab", "down", "-i", str(tmp_path / "d.yml"), cwd=tmp_path)
    # the one this lab up used: the cache may also hold saved VMs of other images (an older
    # recipe), sizes, accelerators or kernel command lines, each under its own key
    qemu = find_tool("qemu-system-x86_64", "qemu-system-x86")
    info = json.loads((warm_path(lab_image, choose_accel(None), qemu, 1024, 2) / "warm.json").read_text())
    assert (info["image"], info["memory_mib"], info["cpus"]) == (lab_image.id, 1024, 2)
    assert 0 < info["save_seconds"] < 60 and info["memory_bytes"] > 50 * 1024**2
    print(
        f"saved VM: booted in {info['boot_seconds']} s, saved in {info['save_seconds']} s, {info['memory_bytes']} bytes"
    )


def test_known_hosts_lines_for_restored_vms_pin_their_own_keys(lab_image: Image, tmp_path: Path) -> None:
    inventory = tmp_path / "e.yml"
    up = chaosrun("lab", "up", "-o", str(inventory), "--boot-timeout", BOOT_TIMEOUT, cwd=tmp_path)
    try:
        assert up.returncode == 0, up.stderr
        state = load_state(inventory)
        vm = state.vms[0]
        saved_pub = next((cache_dir() / "saved").glob("*/saved.host_key.pub")).read_text()
        # the saved VM's host key no longer answers for the restored VM's address
        other = tmp_path / "known_hosts"
        other.write_text(known_hosts_line(vm.address, vm.ssh_port, saved_pub) + "\n")
        argv = ssh_command(
            "ssh", identity=state.identity, known_hosts=other, address=vm.address, port=vm.ssh_port, command="true"
        )
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == 255 and "host key" in done.stderr.lower(), done.stderr
    finally:
        chaosrun("lab", "down", "-i", str(inventory), cwd=tmp_path)
