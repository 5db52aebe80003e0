"""``llm: openai`` routes: ask for usage on streams, and read it on the way back (SPEC 8).

The response is never held back: the sniffer reads a copy of each chunk as it is relayed. For
event streams it parses complete ``data:`` lines (the usage arrives in the last event when
``stream_options.include_usage`` is set); for JSON responses it keeps up to 1 MiB to parse at
the end.
"""

from __future__ import annotations

from typing import Any

import msgspec

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
_MAX_KEPT = 1 << 20


def prepare_openai_body(body: bytes) -> bytes:
    """Set ``stream_options.include_usage`` on streaming requests; anything else passes as is."""
    if not body or b'"stream"' not in body:
        return body
    try:
        doc = _decoder.decode(body)
    except msgspec.DecodeError:
        return body  # the upstream answers malformed requests itself
    if not isinstance(doc, dict) or doc.get("stream") is not True:
        return body
    options = doc.get("stream_options")
    if not isinstance(options, dict):
        options = {}
    options["include_usage"] = True
    doc["stream_options"] = options
    return _encoder.encode(doc)


class UsageSniffer:
    """Collects ``model`` and token counts from an OpenAI chat completion response."""

    __slots__ = ("sse", "kept", "model", "input_tokens", "output_tokens")

    def __init__(self, sse: bool) -> None:
        self.sse = sse
        self.kept = bytearray()
        self.model: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0

    def feed(self, data: bytes) -> None:
        kept = self.kept
        if len(kept) + len(data) > _MAX_KEPT:
            if not self.sse:
                return
            kept.clear()  # a line this long is not an event we can use
        kept += data
        if not self.sse:
            return
        end = kept.rfind(b"\n")
        if end < 0:
            return
        lines = bytes(kept[:end]).split(b"\n")
        del kept[: end + 1]
        for line in lines:
            line = line.strip()
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                if payload and payload != b"[DONE]":
                    self._take(payload)

    def finish(self) -> None:
        if self.kept:
            if self.sse:
                self.feed(b"\n")
            else:
                self._take(bytes(self.kept))
            self.kept.clear()

    def _take(self, payload: bytes) -> None:
        try:
            doc: Any = _decoder.decode(payload)
        except msgspec.DecodeError:
            return
        if not isinstance(doc, dict):
            return
        model = doc.get("model")
        if isinstance(model, str) and model:
            self.model = model
        usage = doc.get("usage")
        if isinstance(usage, dict):
            prompt = usage.get("prompt_tokens")
            completion = usage.get("completion_tokens")
            if isinstance(prompt, int):
                self.input_tokens = prompt
            if isinstance(completion, int):
                self.output_tokens = completion
