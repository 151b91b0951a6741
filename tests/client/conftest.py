"""Fixtures for the guarantee toolkit: a real PostgreSQL server, topics, and a transactions probe.

PostgreSQL is started from the installed binaries (Debian's `postgresql` package; `make
system-deps` installs it when run as root) in a temporary directory, on 127.0.0.1 and a free
port, once per session. initdb refuses to run as root, so as root the server runs as the
`postgres` system user the Debian package creates (or an ordinary user created for it).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toolkit_helpers import unique


# -- PostgreSQL ---------------------------------------------------------------------------------
def _postgres_bin() -> Path | None:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    if candidates:
        return Path(candidates[-1])
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _server_user() -> str | None:
    """None: run as ourselves; else the ordinary user to run PostgreSQL as (we are root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "odradek-pg"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    subprocess.run(["useradd", "--system", "--no-create-home", "odradek-pg"], check=True)
    return "odradek-pg"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server for this session; yields a DSN for its `postgres` database."""
    binaries = _postgres_bin()
    if binaries is None:
        if os.geteuid() != 0:
            pytest.skip(
                "no PostgreSQL binaries (initdb/pg_ctl) and not root to install them: "
                "install Debian's postgresql package (make system-deps does, as root)"
            )
        pytest.fail("no PostgreSQL binaries: run `make system-deps` as root first")
    user = _server_user()
    as_user = ["runuser", "-u", user, "--"] if user else []
    # Not pytest's tmp_path: that lives under a 0700 directory the server user cannot enter.
    directory = Path(tempfile.mkdtemp(prefix="odradek-pg-"))
    data = directory / "data"
    if user:
        shutil.chown(directory, user)
    port = _free_port()
    subprocess.run(
        [
            *as_user,
            str(binaries / "initdb"),
            *("-D", str(data), "-A", "trust", "-U", "postgres"),
            *("--no-sync", "-E", "UTF8", "--locale", "C"),
        ],
        check=True,
        capture_output=True,
    )
    options = f"-h 127.0.0.1 -p {port} -k {directory} -c fsync=off -c max_connections=50"
    subprocess.run(
        [
            *as_user,
            str(binaries / "pg_ctl"),
            *("-D", str(data), "-o", options),
            *("-l", str(directory / "server.log"), "-w", "-t", "30", "start"),
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    finally:
        subprocess.run(
            [*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server: str) -> str:
    """A fresh database on the session's server, one per test."""
    import psycopg

    name = unique("test").replace("-", "_")
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return postgres_server.replace("dbname=postgres", f"dbname={name}")


@pytest.fixture(autouse=True)
def _instance_slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's processors take their transactional.id slots in the test's own directory."""
    monkeypatch.setenv("ODRADEK_STATE_DIR", str(tmp_path / "slots"))
