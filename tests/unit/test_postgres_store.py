"""The PostgreSQL store against a real server: concurrent migrations, one claim per job, SQL spelling."""

from __future__ import annotations

import asyncio
import threading

from fastgw.store import connect_store, open_store
from fastgw.store.jobs import JobStore
from fastgw.store.postgres import MIGRATIONS, _copy_statement, _translate
from tests.postgres_server import PostgresServer


def test_instances_starting_together_migrate_once(postgres_cluster: PostgresServer) -> None:
    url = postgres_cluster.new_database()
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def boot() -> None:
        start.wait()
        try:
            connect_store(url).close()
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=boot) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    conn = connect_store(url)
    assert conn.execute("SELECT version FROM fastgw_schema").fetchall() == [(len(MIGRATIONS),)]
    conn.close()


def test_a_job_is_claimed_by_one_instance(postgres_cluster: PostgresServer) -> None:
    url = postgres_cluster.new_database()
    stores = [open_store(url) for _ in range(4)]
    try:
        jobs = [JobStore(store) for store in stores]

        async def race() -> list[bool]:
            await jobs[0].create("job-1", "", "/r", "a")
            return list(await asyncio.gather(*(j.set_running("job-1", f"i{n}") for n, j in enumerate(jobs))))

        assert sorted(asyncio.run(race())) == [False, False, False, True]
    finally:
        for store in stores:
            store.close()


def test_sqlite_spellings_are_translated() -> None:
    assert _translate("BEGIN IMMEDIATE", False) == "BEGIN"
    assert _translate("SELECT CAST(ts / 86400 AS INTEGER) FROM usage WHERE ts >= ?", True) == (
        "SELECT FLOOR(ts / 86400)::bigint FROM usage WHERE ts >= %s"
    )
    assert _translate("DELETE FROM usage WHERE rowid IN (SELECT rowid FROM usage)", False) == (
        "DELETE FROM usage WHERE ctid IN (SELECT ctid FROM usage)"
    )
    assert _translate("SELECT 5 % 2, ?", True) == "SELECT 5 %% 2, %s"


def test_plain_inserts_become_copy() -> None:
    assert (
        _copy_statement("INSERT INTO usage (ts, route) VALUES (?, ?)") == "COPY usage (ts, route) FROM STDIN"
    )
    assert _copy_statement("INSERT INTO t (a) VALUES (?) ON CONFLICT (a) DO NOTHING") is None
    assert _copy_statement("UPDATE t SET a = ?") is None
