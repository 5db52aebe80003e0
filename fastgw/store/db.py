"""What every store query is written against: a DB-API-shaped connection speaking one SQL.

The query modules (``tokens``, ``audit``, ``usage``, ``jobs``) are written once, in the SQL
both SQLite and PostgreSQL accept, with ``?`` placeholders; ``postgres.PgConnection`` turns
the few spellings that differ (placeholders, ``rowid``, ``BEGIN IMMEDIATE``, integer casts)
into PostgreSQL's. A ``sqlite3.Connection`` is a ``Connection`` as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class StoreError(Exception):
    """The store cannot be opened or a query failed; the message never contains data values."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (connection refused or lost): worth retrying later."""


class IntegrityError(StoreError):
    """A constraint refused a row (a duplicate key), whichever database said so."""


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """The part of ``sqlite3.Connection`` the store uses."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Sequence[Sequence[Any]], /) -> Cursor: ...

    def close(self) -> None: ...


def transaction(conn: Connection, fn: Callable[[Connection], T], begin: str = "BEGIN IMMEDIATE") -> T:
    """Run ``fn`` inside ``begin`` … ``COMMIT`` (rolled back if it raises).

    ``BEGIN IMMEDIATE`` (the default) takes SQLite's write lock at once; a plain ``BEGIN`` is a
    read transaction: one consistent view for several queries.
    """
    conn.execute(begin)
    try:
        result = fn(conn)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
