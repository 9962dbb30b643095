"""Fixtures for the lab tests: the image (built once per machine, in the user's cache) and
one real VM shared by the session, started and stopped through the ``chaosrun`` command.

The VM is booted by ``chaosrun lab up`` in a subprocess, exactly as a user does it, and
reused by every test that only looks at it or leaves it as it found it; the last test of
test_lab.py takes it down and checks that nothing is left. The teardown here only makes
sure of that if a test failed half way.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import pytest
from lab_support import BOOT_TIMEOUT, LabVm, chaosrun

from chaosrun.lab import Image, ensure_image, load_state


@pytest.fixture(scope="session")
def lab_image() -> Image:
    """The lab's base image; the first session on a machine builds it (~80-100 s)."""
    return ensure_image(lambda line: print(line, file=sys.stderr, flush=True))


@pytest.fixture(scope="session")
def lab_vm(lab_image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabVm]:
    """One VM booted by ``chaosrun lab up`` (no scenario: one 'target', ports 22/80/443/53)."""
    folder = tmp_path_factory.mktemp("lab")
    inventory = folder / "lab.yml"
    base_mtime_ns = lab_image.disk.stat().st_mtime_ns
    started = time.monotonic()
    done = chaosrun("lab", "up", "-o", str(inventory), "--boot-timeout", BOOT_TIMEOUT, cwd=folder)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        pytest.fail(f"chaosrun lab up failed ({done.returncode}):\n{done.stderr}", pytrace=False)
    lab = LabVm(inventory, load_state(inventory), seconds, done.stderr, base_mtime_ns)
    try:
        yield lab
    finally:
        if (inventory.parent / (inventory.name + ".lab") / "state.json").exists():
            chaosrun("lab", "down", "-i", str(inventory), cwd=folder)
