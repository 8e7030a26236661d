"""The store: every durable thing mailgate keeps, in one database (SQLite or PostgreSQL).

``open_spool`` opens the configured backend; ``spool`` holds the operations
both share, ``sqlite`` and ``postgres`` what differs.
"""

from __future__ import annotations

from pathlib import Path

from mailgate.store.spool import Spool


def open_spool(path: str | Path, *, url: str | None = None, lease_seconds: float = 60.0) -> Spool:
    """The configured backend: PostgreSQL when a URL is given, else SQLite at ``path``."""
    if url:
        from mailgate.store.postgres import PostgresSpool

        return PostgresSpool(url, lease_seconds=lease_seconds)
    from mailgate.store.spool import SqliteSpool

    return SqliteSpool(path, lease_seconds=lease_seconds)
