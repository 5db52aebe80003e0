"""The SQLite file behind API tokens and the audit log (later: usage, async jobs).

Why the shape:

- The event loop never touches SQLite. Every query runs on one of two threads per process, each
  with its own connection: a *reader* (token lookups, lists) and a *writer* (everything that
  writes). With WAL, readers never wait for writers, so a slow commit elsewhere (another worker,
  the CLI) cannot stall a token lookup queued behind it.
- Fire-and-forget writes (audit entries, ``last_used_at``) are queued and committed by the
  writer in one transaction per short window, so a burst costs one fsync, not one per request.
- ``server.workers`` forks processes that share the file. A SQLite connection must never cross
  a fork, so threads and connections are created lazily, on first use, in the process that
  uses them; a process that finds state from its parent starts afresh and never closes the
  parent's connections (closing them in the child could disturb the parent's locks).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

log = logging.getLogger("fastgw.store")

T = TypeVar("T")

BATCH_WINDOW = 0.05  # seconds the writer waits to gather queued writes into one transaction
BATCH_MAX = 500

# One entry per schema version; PRAGMA user_version counts how many are applied. Later features
# (usage records, async jobs) append entries here and never edit the ones before them.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE api_tokens (
            id TEXT PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL DEFAULT '',
            user_id TEXT NOT NULL,
            role TEXT NOT NULL DEFAULT '',
            plan TEXT NOT NULL DEFAULT '',
            app_key TEXT NOT NULL DEFAULT '',
            scopes TEXT NOT NULL DEFAULT '[]',
            created_at TEXT NOT NULL,
            last_used_at TEXT,
            revoked_at TEXT
        )""",
        "CREATE INDEX api_tokens_by_user ON api_tokens (user_id, created_at)",
        """CREATE TABLE audit_log (
            log_id INTEGER PRIMARY KEY AUTOINCREMENT,
            actor_user_id TEXT,
            action TEXT NOT NULL,
            target_type TEXT,
            target_id TEXT,
            details TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX audit_log_by_time ON audit_log (created_at, log_id)",
        # Small counters shared by every process, e.g. the API-token revocation revision.
        "CREATE TABLE store_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    ),
    (
        # One row per proxied request (store/usage.py); reports scan a range of ts.
        """CREATE TABLE usage (
            ts REAL NOT NULL,
            route TEXT NOT NULL,
            upstream TEXT,
            method TEXT NOT NULL,
            status INTEGER NOT NULL,
            latency_ms REAL NOT NULL,
            user_id TEXT,
            model TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX usage_by_ts ON usage (ts)",
        # Async invoke jobs (store/jobs.py); owner '' is an anonymous caller.
        """CREATE TABLE jobs (
            request_id TEXT PRIMARY KEY,
            owner TEXT NOT NULL DEFAULT '',
            route TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
            progress INTEGER,
            response_status INTEGER,
            response_headers TEXT,
            response_body BLOB,
            error TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
    ),
)


class StoreError(Exception):
    """The store cannot be opened or a query failed; the message never contains data values."""


def connect(path: str, busy_timeout: float = 5.0) -> sqlite3.Connection:
    """Open ``path`` in WAL mode with a busy timeout and bring its schema up to date.

    Autocommit mode (``isolation_level=None``): transactions are explicit, so a read never holds
    a snapshot open longer than its statement.
    """
    try:
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store {path!r}: {exc}") from None
    try:
        # busy_timeout first: switching to WAL needs a lock another process may hold briefly.
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        _migrate(conn)
    except StoreError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot prepare the store {path!r}: {exc}") from None
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == len(MIGRATIONS):
        return
    conn.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then see it done
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(f"the store was created by a newer fastgw (schema version {version})")
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` inside ``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back if it raises)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


@dataclass(frozen=True, slots=True)
class _Call:
    fn: Callable[[sqlite3.Connection], Any]
    future: concurrent.futures.Future[Any]
    in_transaction: bool


@dataclass(frozen=True, slots=True)
class _Write:
    sql: str
    params: Sequence[Any]
    many: bool = False  # params is a sequence of rows for executemany


_STOP = object()

# Connections and threads a forked child inherited; kept referenced so they are never finalised
# (and their SQLite handles closed) in a process that does not own them.
_INHERITED: list[object] = []


class _Worker:
    """One thread with one connection, serving calls in order and batching queued writes."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name
        self.queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.conn: sqlite3.Connection | None = None
        self.thread = threading.Thread(target=self._run, name=f"fastgw-store-{name}", daemon=True)
        self.thread.start()

    def _connection(self) -> sqlite3.Connection:
        if self.conn is None:
            self.conn = connect(self.store.path, self.store.busy_timeout)
        return self.conn

    def _run(self) -> None:
        writes: list[_Write] = []
        deadline = 0.0
        while True:
            try:
                if writes:
                    item = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                else:
                    item = self.queue.get()
            except queue.Empty:
                item = None
            if isinstance(item, _Write):
                if not writes:
                    deadline = time.monotonic() + BATCH_WINDOW
                writes.append(item)
                if len(writes) < BATCH_MAX:
                    continue
                item = None
            if writes:  # a call or a stop waits for the writes queued before it
                self._flush(writes)
                writes = []
            if isinstance(item, _Call):
                self._call(item)
            elif item is _STOP:
                break
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _call(self, call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            conn = self._connection()
            result = transaction(conn, call.fn) if call.in_transaction else call.fn(conn)
        except StoreError as exc:
            call.future.set_exception(exc)
        except sqlite3.Error as exc:
            call.future.set_exception(StoreError(f"store query failed: {type(exc).__name__}: {exc}"))
        except BaseException as exc:  # a bug in fn: hand it to the awaiting coroutine
            call.future.set_exception(exc)
        else:
            call.future.set_result(result)

    def _flush(self, writes: list[_Write]) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            for write in writes:
                if write.many:
                    conn.executemany(write.sql, write.params)
                else:
                    conn.execute(write.sql, write.params)

        try:
            transaction(self._connection(), apply)
        except Exception as exc:  # any error: the writer thread must outlive a bad row
            log.error("store: %d queued writes were lost: %s", len(writes), type(exc).__name__)

    def stop(self, timeout: float) -> None:
        self.queue.put(_STOP)
        self.thread.join(timeout)


class Store:
    """The SQLite store of one gateway process (see the module docstring for the threading)."""

    def __init__(self, path: str, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._reader: _Worker | None = None
        self._writer: _Worker | None = None
        self._closed = False
        _OPEN_STORES.add(self)

    def _worker(self, kind: str) -> _Worker:
        with self._lock:
            if self._closed:
                raise StoreError("the store is closed")
            if os.getpid() != self._pid:  # forked: the parent's threads do not exist here
                _INHERITED.extend(w for w in (self._reader, self._writer) if w is not None)
                self._reader = self._writer = None
                self._pid = os.getpid()
            if kind == "reader":
                if self._reader is None:
                    self._reader = _Worker(self, "reader")
                return self._reader
            if self._writer is None:
                self._writer = _Worker(self, "writer")
            return self._writer

    def _submit(self, kind: str, fn: Callable[[sqlite3.Connection], T], in_transaction: bool) -> Any:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._worker(kind).queue.put(_Call(fn, future, in_transaction))
        return future

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the reader thread."""
        future: concurrent.futures.Future[T] = self._submit("reader", fn, False)
        return await asyncio.wrap_future(future)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in one transaction on the writer thread, after queued writes."""
        future: concurrent.futures.Future[T] = self._submit("writer", fn, True)
        return await asyncio.wrap_future(future)

    def enqueue(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Queue a write that nobody waits for; it is committed with others within ~50 ms."""
        try:
            self._worker("writer").queue.put(_Write(sql, params))
        except StoreError:
            log.warning("store: a write after close was dropped")

    def enqueue_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Like ``enqueue`` for many rows of one statement: one hand-off to the writer thread."""
        try:
            self._worker("writer").queue.put(_Write(sql, rows, many=True))
        except StoreError:
            log.warning("store: %d writes after close were dropped", len(rows))

    def close(self, timeout: float = 5.0) -> None:
        """Commit queued writes, close the connections and stop the threads of this process."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = [w for w in (self._writer, self._reader) if w is not None]
            self._reader = self._writer = None
            mine = os.getpid() == self._pid
        _OPEN_STORES.discard(self)
        if mine:
            for worker in workers:
                worker.stop(timeout)


_OPEN_STORES: weakref.WeakSet[Store] = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    """A normal interpreter exit still commits queued audit entries (forked workers _exit)."""
    for store in list(_OPEN_STORES):
        store.close(timeout=2.0)
