"""One JSON line per request on stdout, written in batches.

Each record is encoded straight onto the end of one reusable ``bytearray`` (``encode_into``, no
per-line ``bytes`` object, no join). The first line of a batch schedules ``flush`` with
``call_soon``, so everything logged during one event-loop iteration goes out in one ``write`` at
the next; a test or an operator tailing the log still sees each line within milliseconds. A batch
that grows past ``FLUSH_BYTES`` is written at once, and ``flush()`` (called by the server at
shutdown) writes whatever is pending, so no line is lost on SIGTERM. Without a running loop (a
thread, or after the loop has stopped) a line is written immediately.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import BinaryIO

import msgspec


class AccessRecord(msgspec.Struct, gc=False):  # only str/int/float/None fields: no cycles to track
    ts: str
    requestId: str  # noqa: N815 - wire names
    method: str
    route: str
    path: str
    status: int
    bytes: int
    durationMs: float  # noqa: N815
    upstream: str | None
    userId: str | None  # noqa: N815
    traceId: str = ""  # noqa: N815 - the W3C trace id (SPEC 13.6)


_encoder = msgspec.json.Encoder()
_encode_into = _encoder.encode_into

FLUSH_BYTES = 1 << 16

# (whole second, "YYYY-MM-DDTHH:MM:SS.") of the last call; replaced as one tuple, so a thread
# calling utc_timestamp() never sees a second paired with another second's text.
_second: tuple[int, str] = (-1, "")


def utc_timestamp() -> str:
    """Now in UTC as ``2026-01-02T03:04:05.678Z`` (milliseconds, truncated).

    The date and time of day are rendered once per second; each call only formats the
    milliseconds.
    """
    global _second
    now = time.time()
    sec = int(now)
    cached = _second
    if cached[0] != sec:
        cached = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec)))
    # now - sec < 1 by at least one float step of now (2**-22 s today), so this is at most 999.
    # %-formatting truncates the float itself: measurably cheaper than f"{int(...):03d}".
    return "%s%03dZ" % (cached[1], (now - sec) * 1000)  # noqa: UP031


class AccessLog:
    def __init__(self, enabled: bool = True, out: BinaryIO | None = None) -> None:
        self.enabled = enabled
        self._out = out if out is not None else sys.stdout.buffer
        self._buf = bytearray()

    def write(self, record: AccessRecord) -> None:
        if not self.enabled:
            return
        buf = self._buf
        first = not buf
        _encode_into(record, buf, -1)
        buf.append(10)  # b"\n"
        if first:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no running loop: nothing would flush later
                self.flush()
        elif len(buf) >= FLUSH_BYTES:
            self.flush()

    @property
    def pending(self) -> int:
        """Bytes encoded but not yet written."""
        return len(self._buf)

    def flush(self) -> None:
        buf = self._buf
        if not buf:
            return
        try:
            self._out.write(buf)
            self._out.flush()
        except (OSError, ValueError):
            pass  # a closed stdout must not take the gateway down
        finally:
            buf.clear()
