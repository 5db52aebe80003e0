"""HTTP/1.1 on asyncio Protocols: the client connection, its header view, and the listeners."""
