"""The gateway's reading of client WebSocket frame headers, and its check of the upstream's 101."""

from __future__ import annotations

import os
import struct

import pytest

from fastgw.websocket import (
    CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR,
    ClientFrames,
    MessageWindow,
    accept_for,
    switching_protocols,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """One masked client frame."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 65536:
        length = bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        length = bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    return bytes([first]) + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


PING, PONG, CLOSE = 0x9, 0xA, 0x8


@pytest.mark.parametrize("opcode", [PING, PONG], ids=["ping", "pong"])
def test_control_frames_count_toward_the_window(opcode: int) -> None:
    frames = ClientFrames(MessageWindow(3, 60))
    stream = frame(0x1, b"a") + frame(opcode, b"x") + frame(opcode, b"y")
    assert frames.feed(stream) == (0, 0)
    offending = frame(opcode, b"z")
    assert frames.feed(offending) == (CLOSE_POLICY_VIOLATION, 0)


def test_ping_flood_in_one_chunk_is_cut_at_the_first_frame_over_the_limit() -> None:
    frames = ClientFrames(MessageWindow(5, 10))
    pings = [frame(PING, str(n).encode()) for n in range(2000)]
    code, offset = frames.feed(b"".join(pings))
    assert code == CLOSE_POLICY_VIOLATION
    assert offset == sum(len(p) for p in pings[:5])  # the five allowed ones still reach upstream


def test_the_clients_close_is_relayed_but_nothing_may_follow_it() -> None:
    frames = ClientFrames(MessageWindow(1, 60))
    assert frames.feed(frame(0x1, b"a")) == (0, 0)
    assert frames.feed(frame(CLOSE, struct.pack("!H", 1000))) == (0, 0)  # over the limit, still relayed
    assert frames.feed(frame(PING)) == (CLOSE_PROTOCOL_ERROR, 0)


@pytest.mark.parametrize(
    "bad",
    [
        frame(0x3, b"reserved data opcode"),
        frame(0xB, b"reserved control opcode"),
        frame(PING, b"fragmented", fin=False),
        frame(PING, b"p" * 126),
    ],
    ids=["reserved-data", "reserved-control", "fragmented-ping", "long-ping"],
)
def test_malformed_control_frames_are_protocol_errors(bad: bytes) -> None:
    frames = ClientFrames(None)
    assert frames.feed(frame(0x1, b"ok") + bad) == (CLOSE_PROTOCOL_ERROR, len(frame(0x1, b"ok")))


def _head(*lines: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [*lines, (b"Sec-WebSocket-Accept", accept_for(KEY).encode())]


@pytest.mark.parametrize(
    "headers",
    [
        _head(),
        _head((b"Connection", b"Upgrade")),
        _head((b"Upgrade", b"websocket")),
        _head((b"Upgrade", b"websocket"), (b"Connection", b"keep-alive")),
        _head((b"Upgrade", b"websocket2"), (b"Connection", b"Upgrade")),
        _head((b"Upgrade", b"websocket"), (b"Upgrade", b"h2c"), (b"Connection", b"Upgrade")),
    ],
    ids=["neither", "no-upgrade", "no-connection", "keep-alive", "other", "two"],
)
def test_a_101_without_the_websocket_upgrade_gets_no_tunnel(headers: list[tuple[bytes, bytes]]) -> None:
    assert switching_protocols(headers, KEY, "rid") is None


def test_a_101_upgrade_is_matched_by_token_in_any_case() -> None:
    good = _head((b"upgrade", b" WebSocket "), (b"CONNECTION", b"keep-alive, UpGrade"))
    head = switching_protocols(good, KEY, "rid")
    assert head is not None and head.startswith(b"HTTP/1.1 101 ")
    split = _head((b"Upgrade", b"websocket"), (b"Connection", b"keep-alive"), (b"Connection", b"upgrade"))
    assert switching_protocols(split, KEY, "rid") is not None
    # The same heads, one token off, are refused.
    near = _head((b"upgrade", b" WebSocket "), (b"CONNECTION", b"keep-alive, UpGraded"))
    assert switching_protocols(near, KEY, "rid") is None
    wrong_accept = [(b"Upgrade", b"websocket"), (b"Connection", b"upgrade"), (b"Sec-WebSocket-Accept", b"x")]
    assert switching_protocols(wrong_accept, KEY, "rid") is None
