"""The SQLite file behind the store (``store: sqlite:///path``): schema and connections.

One file per machine; processes on that machine (``server.workers``, the CLI) share it through
SQLite's locking, in WAL mode so readers never wait for writers. ``threads.Store`` runs the
queries; this module opens the file and keeps its schema current.
"""

from __future__ import annotations

import sqlite3
import time

from .db import IntegrityError, StoreError, StoreUnavailable

# Tables whose SQL both databases accept as written (postgres.py uses them too).
API_TOKENS = (
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
)
REFRESH_TABLE = """CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT '',
    plan TEXT NOT NULL DEFAULT '',
    scopes TEXT,
    email TEXT,
    created_at TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    rotated_at TEXT,
    revoked_at TEXT
)"""

# One entry per schema version; PRAGMA user_version counts how many are applied. Later features
# (usage records, async jobs) append entries here and never edit the ones before them.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        *API_TOKENS,
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
    (
        # The instance (process) running each job, and when each instance was last alive: any
        # instance fails the unfinished jobs of one that stopped (store/jobs.py).
        "ALTER TABLE jobs ADD COLUMN instance TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX jobs_by_status ON jobs (status, updated_at)",
        "CREATE TABLE instances (id TEXT PRIMARY KEY, seen_at REAL NOT NULL) WITHOUT ROWID",
    ),
    (
        # Refresh tokens of browser sessions (store/refresh.py), stored only as hashes.
        REFRESH_TABLE,
        "CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id)",
    ),
)


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
        _prepare(conn, time.monotonic() + busy_timeout)
    except StoreError:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot prepare the store {path!r}: {exc}") from None
    return conn


def _prepare(conn: sqlite3.Connection, deadline: float) -> None:
    """WAL mode and the schema. Two processes preparing a new file at once can deadlock on its
    locks, which SQLite reports at once as "database is locked" instead of waiting: retried
    until ``deadline``."""
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            _migrate(conn)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


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
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class SqliteBackend:
    """``threads.Backend`` for one SQLite file."""

    def __init__(self, path: str, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.description = f"the store {path!r}"

    def connect(self) -> sqlite3.Connection:
        return connect(self.path, self.busy_timeout)

    def store_error(self, exc: Exception) -> StoreError | None:
        if isinstance(exc, sqlite3.IntegrityError):
            return IntegrityError(f"store query refused: {exc}")
        if isinstance(exc, sqlite3.OperationalError):  # locked past the busy timeout, I/O
            return StoreUnavailable(f"store query failed: {type(exc).__name__}: {exc}")
        if isinstance(exc, sqlite3.Error):
            return StoreError(f"store query failed: {type(exc).__name__}: {exc}")
        return None
