"""The store of one gateway process: queries on two threads, each with its own connection.

Why the shape (the same for SQLite and PostgreSQL; ``Backend`` is what differs):

- The event loop never runs a query. Every query runs on one of two threads per process: a
  *reader* (token lookups, lists, reports) and a *writer* (everything that writes). A slow
  commit, or a slow report, cannot stall a token lookup queued on the other thread.
- Fire-and-forget writes (usage rows, audit entries, ``last_used_at``) are queued and committed
  by the writer in one transaction per short window, so a burst costs one commit, not one per
  request.
- When the database cannot be reached, queued writes are kept (at most ``BACKLOG_MAX`` rows)
  and retried every ``RETRY_INTERVAL``; what does not fit is dropped and counted
  (``Store.dropped``). Awaited calls fail with ``StoreUnavailable`` at once, and every await is
  bounded by ``CALL_TIMEOUT``: a database that stops answering never hangs a request.
- ``server.workers`` forks processes that share the database. A connection must never cross
  a fork, so threads and connections are created lazily, on first use, in the process that
  uses them; a process that finds state from its parent starts afresh and never closes the
  parent's connections (closing them in the child could disturb the parent's session).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .db import Connection, StoreError, StoreUnavailable, transaction

log = logging.getLogger("fastgw.store")

T = TypeVar("T")

BATCH_WINDOW = 0.05  # seconds the writer waits to gather queued writes into one transaction
BATCH_MAX = 500
BACKLOG_MAX = 100_000  # rows kept while the database is unreachable
RETRY_INTERVAL = 1.0
CALL_TIMEOUT = 10.0  # the longest any awaited query may take, queueing included


class Backend(Protocol):
    """How to reach one kind of database."""

    #: the database, fit for a message (never a password)
    description: str

    def connect(self) -> Connection:
        """A new connection with the schema up to date (raises StoreError)."""
        ...

    def store_error(self, exc: Exception) -> StoreError | None:
        """``exc`` as a StoreError (StoreUnavailable when worth retrying); None if not the driver's."""
        ...


@dataclass(frozen=True, slots=True)
class _Call:
    fn: Callable[[Connection], Any]
    future: concurrent.futures.Future[Any]
    in_transaction: bool


@dataclass(frozen=True, slots=True)
class _Write:
    sql: str
    params: Sequence[Any]
    many: bool = False  # params is a sequence of rows for executemany

    @property
    def rows(self) -> int:
        return len(self.params) if self.many else 1


_STOP = object()

# Threads a forked child inherited; kept referenced so their connections are never finalised in
# a process that does not own them.
_INHERITED: list[object] = []


class _Worker:
    """One thread with one connection, serving calls in order and batching queued writes."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name
        self.queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.conn: Connection | None = None
        self.backlog: list[_Write] = []  # writes that failed to commit, oldest first
        self.thread = threading.Thread(target=self._run, name=f"fastgw-store-{name}", daemon=True)
        self.thread.start()

    def _connection(self) -> Connection:
        if self.conn is None:
            self.conn = self.store.backend.connect()
        return self.conn

    def _next(self, writes: list[_Write], deadline: float, retry_at: float) -> object:
        if writes:
            wait: float | None = deadline - time.monotonic()
        elif self.backlog:
            wait = retry_at - time.monotonic()
        else:
            wait = None
        try:
            return self.queue.get(timeout=None if wait is None else max(0.0, wait))
        except queue.Empty:
            return None

    def _run(self) -> None:
        writes: list[_Write] = []
        deadline = 0.0
        retry_at = 0.0
        while True:
            item = self._next(writes, deadline, retry_at)
            if isinstance(item, _Write):
                if not writes:
                    deadline = time.monotonic() + BATCH_WINDOW
                writes.append(item)
                if len(writes) < BATCH_MAX:
                    continue
                item = None
            if writes or (self.backlog and time.monotonic() >= retry_at) or item is _STOP:
                # a call or a stop waits for the writes queued before it
                if not self._flush(writes):
                    retry_at = time.monotonic() + RETRY_INTERVAL
                writes = []
            if isinstance(item, _Call):
                self._call(item)
            elif item is _STOP:
                break
        if self.backlog:
            self.store.count_dropped(sum(w.rows for w in self.backlog))
            log.error("store: %d kept writes were lost at shutdown", len(self.backlog))
        self._disconnect()

    def _disconnect(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # a lost connection may fail to close; it is gone either way
                pass
            self.conn = None

    def _store_error(self, exc: Exception) -> StoreError | None:
        error = exc if isinstance(exc, StoreError) else self.store.backend.store_error(exc)
        if isinstance(error, StoreUnavailable):
            self._disconnect()  # the next query reconnects
        return error

    def _call(self, call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            conn = self._connection()
            result = transaction(conn, call.fn) if call.in_transaction else call.fn(conn)
        except Exception as exc:
            error = self._store_error(exc)
            # a bug in fn (error is None) goes to the awaiting coroutine as it is
            call.future.set_exception(exc if error is None else error)
        except BaseException as exc:
            call.future.set_exception(exc)
        else:
            call.future.set_result(result)

    def _flush(self, writes: list[_Write]) -> bool:
        """Commit the backlog and ``writes`` in one transaction; False if kept for a retry."""
        batch = self.backlog + writes
        if not batch:
            return True

        def apply(conn: Connection) -> None:
            for write in batch:
                if write.many:
                    conn.executemany(write.sql, write.params)
                else:
                    conn.execute(write.sql, write.params)

        try:
            transaction(self._connection(), apply)
        except Exception as exc:  # any error: the writer thread must outlive a bad row
            error = self._store_error(exc)
            if isinstance(error, StoreUnavailable):
                self._keep(batch, error)
                return False
            self.backlog = []
            self.store.count_dropped(sum(w.rows for w in batch))
            log.error("store: %d queued writes were lost: %s", len(batch), type(exc).__name__)
            return True
        if self.backlog:
            log.warning(
                "store: %s is back; %d kept writes committed",
                self.store.backend.description,
                len(self.backlog),
            )
        self.backlog = []
        return True

    def _keep(self, batch: list[_Write], error: StoreError) -> None:
        if not self.backlog:
            log.error("store: %s; queued writes are kept and retried", error)
        kept: list[_Write] = []
        rows = 0
        for write in reversed(batch):  # the newest are kept; the oldest dropped first
            if rows + write.rows > BACKLOG_MAX:
                self.store.count_dropped(write.rows)
                continue
            rows += write.rows
            kept.append(write)
        kept.reverse()
        self.backlog = kept

    def stop(self, timeout: float) -> None:
        self.queue.put(_STOP)
        self.thread.join(timeout)


class Store:
    """The store of one gateway process (see the module docstring for the threading)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.dropped = 0  # queued writes given up (database unreachable too long, or refused)
        self.on_dropped: Callable[[int], object] | None = None  # e.g. a metric's inc
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._reader: _Worker | None = None
        self._writer: _Worker | None = None
        self._closed = False
        _OPEN_STORES.add(self)

    def count_dropped(self, rows: int) -> None:
        """Count ``rows`` given up (called on the writer thread)."""
        self.dropped += rows
        if self.on_dropped is not None:
            self.on_dropped(rows)

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

    async def _await(self, kind: str, fn: Callable[[Connection], T], in_transaction: bool) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._worker(kind).queue.put(_Call(fn, future, in_transaction))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), CALL_TIMEOUT)
        except TimeoutError:
            raise StoreUnavailable(
                f"{self.backend.description} did not answer within {CALL_TIMEOUT:g} s"
            ) from None

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` on the reader thread."""
        return await self._await("reader", fn, False)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` in one transaction on the writer thread, after queued writes."""
        return await self._await("writer", fn, True)

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
    """A normal interpreter exit still commits queued writes (forked workers _exit)."""
    for store in list(_OPEN_STORES):
        store.close(timeout=2.0)
