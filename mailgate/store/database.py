"""Where the store is (``Location``), and what an open store is (``Database``).

Every part of the store (the spool, Discord's queue and thread registry, the
notices, the rate buckets) is opened from the same ``Location``: a SQLite file
(``spool.path``) or a PostgreSQL database (``spool.url``).  So whatever the
backend, processes that share the location share all of mailgate's state:
``pipe`` beside ``serve`` on one file, or several hosts on one database.

``mailgate.store.connect.connect`` opens a location as a ``Database``, brought
to the latest schema version; each part keeps its own, and closes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager, Protocol, Sequence
from urllib.parse import urlsplit, urlunsplit

#: A string naming a PostgreSQL database rather than a file.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class Database(Protocol):
    """One connection to the store, shared by threads.  ``backend`` says whose SQL it
    speaks: "sqlite" (``?``) or "postgres" (``%s``)."""

    backend: str

    def transaction(self) -> ContextManager[Any]:
        """A cursor (``execute``, ``fetchone``, ``fetchall``, ``rowcount``) whose
        statements commit together, or not at all."""

    def rows(self, sql: str, params: Sequence = ()) -> list[tuple]:
        """One statement, committed: its rows (of a SELECT or a RETURNING)."""

    def change(self, sql: str, params: Sequence = ()) -> int:
        """One statement, committed: how many rows it changed."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class Location:
    path: Path | None = None
    url: str | None = None

    @classmethod
    def of(cls, where: "Location | str | os.PathLike[str]") -> "Location":
        """A location, a PostgreSQL URL, or a SQLite file's path."""
        if isinstance(where, Location):
            return where
        if isinstance(where, str) and where.startswith(POSTGRES_SCHEMES):
            return cls(url=where)
        return cls(path=Path(where))

    @classmethod
    def configured(cls, path: str | os.PathLike[str], url: str | None = None) -> "Location":
        """As the configuration says: ``spool.url`` when set, else ``spool.path``."""
        return cls(url=url) if url else cls(path=Path(path))

    @property
    def backend(self) -> str:
        return "postgres" if self.url else "sqlite"

    def __str__(self) -> str:
        if not self.url:
            return str(self.path)
        # Never a password in a log line.
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{parts.username}@{host}" if parts.username else host
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
