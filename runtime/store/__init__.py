"""Stores for registrations and session state: SQLite (embedded), Redis, Redis Cluster, memory.

``open_store(url)`` picks one by URL; ``StoredEngine(store)`` is the engine over it.
"""

from __future__ import annotations

from pathlib import Path

from .base import Store, StoreConflict, StoreCorrupt, StoreError, StoreUnavailable
from .engine import StoredEngine, event_user

__all__ = ["Store", "StoreConflict", "StoreCorrupt", "StoreError", "StoreUnavailable",
           "StoredEngine", "event_user", "open_store"]

URL_FORMS = ("sqlite:///path/to.db", "redis://host:port/db?prefix=pushrules",
             "redis+cluster://host:port[,host:port...]?prefix=pushrules&wait=1",
             "memory:")


def open_store(url: str, *, create: bool = True) -> Store:
    """Open the store a URL names; raise StoreError saying what is wrong with the URL.
    ``create=False``: an SQLite file that does not exist is an error, not a new store."""
    if url == "memory:":
        from .memory import MemoryStore

        return MemoryStore()
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteStore

        path = url.removeprefix("sqlite:///")
        if not path:
            raise StoreError(f"store URL {url!r} names no file")
        # sqlite:////abs/path and sqlite:///rel/path, as in SQLAlchemy.
        return SqliteStore(Path(path), create=create)
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        from .redis_cluster import RedisClusterStore

        return RedisClusterStore(url)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis_store import RedisStore

        return RedisStore(url)
    from .redis_store import _mask

    raise StoreError(f"store URL {_mask(url)!r} is not one of: {', '.join(URL_FORMS)}")
