"""The store: every durable thing mailgate keeps, in one database (SQLite or PostgreSQL).

The spool's mail and idempotency record (``spool``), Discord's queue and
thread registry (``discord``), the notices and their once-a-day record
(``notices``) and the rate buckets (``ratebuckets``) all live at one
``Location``: the SQLite file ``spool.path``, or the PostgreSQL database
``spool.url``.  Each backend's tables are its own versioned migrations
(``sqlite_schema``, ``postgres_schema``), each part's statements are written
in both dialects beside each other, and ``retention`` purges what is finished.
"""

from __future__ import annotations

from pathlib import Path

from mailgate.store.database import Location
from mailgate.store.spool import Spool

__all__ = ["Location", "Spool", "open_spool"]


def open_spool(where: str | Path | Location, *, url: str | None = None,
               lease_seconds: float = 60.0) -> Spool:
    """The spool at ``where`` (a ``Location``, a PostgreSQL URL or a SQLite file), or in
    PostgreSQL at ``url`` when one is given."""
    from mailgate.store.spool import PostgresSpool, SqliteSpool

    location = Location(url=url) if url else Location.of(where)
    if location.url:
        return PostgresSpool(location.url, lease_seconds=lease_seconds)
    return SqliteSpool(location.path, lease_seconds=lease_seconds)
