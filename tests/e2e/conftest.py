"""The ``exam`` fixture: a candidate's machine for one end-to-end test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Exam, listening_ports
from postgres_support import pg_url, postgres  # noqa: F401  (fixtures: a throwaway PostgreSQL)

from chaosrun.testing import LocalSshd


@pytest.fixture
def exam(sshd: LocalSshd, sandbox: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Exam]:
    monkeypatch.setenv("CHAOSRUN_KEY", str(tmp_path / "keys" / "monitor_ed25519"))
    remote_tmp = tmp_path / "remote-tmp"
    remote_tmp.mkdir()
    workdir = tmp_path / "work"
    workdir.mkdir()
    ports_before = listening_ports()
    e = Exam(sshd, sandbox, remote_tmp, workdir)
    try:
        yield e
    finally:
        for proc in e.processes:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert e.leftovers() == [], "a binary was left on the target"
    assert listening_ports() - ports_before == set(), "a callback listener was left open"
