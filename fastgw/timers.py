"""A deadline that is cheap to move: the per-connection timer of the request path.

``loop.call_later`` + ``cancel`` costs about 2.3 µs on uvloop (a libuv timer is created, started,
stopped and closed), and a keep-alive connection used to do it two or three times per request
(header, body, idle and read timeouts). ``Deadline`` keeps one loop timer and moves a plain
number instead: ``set`` only creates a timer when the new deadline is earlier than the one
armed, ``clear`` creates nothing, and a timer that fires before the current deadline (it was
moved later meanwhile) re-arms itself for the rest. So a request costs a few attribute writes,
and a connection's timer is recreated about once per timeout period, whatever its request rate.

Contract: ``callback`` runs once, on the loop, no earlier than ``seconds`` after the latest
``set`` (never after a later ``clear``), and the deadline is clear when it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

_RESOLUTION = 0.001  # uvloop's timers and clock count milliseconds


class Deadline:
    """One pending callback at a movable time (see the module docstring)."""

    __slots__ = ("_loop", "_handle", "_armed_at", "_when", "_callback")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0  # when the loop timer fires (valid while _handle is set)
        self._when = 0.0  # the deadline; 0: none
        self._callback: Callable[[], object] | None = None

    @property
    def pending(self) -> bool:
        return self._callback is not None

    def set(self, seconds: float, callback: Callable[[], object]) -> None:
        """Run ``callback`` in ``seconds`` (replacing any deadline set before)."""
        when = self._loop.time() + seconds
        self._when = when
        self._callback = callback
        if self._handle is None or self._armed_at > when:
            if self._handle is not None:
                self._handle.cancel()
            self._armed_at = when
            self._handle = self._loop.call_at(when, self._fire)

    def clear(self) -> None:
        """No deadline (the loop timer, if armed, fires once more and does nothing)."""
        self._callback = None

    def cancel(self) -> None:
        """No deadline and no loop timer: for a connection that is closing."""
        self._callback = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        callback = self._callback
        if callback is None:
            return
        when = self._when
        if when - self._loop.time() > _RESOLUTION:
            self._armed_at = when
            self._handle = self._loop.call_at(when, self._fire)
            return
        self._callback = None
        callback()
