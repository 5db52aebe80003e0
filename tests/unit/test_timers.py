"""``Deadline``: one loop timer per connection, moved by plain writes (fastgw/timers.py)."""

from __future__ import annotations

import asyncio

import uvloop

from fastgw.timers import Deadline


def run(scenario: object) -> None:
    uvloop.run(scenario)  # type: ignore[arg-type]


def test_fires_once_no_earlier_than_the_latest_set() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        deadline = Deadline(loop)
        start = loop.time()
        deadline.set(0.05, lambda: fired.append(loop.time() - start))
        await asyncio.sleep(0.02)
        moved_at = loop.time() - start
        deadline.set(0.1, lambda: fired.append(loop.time() - start))  # later: the timer is kept
        await asyncio.sleep(0.3)
        assert len(fired) == 1
        assert fired[0] >= moved_at + 0.1 - 0.002
        assert not deadline.pending

    run(scenario())


def test_an_earlier_deadline_fires_early_and_clear_stops_it() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        fired: list[str] = []
        deadline = Deadline(loop)
        deadline.set(10, lambda: fired.append("late"))
        deadline.set(0.02, lambda: fired.append("early"))  # earlier: a new timer
        await asyncio.sleep(0.1)
        assert fired == ["early"]
        deadline.set(0.02, lambda: fired.append("cleared"))
        deadline.clear()
        await asyncio.sleep(0.1)
        deadline.set(0.02, lambda: fired.append("cancelled"))
        deadline.cancel()
        await asyncio.sleep(0.1)
        assert fired == ["early"]

    run(scenario())


def test_moving_a_deadline_later_creates_no_timer() -> None:
    """Per request a kept-alive connection only writes numbers (no call_later per request)."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        created = 0
        call_at = loop.call_at

        def counting_call_at(when: float, callback: object) -> asyncio.TimerHandle:
            nonlocal created
            created += 1
            return call_at(when, callback)  # type: ignore[arg-type]

        loop.call_at = counting_call_at  # type: ignore[method-assign,assignment]
        deadline = Deadline(loop)
        for _ in range(1000):
            deadline.set(60, lambda: None)
            deadline.clear()
        assert created == 1

    run(scenario())
