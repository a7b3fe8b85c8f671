"""A PostgreSQL server for the tests, and a fresh database in it for each test.

The server is the first of: one already listening on 127.0.0.1:5432 (trust authentication,
user `postgres`); a throwaway one started with the PostgreSQL binaries on this machine (on
PATH or under /usr/lib/postgresql/*/bin) in a temporary folder, on a free port; one from the
`pgserver` wheel in the dev dependencies. Without any of them the PostgreSQL tests skip, except
in CI (CI=true), where they fail: there a skipped backend would be a silently untested one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

T = TypeVar("T")

# Which backend the e2e and reliability suites give each bot: `RETOUCH_TEST_STORE=postgresql`
# runs them all against a fresh PostgreSQL database per test.
STORE_ENV = "RETOUCH_TEST_STORE"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 5432


def store_under_test() -> str:
    store = os.environ.get(STORE_ENV, "sqlite")
    if store not in ("sqlite", "postgresql"):
        raise RuntimeError(f"{STORE_ENV} must be sqlite or postgresql, not {store!r}")
    return store


def _blocking(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to the end in a thread of its own: the caller may be inside a running event
    loop (an async fixture asking for a database)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


@dataclass
class PgServer:
    """A reachable server: `url(name)` names a database in it (over TCP on 127.0.0.1, or the
    Unix socket in `socket_dir` for the pgserver wheel, which listens on no address)."""

    host: str
    port: int
    user: str = "postgres"
    socket_dir: str | None = None
    stop: list[Callable[[], object]] = field(default_factory=list)

    def url(self, database: str = "postgres") -> str:
        if self.socket_dir is not None:
            return f"postgresql://{self.user}@/{database}?host={self.socket_dir}"
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """One statement on the maintenance database (CREATE/DROP DATABASE cannot be prepared)."""

        async def run() -> None:
            conn = await asyncpg.connect(self.url(), timeout=10)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        _blocking(run())

    def create_database(self) -> str:
        name = f"retouch_test_{secrets.token_hex(6)}"
        self.admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        for stop in reversed(self.stop):
            stop()


def _answers(host: str, port: int, user: str = "postgres") -> bool:
    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(f"postgresql://{user}@{host}:{port}/postgres", timeout=3)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return False
        await conn.close()
        return True

    return _blocking(probe())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    for directory in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (directory / "initdb").exists():
            return directory
    return None


def _start_throwaway(binaries: Path) -> PgServer:
    """initdb + pg_ctl into a temporary folder. PostgreSQL refuses to run as root, so as root it
    runs as the `postgres` system user (the Debian packages create it)."""
    folder = Path(tempfile.mkdtemp(prefix="retouch-pg-"))
    data, port = folder / "data", free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            raise RuntimeError("running as root without runuser: cannot start PostgreSQL")
        prefix = [runuser, "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    subprocess.run(
        [*prefix, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"
    subprocess.run(
        [
            *prefix,
            str(binaries / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(folder / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )

    def stop() -> None:
        subprocess.run(
            [*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)

    return PgServer(DEFAULT_HOST, port, stop=[stop])


def _start_pgserver() -> PgServer | None:
    """The PostgreSQL inside the `pgserver` wheel (as root it runs as a `pgserver` user it makes)."""
    try:
        from pgserver.postgres_server import get_server
    except ImportError:
        return None
    folder = Path(tempfile.mkdtemp(prefix="retouch-pgserver-"))
    server = get_server(folder, cleanup_mode="stop")
    return PgServer("", 0, socket_dir=str(folder), stop=[server.cleanup, lambda: shutil.rmtree(folder, True)])


def find_server() -> tuple[PgServer | None, str]:
    """A server, or None and why none could be had."""
    if _answers(DEFAULT_HOST, DEFAULT_PORT):
        return PgServer(DEFAULT_HOST, DEFAULT_PORT), ""
    reasons = [f"nothing answers on {DEFAULT_HOST}:{DEFAULT_PORT}"]
    binaries = _binaries()
    if binaries is not None:
        try:
            return _start_throwaway(binaries), ""
        except (OSError, subprocess.CalledProcessError, RuntimeError, LookupError) as exc:
            reasons.append(f"the binaries in {binaries} did not start ({exc})")
    else:
        reasons.append("no PostgreSQL binaries on this machine")
    try:
        started = _start_pgserver()
    except Exception as exc:  # any failure of the wheel is a reason to report, not to crash
        reasons.append(f"pgserver did not start ({exc})")
    else:
        if started is not None:
            return started, ""
        reasons.append("pgserver is not installed")
    return None, "; ".join(reasons)


@contextlib.contextmanager
def fresh_database(server: PgServer) -> Iterator[str]:
    """A new empty database for one test, dropped (with its connections) afterwards."""
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


class _BotDatabases:
    """The databases this test's bots were given: one per test, made when first asked for."""

    def __init__(self, server: Callable[[], PgServer]) -> None:
        self._server = server
        self.made: list[tuple[PgServer, str]] = []

    def url(self) -> str:
        if not self.made:
            server = self._server()
            self.made.append((server, server.create_database()))
        server, name = self.made[0]
        return server.url(name)


_CURRENT: list[_BotDatabases] = []


@contextlib.contextmanager
def bot_databases(server: Callable[[], PgServer]) -> Iterator[None]:
    databases = _BotDatabases(server)
    _CURRENT.append(databases)
    try:
        yield
    finally:
        _CURRENT.remove(databases)
        for owner, name in databases.made:
            owner.drop_database(name)


def bot_store_url() -> str | None:
    """The store the test's bot should use instead of the SQLite file under its data folder:
    None on SQLite (the default), else this test's PostgreSQL database."""
    return _CURRENT[-1].url() if _CURRENT else None
