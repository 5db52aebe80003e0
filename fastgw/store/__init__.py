"""Durable state (``store:`` in the config): API tokens, the audit log, usage records, async jobs.

``store: sqlite:///path.db`` keeps it in one SQLite file (one machine); ``store:
postgresql://user:password@host:port/db`` in PostgreSQL, shared by every instance pointed at it
(SPEC 13.2). Both run behind one ``Store`` (``threads.py``) and one set of queries.
"""

from __future__ import annotations

from ..config import Config
from .audit import AuditLog
from .db import Connection, IntegrityError, StoreError, StoreUnavailable
from .sqlite import SqliteBackend, connect
from .threads import Backend, Store

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def backend_for(location: str) -> Backend:
    """The backend for a store URL, or a bare SQLite path (tools and tests)."""
    if location.startswith(POSTGRES_SCHEMES):
        from .postgres import PostgresBackend  # psycopg is loaded only by PostgreSQL users

        return PostgresBackend(location)
    if location.startswith("sqlite:///"):
        location = location[len("sqlite:///") :]
    return SqliteBackend(location)


def open_store(config: Config | str) -> Store:
    """The store named by ``config.store`` (or a URL); nothing is opened until the first query."""
    return Store(backend_for(config if isinstance(config, str) else config.store))


def connect_store(location: str) -> Connection:
    """One connection of our own to the store at ``location`` (the CLI), schema up to date."""
    return backend_for(location).connect()


__all__ = [
    "AuditLog",
    "Connection",
    "IntegrityError",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "connect",
    "connect_store",
    "open_store",
]
