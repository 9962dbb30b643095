"""The upload folder on a real target over a real sshd, when the candidate (root) makes it
hostile: append-only, full, read-only. Each ends in a step that fails and says why, and
the audit log says what was seen, never what should have been."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Exam

from chaosrun.run.audit import verify_file

STEP = "steps:\n  - {id: s, target: web, probe: command, with: {command: 'true'}}\n"


def scenario(exam: Exam, callback: str = "direct") -> Path:
    path = exam.workdir / f"s-{callback}.yaml"
    path.write_text(
        f"version: 1\nname: resources\ntargets:\n  web: {{host: 127.0.0.1}}\nmonitor: {{callback: {callback}}}\n" + STEP
    )
    return path


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[None]:
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.parametrize("callback", ["direct", "tunnel"])
def test_an_append_only_upload_folder_leaves_the_binary_and_fails_the_step_naming_it(exam: Exam, callback: str) -> None:
    subprocess.run(["chattr", "+a", str(exam.remote_tmp)], check=True)
    try:
        r = exam.chaosrun("run", scenario(exam, callback), "-i", exam.inventory(["web"]), "--plain")
        left = exam.leftovers()
    finally:
        subprocess.run(["chattr", "-a", str(exam.remote_tmp)], check=True)
        for name in exam.leftovers():
            (exam.remote_tmp / name).unlink()
    assert r.code == 1
    end = r.step_end("s")
    assert end["status"] == "failed"
    assert len(left) == 1
    assert end["reason"].startswith(f"cleanup: the binary is still on the target at {exam.remote_tmp / left[0]}")
    (cleanup,) = r.events("cleanup")
    assert cleanup["removed"] is False and cleanup["path"] == str(exam.remote_tmp / left[0])
    assert verify_file(r.audit_path).ok  # type: ignore[arg-type]


def test_a_full_upload_folder_is_named_before_anything_is_uploaded(exam: Exam) -> None:
    with tmpfs(exam.remote_tmp, "size=512k"):
        r = exam.chaosrun("run", scenario(exam), "-i", exam.inventory(["web"]), "--plain")
    reason = r.step_end("s")["reason"]
    assert reason.startswith(f"No space left on device in {exam.remote_tmp} on "), reason
    assert r.events("deploy") == []


def test_a_read_only_upload_folder_is_named(exam: Exam) -> None:
    with tmpfs(exam.remote_tmp, "size=16m,ro"):
        r = exam.chaosrun("run", scenario(exam), "-i", exam.inventory(["web"]), "--plain")
    assert r.step_end("s")["reason"].startswith(f"read-only file system: cannot deploy to {exam.remote_tmp} on ")
