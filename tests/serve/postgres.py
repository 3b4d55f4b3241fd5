"""A throwaway PostgreSQL server for the store's tests: Debian's binaries, a temporary cluster on loopback.

One cluster per test run (initdb takes about a second), one fresh database per test. PostgreSQL
refuses to run as root, so as root the cluster belongs to the `postgres` user the package made.
Without Debian's postgresql the tests that need it skip, saying `make postgres` installs it; in CI
(CI=true) they fail instead, so a missing server never passes unseen.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile

import pytest

_counter = itertools.count()


def _bin_dir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a running throwaway PostgreSQL server (its `postgres` database); stopped after the run."""
    bindir = _bin_dir()
    if bindir is None:
        message = "Debian's postgresql is not installed: `make postgres` installs it"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    root = tempfile.mkdtemp(prefix="pg-test-")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    data, port = os.path.join(root, "data"), _free_port()
    run = lambda *args: subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)  # noqa: E731
    run(f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
    run(f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(root, "log"), "-w", "start",
        "-o", f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        run(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A URL to a new empty database on the throwaway server, for one test."""
    from sqlalchemy import create_engine

    name = f"t{os.getpid()}_{next(_counter)}"
    admin = create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    yield f"{postgres_server}/{name}"
