"""The states of a client connection's request side (``ClientConnection.state``).

``HEAD``: reading a request head; ``HEAD_PHASE``: the delegate is admitting the request;
``BODY``: reading its body; ``WAIT``: the request is read, its response is not finished;
``TUNNEL``: bytes go to a WebSocket tunnel; ``LINGER``: answered and closing, draining input;
``CLOSED``.
"""

HEAD, HEAD_PHASE, BODY, WAIT, TUNNEL, LINGER, CLOSED = range(7)
