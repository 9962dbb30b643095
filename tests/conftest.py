"""Fixtures for the whole suite: a real local sshd, and a sandbox folder for the candidate's files.

A test that uses ``sshd`` or ``fresh_sshd`` is marked ``e2e`` automatically (so is everything
under tests/e2e/). If sshd cannot start, those tests fail with the reason; they never skip,
since CI installs openssh-server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from chaosrun.testing import LocalSshd, LocalSshdError, local_sshd

if TYPE_CHECKING:
    # Imported lazily below, so that tests that never touch SSH do not import asyncssh.
    from chaosrun.run.ssh import HostSpec, SshConnection

_SSHD_FIXTURES = {"sshd", "fresh_sshd", "ssh_spec", "ssh_conn"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        in_e2e = "e2e" in item.path.parts
        if in_e2e or fixtures & _SSHD_FIXTURES:
            item.add_marker(pytest.mark.e2e)


def _start(workdir: Path) -> Iterator[LocalSshd]:
    try:
        server_cm = local_sshd(workdir)
        server = server_cm.__enter__()
    except LocalSshdError as exc:
        pytest.fail(f"cannot start the test sshd: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server_cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSshd]:
    """One sshd on 127.0.0.1 shared by the session. Don't stop it; use ``fresh_sshd`` for that."""
    yield from _start(tmp_path_factory.mktemp("sshd"))


@pytest.fixture
def fresh_sshd(tmp_path: Path) -> Iterator[LocalSshd]:
    """An sshd of this test's own, which the test may stop (``fresh_sshd.stop()``)."""
    yield from _start(tmp_path)


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """An empty folder standing for the candidate's filesystem."""
    path = tmp_path / "sandbox"
    path.mkdir()
    return path


@pytest.fixture
def ssh_spec(sshd: LocalSshd) -> HostSpec:
    """Where and how to reach the shared sshd, host key checked."""
    from chaosrun.run.ssh import HostSpec

    return HostSpec(
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        identity=sshd.identity,
        known_hosts=sshd.known_hosts,
    )


@pytest.fixture
async def ssh_conn(ssh_spec: HostSpec) -> AsyncIterator[SshConnection]:
    """An open connection to the shared sshd, over the SSH loop thread (``open_bridge``)."""
    from chaosrun.run.ssh import open_bridge, open_ssh

    async with open_bridge(), open_ssh(ssh_spec) as conn:
        yield conn
