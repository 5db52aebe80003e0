"""``llm: openai`` (SPEC 8): ask for usage on streams and count the tokens on the way back."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..llm import UsageSniffer, prepare_openai_body
from ..metrics import Metrics
from ..pipeline import Filter

if TYPE_CHECKING:
    from ..exchange import Exchange


class OpenAIUsage(Filter):
    """Reads a copy of each relayed chunk; the response is never held back or altered."""

    PRIORITY = 650

    def __init__(self, metrics: Metrics) -> None:
        self.tokens = metrics.llm_tokens

    def on_body(self, ex: Exchange, body: bytes) -> bytes:
        return prepare_openai_body(body)

    def on_response_head(self, ex: Exchange, status: int, content_type: str) -> None:
        if 200 <= status < 300:
            ex.sniffer = UsageSniffer(content_type.startswith("text/event-stream"))

    def on_response_data(self, ex: Exchange, data: bytes) -> None:
        if ex.sniffer is not None:
            ex.sniffer.feed(data)

    def on_complete(self, ex: Exchange) -> None:
        sniffer = ex.sniffer
        if sniffer is None or not ex.response_complete:
            return
        sniffer.finish()
        model = ex.model = sniffer.model or "unknown"
        ex.input_tokens, ex.output_tokens = sniffer.input_tokens, sniffer.output_tokens
        if sniffer.input_tokens:
            self.tokens.labels(model, "input").inc(sniffer.input_tokens)
        if sniffer.output_tokens:
            self.tokens.labels(model, "output").inc(sniffer.output_tokens)
