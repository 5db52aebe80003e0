"""The SQLite store: schema, token rows, revocation counter, batched writes, fork safety."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import pytest

from fastgw.auth.api_tokens import hash_token, issue
from fastgw.store import AuditLog, StoreError, connect, open_store
from fastgw.store import audit as audit_rows
from fastgw.store import tokens as token_rows
from fastgw.store.db import transaction
from fastgw.store.sqlite import MIGRATIONS


def test_schema_is_created_in_wal_mode_and_reopens(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    conn = connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"api_tokens", "audit_log", "store_meta"} <= tables
    columns = [row[1] for row in conn.execute("PRAGMA table_info(api_tokens)")]
    assert columns == [
        "id", "token_hash", "name", "user_id", "role", "plan", "app_key", "scopes",
        "created_at", "last_used_at", "revoked_at",
    ]  # fmt: skip
    conn.close()
    connect(path).close()  # migrating twice is a no-op


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    sqlite3.connect(path).execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer"):
        connect(path)


def test_unopenable_store_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        connect(str(tmp_path / "missing-dir" / "s.db"))


def test_tokens_are_stored_hashed_and_revocation_bumps_the_revision(tmp_path: Path) -> None:
    conn = connect(str(tmp_path / "s.db"))
    issued = transaction(
        conn,
        lambda c: issue(c, "fgw_", name="n", user_id="u", role="r", plan="p", app_key="a", scopes=("x", "y")),
    )
    assert issued.token.startswith("fgw_") and len(issued.token) == 4 + 43
    row = conn.execute("SELECT token_hash FROM api_tokens").fetchone()
    assert row[0] == hash_token(issued.token) and issued.token not in row[0]
    found = token_rows.find_by_hash(conn, hash_token(issued.token))
    assert found is not None and found[0].scopes == ("x", "y") and found[0].user_id == "u"
    assert token_rows.revision(conn) == 0
    now = "2026-01-01T00:00:00.000Z"
    assert (
        transaction(conn, lambda c: token_rows.revoke(c, issued.record.id, now, user_id="other")) == "unknown"
    )
    assert transaction(conn, lambda c: token_rows.revoke(c, issued.record.id, now, user_id="u")) == "revoked"
    assert transaction(conn, lambda c: token_rows.revoke(c, issued.record.id, now)) == "already"
    assert token_rows.revision(conn) == 1
    assert token_rows.list_tokens(conn, "u") == []
    assert [r.revoked_at for r in token_rows.list_tokens(conn, active_only=False)] == [now]


def test_async_reads_writes_and_batched_entries(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s.db"))

    async def scenario() -> list[dict[str, object]]:
        log = AuditLog(store)
        for i in range(20):
            log.record("u", "thing.done", "thing", str(i), {"i": i})
        await store.write(lambda c: token_rows.revoke(c, "tok_000000000000", "t"))  # after queued writes
        return await log.recent(5)

    entries = asyncio.run(scenario())
    assert [e["targetId"] for e in entries] == ["19", "18", "17", "16", "15"]
    assert entries[0]["details"] == {"i": 19} and isinstance(entries[0]["logId"], int)
    AuditLog(store).record(None, "queued", None, None)
    store.close()  # commits what is still queued
    conn = connect(str(tmp_path / "s.db"))
    assert len(audit_rows.recent(conn, 100)) == 21
    with pytest.raises(StoreError):
        asyncio.run(store.read(lambda c: 1))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_store_used_before_fork_works_in_the_child(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "s.db"))
    assert asyncio.run(store.read(token_rows.revision)) == 0
    with warnings.catch_warnings():  # 3.12+ warns about forking with threads; the store is built for it
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child opens its own threads and connection
        code = 1
        try:
            AuditLog(store).record("child", "forked", None, None)
            code = 0 if asyncio.run(store.read(token_rows.revision)) == 0 else 1
            store.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [e["action"] for e in asyncio.run(AuditLog(store).recent(5))] == ["forked"]
    store.close()


def _open_and_close(path: str, results: Any) -> None:
    try:
        connect(path).close()
        results.put("ok")
    except Exception as exc:  # reported to the parent
        results.put(repr(exc))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_processes_preparing_a_new_file_together_all_succeed(tmp_path: Path) -> None:
    """Two processes switching a new file to WAL at once can deadlock on its locks; SQLite says
    "database is locked" at once, without waiting, and connect must retry rather than fail."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    outcomes = []
    with warnings.catch_warnings():  # 3.12+ warns about forking with threads
        warnings.simplefilter("ignore", DeprecationWarning)
        for round_ in range(15):
            path = str(tmp_path / f"race-{round_}.db")
            results = context.Queue()
            procs = [context.Process(target=_open_and_close, args=(path, results)) for _ in range(4)]
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.join(30)
            outcomes.extend(results.get(timeout=5) for _ in procs)
    assert outcomes == ["ok"] * len(outcomes)
