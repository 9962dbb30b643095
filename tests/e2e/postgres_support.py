"""A throwaway PostgreSQL server for the tests of ``--db``: Debian's ``postgresql`` package
(scripts/install installs it), a cluster made with ``initdb`` in a temp dir, started with
``pg_ctl`` on a free port of 127.0.0.1 (and a unix socket in that dir only), stopped and
removed in ``finally``. The machine's own cluster, if any, is never touched.

As root (CI), the cluster runs as the ``postgres`` user (PostgreSQL refuses to run as
root); otherwise as the user running the tests. Without the binaries, a test that needs
the server fails when ``CI=true`` (CI must have them) and is skipped otherwise.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_support import free_port

PG_BIN = Path(os.environ.get("CHAOSRUN_PG_BIN", "/usr/lib/postgresql/15/bin"))


@dataclass(frozen=True)
class Postgres:
    root: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = "chaosrun_" + secrets.token_hex(4)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def missing() -> str | None:
    """Why the server cannot be started here, or None."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).is_file():
            return f"{PG_BIN / tool} is missing (Debian's postgresql package: scripts/install installs it)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
    return None


@contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    """A cluster of its own in a temp dir, on a free port of 127.0.0.1, until the block ends."""
    root = Path(tempfile.mkdtemp(prefix="chaosrun-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    started = False
    try:
        initdb = f"{PG_BIN}/initdb -D {data} -U postgres --auth=trust -E UTF8 --no-sync".split()
        subprocess.run([*as_user, *initdb], check=True, capture_output=True, text=True)
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=50"
        start = f"{PG_BIN}/pg_ctl -D {data} -l {root}/server.log -w -t 60 start".split()
        subprocess.run([*as_user, *start, "-o", options], check=True, capture_output=True, text=True)
        started = True
        yield Postgres(root, port)
    except subprocess.CalledProcessError as exc:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        raise RuntimeError(f"{exc.cmd[len(as_user)]} failed: {exc.stderr}{exc.stdout}\n{log}") from None
    finally:
        if started:
            subprocess.run(
                [*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"],
                capture_output=True,
            )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One PostgreSQL server for the session (each test takes a database of its own)."""
    why = missing()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is needed for the --db tests: {why}", pytrace=False)
        pytest.skip(f"no PostgreSQL here: {why}")
    with postgres_cluster() as server:
        yield server


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    """The URL of a new, empty database of the session's server."""
    return postgres.create_database()
