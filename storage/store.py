"""Opening the store an URL names: SQLite embedded by default, or a PostgreSQL server.

Kept apart from `storage.db` (the interface) because it imports the backends, which import the
interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storage import postgres, sqlite
from storage.db import Database, redacted


@dataclass(frozen=True)
class StoreUrl:
    """Where the store is: `sqlite:///relative/or//absolute.db`, `sqlite://:memory:` or
    `postgresql://user@host:port/database`."""

    dialect: str
    target: str

    @classmethod
    def parse(cls, url: str | Path) -> StoreUrl:
        text = str(url)
        if text.startswith(("postgresql://", "postgres://")):
            return cls("postgresql", text)
        if text.startswith("sqlite://"):
            rest = text.removeprefix("sqlite://")
            return cls(
                "sqlite", ":memory:" if rest in ("", ":memory:", "/:memory:") else rest.removeprefix("/")
            )
        if "://" in text:
            raise ValueError(f"unknown database URL scheme in {text!r}: use sqlite:/// or postgresql://")
        return cls("sqlite", text)

    def __str__(self) -> str:
        """The URL as it may be printed or logged: a password in it is replaced by ***."""
        if self.dialect == "sqlite":
            return f"sqlite:///{self.target}" if self.target != ":memory:" else "sqlite://:memory:"
        return redacted(self.target)


async def open_db(url: str | Path | StoreUrl) -> Database:
    """Connect and migrate: the one way the application opens its store."""
    where = url if isinstance(url, StoreUrl) else StoreUrl.parse(url)
    if where.dialect == "postgresql":
        return await postgres.open_postgres(where.target)
    return await sqlite.open_sqlite(where.target)


async def migrate_store(url: str | Path | StoreUrl) -> tuple[list[int], int, str | None]:
    """Bring the schema up to date without serving: (versions applied, the version now, where a
    copy was made first or None)."""
    where = url if isinstance(url, StoreUrl) else StoreUrl.parse(url)
    if where.dialect == "postgresql":
        applied, now = await postgres.migrate_url(where.target)
        return applied, now, None
    applied, copy = await sqlite.migrate_with_backup(Path(where.target))
    return applied, sqlite.latest_version(), None if copy is None else str(copy)
