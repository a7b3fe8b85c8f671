"""Which backend holds the store, chosen by its URL: the one way the application opens it."""

from __future__ import annotations

from pathlib import Path

from storage import postgres, sqlite
from storage.db import Database, StoreUrl


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
