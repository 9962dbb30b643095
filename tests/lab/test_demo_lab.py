"""``chaosrun demo --lab``: the demo's whole exam against a real lab VM, as a newcomer runs
it; it passes, grades 0 before the repair and full after, and leaves no VM behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lab_support import chaosrun

from chaosrun.lab import Image

pytestmark = [pytest.mark.lab, pytest.mark.e2e]


def _qemu_running_under(folder: str) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmdline and folder.encode() in cmdline:
                return True
    return False


def test_demo_lab_breaks_grades_repairs_and_regrades_a_real_vm(lab_image: Image, tmp_path: Path) -> None:
    done = chaosrun("demo", "--lab", "--audit", str(tmp_path / "audit"), cwd=tmp_path)
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-2000:]
    assert "demo --lab passed" in out
    before = re.search(r"points before the repair: (\S+)", out)
    after = re.search(r"points after the repair: (\S+)", out)
    assert before and after, out
    assert before.group(1) == "0/10" and after.group(1) == "10/10", (before.group(1), after.group(1))
    assert "restoring the saved VM" in out or "booting" in out
    assert "lab: stopped lab-1/" in out
    folder = re.search(r"testenv folder \S* ?(/tmp/chaosrun-demo-\S+)", out)
    assert folder is None or not _qemu_running_under(folder.group(1))
    assert not _qemu_running_under("chaosrun-demo-")
    logs = sorted((tmp_path / "audit").glob("*.jsonl"))
    assert len(logs) == 4, logs  # run, verify, the repair, verify again
