"""The floor of any Python proxy: a uvloop ``asyncio.Protocol`` TCP forwarder (bench/run.sh).

For each client connection it opens one upstream connection and relays bytes both ways. It does
not parse HTTP at all: no headers are read, changed or added, and keep-alive works because the
two connections simply stay open together. Backpressure: when one side's write buffer is over
its high-water mark, reading from the other side is paused until it drains.

No real proxy can do less work per request, so no Python proxy can be faster than this.

    python bench/peers/uvloop_forwarder.py --listen 127.0.0.1:8080 --upstream 127.0.0.1:8081
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
from typing import cast

import uvloop


class Half(asyncio.Protocol):
    """One side of a relayed pair; ``peer`` is the other side once both are connected."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Half | None = None
        self.pending: list[bytes] = []  # client bytes that arrived before the upstream connected
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TCPTransport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # small writes go out at once (no Nagle delay), both directions
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.pending.append(data)
            assert self.transport is not None
            self.transport.pause_reading()  # at most one read ahead of the upstream connect
        else:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.closed:
            if peer.transport.can_write_eof():
                peer.transport.write_eof()
                return True  # keep our write side open for the other direction
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.closed:
            peer.transport.close()

    # The peer's transport calls these about its own write buffer; act on our reading.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.closed:
            self.peer.transport.resume_reading()


class Client(Half):
    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__()
        self.upstream = upstream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(Half, *self.upstream)
        except OSError:
            assert self.transport is not None
            self.transport.close()
            return
        if self.closed:
            upstream.transport.close()  # type: ignore[union-attr]
            return
        upstream.peer, self.peer = self, upstream
        assert upstream.transport is not None and self.transport is not None
        for data in self.pending:
            upstream.transport.write(data)
        self.pending.clear()
        self.transport.resume_reading()


async def serve(listen: str, upstream: str) -> None:
    loop = asyncio.get_running_loop()
    host, _, port = listen.rpartition(":")
    up_host, _, up_port = upstream.removeprefix("http://").rstrip("/").rpartition(":")
    target = (up_host, int(up_port))
    server = await loop.create_server(lambda: Client(target), host, int(port), backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"uvloop forwarder on {listen} -> {upstream}", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8080")
    parser.add_argument("--upstream", default="127.0.0.1:8081")
    args = parser.parse_args()
    uvloop.run(serve(args.listen, args.upstream))


if __name__ == "__main__":
    main()
