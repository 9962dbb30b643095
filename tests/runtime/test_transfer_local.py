"""``transfer: gzip`` on this machine, no SSH: the gzip exec wrapper run by the shells a
target has (dash, Debian's /bin/sh, and bash, root's login shell), what it does with a
changed upload, a planted file, a lying or missing gzip; and whole runs on the local
connector with each transfer, the audit log saying which one each upload took."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from chaosrun.build import Builder, goarch_for
from chaosrun.lint import check_scenario_text
from chaosrun.plan import build_plan
from chaosrun.run.deploy import HASH_MISMATCH, NO_GZIP, UNPACK_FAILED, gzip_exec_command
from chaosrun.run.local import LocalConnector
from chaosrun.run.model import RunOptions
from chaosrun.run.runner import run_plan
from chaosrun.scenario import Transfer

SHELLS = [s for s in ("/bin/dash", "/bin/bash") if Path(s).exists()]

# What "runs" in the wrapper tests: a script that says where it runs and what it holds open.
PROGRAM = """#!/bin/sh
echo "ran $(cat /proc/$$/cmdline | tr '\\0' ' ')"
for fd in 3 4 5; do [ -e /proc/$$/fd/$fd ] && echo "fd $fd: $(readlink /proc/$$/fd/$fd)"; done
cat
"""


class Target:
    """A temp dir standing for the target's, and the wrapper run on it by one shell."""

    def __init__(self, folder: Path, shell: str) -> None:
        self.folder = folder
        self.shell = shell
        self.packed = folder / "tmp.upl0aded00"
        self.unpacked = folder / "tmp.unp4cked00"

    def upload(self, program: bytes) -> None:
        self.packed.write_bytes(gzip.compress(program, 6))
        self.packed.chmod(0o600)

    def run(self, expected: bytes, *, path: str | None = None) -> subprocess.CompletedProcess[str]:
        sha256 = hashlib.sha256(expected).hexdigest()
        blake2b = hashlib.blake2b(expected).hexdigest()
        command = gzip_exec_command(str(self.packed), str(self.unpacked), sha256, blake2b)
        env = {"PATH": path or os.environ["PATH"]}
        return subprocess.run([self.shell, "-c", command], input="config\n", capture_output=True, text=True, env=env)

    def names(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir())


@pytest.fixture(params=SHELLS, ids=lambda s: Path(s).name)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    folder = tmp_path / "target-tmp"
    folder.mkdir()
    return Target(folder, request.param)


def test_the_unpacked_bytes_run_from_fd_3_with_the_config_on_stdin_and_no_file_left(target: Target) -> None:
    program = PROGRAM.encode()
    target.upload(program)
    done = target.run(program)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ran /bin/sh /proc/self/fd/3")  # the script's interpreter reads fd 3
    assert lines[1] == f"fd 3: {target.unpacked} (deleted)"  # as a raw upload's: itself on fd 3...
    assert lines[2:] == ["config"]  # ...nothing on fd 4 and 5, and the config on stdin
    assert target.names() == []


def test_the_real_module_binary_runs_unpacked(target: Target) -> None:
    binary = Builder().build("file_exists", "linux", goarch_for(platform.machine())).path.read_bytes()
    target.upload(binary)
    done = target.run(binary)
    # No monitor to call back: the kit read the (bad) config, so it ran.
    assert done.returncode == 2 and "config" in done.stderr, done.stderr
    assert target.names() == []


def test_a_changed_upload_that_still_unpacks_never_runs(target: Target, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    target.upload(f"#!/bin/sh\ntouch {marker}\n".encode())
    done = target.run(PROGRAM.encode())
    assert done.returncode == HASH_MISMATCH
    assert not marker.exists() and target.names() == []


def test_an_upload_that_no_longer_unpacks_exits_95(target: Target) -> None:
    target.packed.write_bytes(os.urandom(4096))
    done = target.run(PROGRAM.encode())
    assert done.returncode == UNPACK_FAILED, done.stderr
    assert target.names() == []


def test_a_symlink_planted_at_the_unpacked_name_is_never_written_through(target: Target, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    target.unpacked.symlink_to(victim)
    target.upload(PROGRAM.encode())
    done = target.run(PROGRAM.encode())
    assert done.returncode == HASH_MISMATCH
    assert not victim.exists()
    assert target.names() == [target.unpacked.name]  # the candidate's own link, left as it is


def test_a_lying_gzip_that_hands_over_another_program_is_refused(target: Target, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "gzip").write_text(f"#!/bin/sh\nprintf '#!/bin/sh\\ntouch {marker}\\n'\n")
    (fake / "gzip").chmod(0o755)
    target.upload(PROGRAM.encode())
    done = target.run(PROGRAM.encode(), path=f"{fake}:{os.environ['PATH']}")
    assert done.returncode == HASH_MISMATCH
    assert not marker.exists() and target.names() == []


def test_a_target_without_gzip_exits_96_and_keeps_nothing(target: Target, tmp_path: Path) -> None:
    tools = tmp_path / "tools"  # what the wrapper needs, gzip left out
    tools.mkdir()
    for name in ("rm", "chmod", "b2sum", "sha256sum", "cat"):
        found = shutil.which(name)
        assert found is not None
        (tools / name).symlink_to(found)
    target.upload(PROGRAM.encode())
    done = target.run(PROGRAM.encode(), path=str(tools))
    assert done.returncode == NO_GZIP, done.stderr
    assert target.names() == []


# -- whole runs on the local connector ----------------------------------------------------


async def _run(
    tmp_path: Path, transfer: str, steps: int = 3, override: Transfer | None = None, host: str = "127.0.0.1"
) -> list[dict[str, Any]]:
    """The run's audit records. The local connector runs the steps on this machine whatever
    ``host`` says; ``auto`` decides by it (a loopback address, or one across a link)."""
    folder = tmp_path / "target-tmp"
    folder.mkdir(exist_ok=True)
    body = "".join(
        f"  - {{id: s{i}, target: web, probe: file_exists, with: {{path: {tmp_path}}}, expect: result.exists}}\n"
        for i in range(steps)
    )
    text = (
        f"version: 1\nname: transfer\ntargets:\n  web: {{host: {host}, tmp_dir: {folder}}}\n"
        f"monitor: {{transfer: {transfer}}}\nsteps:\n{body}"
    )
    scenario, errors = check_scenario_text(text, "transfer.yaml")
    assert scenario is not None and not errors, [str(e) for e in errors]
    options = RunOptions(
        audit_dir=tmp_path / "audit",
        connector=LocalConnector(),
        key_path=tmp_path / "keys" / "monitor_ed25519",
        transfer=override,
    )
    report = await run_plan(build_plan(scenario, seed=1), options)
    assert report.ok, [(s.id, s.reason) for e in report.environments for s in e.steps]
    assert list(folder.iterdir()) == []
    assert report.audit_path is not None
    return [json.loads(line) for line in report.audit_path.read_text().splitlines()]


def _deploys(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["event"] == "deploy" and not r["step"].startswith("guard:")]


async def test_a_gzip_run_says_so_in_every_deploy_record_with_the_bytes_sent(tmp_path: Path) -> None:
    records = await _run(tmp_path, "gzip")
    deploys = _deploys(records)
    assert [d["transfer"] for d in deploys] == ["gzip"] * 3
    binary = Builder().build("file_exists", "linux", goarch_for(platform.machine())).path.read_bytes()
    for d in deploys:
        assert d["sha256"] == hashlib.sha256(binary).hexdigest() and d["size"] == len(binary)  # what runs
        assert 0.40 * len(binary) < d["sent"] < 0.50 * len(binary)
        assert len(d["sent_sha256"]) == 64 and d["sent_sha256"] != d["sha256"]
        assert Path(d["unpack_path"]).parent == Path(d["path"]).parent != Path(d["unpack_path"])
        assert "chosen" not in d  # asked for, not decided
    cleanups = [r for r in records if r["event"] == "cleanup" and not r["step"].startswith("guard:")]
    assert [c["removed"] for c in cleanups] == [True] * 3


async def test_auto_sends_raw_to_a_loopback_target_and_says_why(tmp_path: Path) -> None:
    deploys = _deploys(await _run(tmp_path, "auto"))
    assert [(d["transfer"], d["sent"] == d["size"]) for d in deploys] == [("raw", True)] * 3
    assert {d["chosen"] for d in deploys} == {"auto: a loopback target: no wire to save bytes on"}


async def test_the_run_option_overrides_the_scenarios_transfer(tmp_path: Path) -> None:
    deploys = _deploys(await _run(tmp_path, "gzip", 2, override=Transfer.RAW))
    assert [(d["transfer"], d["sent"] == d["size"]) for d in deploys] == [("raw", True)] * 2
    assert all("sent_sha256" not in d and "unpack_path" not in d for d in deploys)


async def test_auto_sends_a_remote_targets_first_upload_gzip_and_explains_each_later_choice(tmp_path: Path) -> None:
    first, *later = _deploys(await _run(tmp_path, "auto", host="10.9.9.9"))
    assert (first["transfer"], first["chosen"]) == ("gzip", "auto: first upload to this target, it measures the link")
    for d in later:  # a local "link" is fast: raw, most likely; either way it says why
        assert d["chosen"].startswith("auto: link ") and d["transfer"] in ("raw", "gzip"), d


async def test_auto_sends_raw_to_a_remote_target_without_gzip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tools = tmp_path / "tools"  # what the wrappers need, gzip left out
    tools.mkdir()
    for name in ("rm", "chmod", "b2sum", "sha256sum"):
        found = shutil.which(name)
        assert found is not None
        (tools / name).symlink_to(found)
    monkeypatch.setenv("PATH", str(tools))
    first, *later = _deploys(await _run(tmp_path, "auto", 3, host="10.9.9.9"))
    assert (first["transfer"], first["chosen"]) == ("raw", "auto: the target has no gzip")
    assert [d["transfer"] for d in later] == ["raw", "raw"]  # a fast link, and no gzip (asked once)
