"""fastgw.upstream.pool against a real local TCP server: exact and bounded (SPEC 13.7), and reloads.

Every scenario runs the real pool on real sockets to a counting HTTP/1.1 server on 127.0.0.1;
connections are used for a real exchange before they are released, so reuse is the real thing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from fastgw.upstream.client import UpstreamConnection
from fastgw.upstream.pool import MAX_PENDING_REQUESTS, PoolExhausted, Upstream

T = TypeVar("T")


class CountingServer:
    """Answers every request with 200 and counts the sockets it sees open."""

    def __init__(self) -> None:
        self.open = 0
        self.max_open = 0
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=4096)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.accepted += 1
        self.max_open = max(self.max_open, self.open)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open -= 1
            writer.close()


class Sink:
    def __init__(self) -> None:
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.status = 0

    def on_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status

    def on_data(self, data: bytes) -> bool:
        return True

    def on_end(self) -> None:
        if not self.done.done():
            self.done.set_result(self.status)

    def on_error(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(reason))


async def exchange(conn: UpstreamConnection) -> None:
    """One GET on ``conn``; afterwards it is reusable, as after a proxied request."""
    sink = Sink()
    conn.begin(sink, b"GET / HTTP/1.1\r\nHost: upstream\r\n\r\n", False)
    assert await sink.done == 200
    assert conn.reusable


def run(scenario: Callable[[CountingServer, str], Awaitable[T]]) -> T:
    async def main() -> T:
        server = CountingServer()
        url = await server.start()
        try:
            result = await scenario(server, url)
            await settle(lambda: server.open == 0)  # every scenario closes what it opened
            return result
        finally:
            await server.stop()

    return asyncio.run(main())


async def settle(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (sockets closing, tasks queueing)."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition never held")


def first_step(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine's first step: its result if it finishes without waiting at all."""
    try:
        coro.send(None)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the call waited")


# --- (a) max_connections is exact --------------------------------------------------------------


def test_two_thousand_callers_never_take_more_than_max_connections() -> None:
    async def scenario(server: CountingServer, url: str) -> None:
        up = Upstream("svc", [url], max_connections=50, connect_timeout=60.0, max_pending=2000)
        (target,) = up.targets
        seen_active: list[int] = []
        seen_open: list[int] = []

        async def caller(i: int) -> bool:
            conn, reused = await up.connect(target)
            seen_active.append(up.active)
            await exchange(conn)
            seen_open.append(server.open)
            for _ in range(i % 4):  # hold it briefly while others queue
                await asyncio.sleep(0)
            seen_active.append(up.active)
            up.release(target, conn, ok=True)
            seen_active.append(up.active)
            return reused

        # Callers keep arriving while earlier ones release: a newcomer must never take a slot
        # that was freed for a waiter.
        callers = []
        for i in range(2000):
            callers.append(asyncio.ensure_future(caller(i)))
            if i % 10 == 9:
                await asyncio.sleep(0)
        reused = await asyncio.gather(*callers)

        assert len(reused) == 2000
        assert max(seen_active) == 50  # the queue kept every slot busy, and never one more
        assert max(seen_open) <= 50 and server.max_open <= 50
        assert server.accepted <= 50 and reused.count(False) == server.accepted
        assert (up.active, up.pending, target.active) == (0, 0, 0)
        up.close()

    run(scenario)


def test_a_freed_slot_goes_to_the_oldest_waiter_not_to_a_newcomer() -> None:
    async def scenario(server: CountingServer, url: str) -> None:
        up = Upstream("svc", [url], max_connections=1, connect_timeout=60.0)
        (target,) = up.targets
        held, _ = await up.connect(target)
        await exchange(held)
        order: list[str] = []

        async def waiter(name: str) -> None:
            conn, _ = await up.connect(target)
            order.append(name)
            up.release(target, conn, ok=True)

        queued = [asyncio.ensure_future(waiter(name)) for name in ("first", "second")]
        await settle(lambda: up.pending == 2)
        up.release(target, held, ok=True)
        assert up.active == 1  # handed over, not freed: no newcomer can slip in
        assert up.take_idle(target) is None
        await asyncio.gather(*queued)
        assert order == ["first", "second"]
        assert (up.active, up.pending, server.accepted) == (0, 0, 1)
        up.close()

    run(scenario)


# --- (b) the wait queue is bounded ---------------------------------------------------------------


def test_a_full_queue_refuses_at_once() -> None:
    async def scenario(server: CountingServer, url: str) -> None:
        up = Upstream("svc", [url], max_connections=2, connect_timeout=60.0, max_pending=3)
        (target,) = up.targets
        held = [(await up.connect(target))[0] for _ in range(2)]
        queued = [asyncio.ensure_future(up.connect(target)) for _ in range(3)]
        await settle(lambda: up.pending == 3)

        # Refused on its very first step: it never waited, and no slot was freed meanwhile.
        with pytest.raises(PoolExhausted):
            first_step(up.connect(target))
        assert (up.active, up.pending) == (2, 3)
        assert not any(task.done() for task in queued)

        for conn in held:
            await exchange(conn)
            up.release(target, conn, ok=True)
        first, second = await asyncio.gather(queued[0], queued[1])
        assert up.pending == 1 and not queued[2].done()
        for conn, _ in (first, second):
            await exchange(conn)
            up.release(target, conn, ok=True)
        last, _ = await queued[2]
        up.release(target, last, ok=False)
        assert (up.active, up.pending) == (0, 0)
        up.close()

    run(scenario)


def test_the_default_queue_bound() -> None:
    assert MAX_PENDING_REQUESTS == 1024
    assert Upstream("svc", ["http://127.0.0.1:1"]).max_pending == MAX_PENDING_REQUESTS


def test_a_waiter_gives_up_after_connect_timeout_without_a_slot() -> None:
    async def scenario(server: CountingServer, url: str) -> None:
        up = Upstream("svc", [url], max_connections=1, connect_timeout=0.05)
        (target,) = up.targets
        held, _ = await up.connect(target)
        with pytest.raises(PoolExhausted):
            await up.connect(target)
        assert (up.active, up.pending) == (1, 0)
        up.release(target, held, ok=False)
        assert up.active == 0
        conn, _ = await up.connect(target)
        up.release(target, conn, ok=False)
        up.close()

    run(scenario)


# --- (c) cancelled waiters ---------------------------------------------------------------------


def test_cancelled_waiters_leave_the_queue_and_leak_no_slot() -> None:
    async def scenario(server: CountingServer, url: str) -> None:
        up = Upstream("svc", [url], max_connections=5, connect_timeout=60.0)
        (target,) = up.targets
        held = [(await up.connect(target))[0] for _ in range(5)]
        waiters = [asyncio.ensure_future(up.connect(target)) for _ in range(100)]
        await settle(lambda: up.pending == 100)

        for task in waiters:
            task.cancel()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(result, asyncio.CancelledError) for result in results)
        assert (up.pending, up.active) == (0, 5)

        for conn in held:
            await exchange(conn)
            up.release(target, conn, ok=True)
        assert (up.active, target.active) == (0, 0)
        conn, reused = first_step(up.connect(target))  # at once: an idle connection, no wait
        assert reused and up.active == 1
        up.release(target, conn, ok=False)
        assert server.accepted == 5
        up.close()

    run(scenario)


def test_a_slot_handed_to_a_waiter_cancelled_at_that_moment_is_passed_on() -> None:
    async def scenario(server: CountingServer, url: str) -> None:
        up = Upstream("svc", [url], max_connections=1, connect_timeout=60.0)
        (target,) = up.targets
        held, _ = await up.connect(target)
        await exchange(held)
        doomed = asyncio.ensure_future(up.connect(target))
        heir = asyncio.ensure_future(up.connect(target))
        await settle(lambda: up.pending == 2)

        up.release(target, held, ok=True)  # the slot goes to `doomed`...
        doomed.cancel()  # ...which is cancelled before it runs to take it
        with pytest.raises(asyncio.CancelledError):
            await doomed
        conn, reused = await heir
        assert reused and (up.active, up.pending) == (1, 0)
        up.release(target, conn, ok=False)
        assert up.active == 0
        up.close()

    run(scenario)


# --- (d) reload: a retired pool parks nothing --------------------------------------------------


def idle_total(up: Upstream) -> int:
    return sum(len(target.idle) for target in up.targets)


def test_retire_moves_idle_and_released_connections_to_the_successor() -> None:
    async def scenario(server: CountingServer, url: str) -> None:
        old = Upstream("svc", [url], max_connections=10)
        (old_target,) = old.targets
        conns = [(await old.connect(old_target))[0] for _ in range(3)]
        for conn in conns:
            await exchange(conn)
        old.release(old_target, conns[0], ok=True)  # idle before the reload

        new = Upstream("svc", ["http://127.0.0.1:1", url], max_connections=10)
        new_target = new.targets[1]
        old.retire(new)
        assert idle_total(old) == 0 and list(new_target.idle) == [conns[0]]

        for conn in conns[1:]:  # requests that were running release after the reload
            old.release(old_target, conn, ok=True)
        assert idle_total(old) == 0 and old.active == 0
        assert set(new_target.idle) == set(conns) and len(new_target.idle) == 3
        assert not any(conn.closed for conn in conns)

        reused = [await new.connect(new_target) for _ in range(3)]
        assert all(was_reused for _, was_reused in reused)
        assert server.accepted == 3
        for conn, _ in reused:
            new.release(new_target, conn, ok=False)
        new.close()

    run(scenario)


def test_retire_closes_what_the_successor_cannot_take() -> None:
    async def scenario(server: CountingServer, url: str) -> None:
        async def busy(up: Upstream, count: int) -> list[UpstreamConnection]:
            conns = [(await up.connect(up.targets[0]))[0] for _ in range(count)]
            for conn in conns:
                await exchange(conn)
            return conns

        old = Upstream("svc", [url], max_connections=10)
        conns = await busy(old, 3)
        small = Upstream("svc", [url], max_connections=2)
        held = await busy(small, 1)  # room left: one connection
        old.retire(small)
        for conn in conns:
            old.release(old.targets[0], conn, ok=True)
        assert list(small.targets[0].idle) == [conns[0]] and idle_total(old) == 0
        assert [conn.closed for conn in conns] == [False, True, True]

        moved = Upstream("svc", [url])
        (conn,) = await busy(moved, 1)
        moved.retire(Upstream("svc", ["http://127.0.0.1:1"]))  # the new config has no such target
        moved.release(moved.targets[0], conn, ok=True)
        assert conn.closed and idle_total(moved) == 0

        removed = Upstream("gone", [url])
        (conn,) = await busy(removed, 1)
        removed.retire(None)  # the upstream left the config
        removed.release(removed.targets[0], conn, ok=True)
        assert conn.closed and idle_total(removed) == 0

        await settle(lambda: server.open == 2)  # the server saw the closed ones go
        small.release(small.targets[0], held[0], ok=True)
        assert idle_total(small) == 2
        small.close()

    run(scenario)


def test_a_pool_retired_twice_passes_connections_to_the_newest() -> None:
    async def scenario(server: CountingServer, url: str) -> None:
        first = Upstream("svc", [url])
        (target,) = first.targets
        conn, _ = await first.connect(target)
        await exchange(conn)
        second, third = Upstream("svc", [url]), Upstream("svc", [url])
        first.retire(second)
        second.retire(third)
        first.release(target, conn, ok=True)
        assert idle_total(first) == idle_total(second) == 0
        assert list(third.targets[0].idle) == [conn] and not conn.closed
        third.close()
        assert conn.closed

    run(scenario)


def test_released_after_close_is_closed() -> None:
    async def scenario(server: CountingServer, url: str) -> None:
        up = Upstream("svc", [url])
        (target,) = up.targets
        conn, _ = await up.connect(target)
        await exchange(conn)
        up.close()
        up.release(target, conn, ok=True)
        assert conn.closed and idle_total(up) == 0

    run(scenario)
