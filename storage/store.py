"""Opening the store an URL names: SQLite embedded by default, or a PostgreSQL server.

Kept apart from `storage.db` (the interface) because it imports the backends, which import the
interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storage.db import Database


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


async def open_db(url: str | Path) -> Database:
    """Connect and migrate: the one way the application opens its store."""
    where = StoreUrl.parse(url)
    if where.dialect == "postgresql":
        raise ValueError("this version of Retouch stores its data in SQLite only")
    from storage import sqlite

    return await sqlite.open_sqlite(where.target)
