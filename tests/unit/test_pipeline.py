"""The pipeline is compiled per route: hooks only where a filter uses them, in priority order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from fastgw.errors import LocalReply
from fastgw.pipeline import Filter, Pipeline, run_body_hooks, run_request_hooks


class Recorder(Filter):
    def __init__(self, name: str, priority: int, log: list[str], wait: bool = False) -> None:
        self.name = name
        self.log = log
        self.wait = wait
        self.PRIORITY = priority  # type: ignore[misc]

    def on_request(self, ex: Any) -> Awaitable[None] | None:
        if self.wait:
            return self._later()
        self.log.append(self.name)
        return None

    async def _later(self) -> None:
        await asyncio.sleep(0)
        self.log.append(self.name)

    def on_response_head(self, ex: Any, status: int, content_type: str) -> None:
        self.log.append("head:" + self.name)


class CompleteOnly(Filter):
    PRIORITY = 10

    def on_complete(self, ex: Any) -> None:
        pass


class Refuser(Filter):
    PRIORITY = 850

    def on_request(self, ex: Any) -> None:
        raise LocalReply("FORBIDDEN", "no")


def test_hooks_hold_only_the_filters_that_override_them() -> None:
    log: list[str] = []
    a, done = Recorder("a", 900, log), CompleteOnly()
    pipeline = Pipeline.compile([done, a])
    assert pipeline.request == (a,)
    assert pipeline.response_head == (a,)
    assert pipeline.complete == (done,)
    assert pipeline.body == () and pipeline.upstream_headers == () and pipeline.response_data == ()
    assert not pipeline.needs_body


def test_request_side_runs_by_priority_and_response_side_in_reverse() -> None:
    log: list[str] = []
    low, high = Recorder("low", 100, log), Recorder("high", 900, log)
    pipeline = Pipeline.compile([low, high])
    assert run_request_hooks(pipeline.request, None) is None  # nothing waited: no coroutine
    for flt in pipeline.response_head:
        flt.on_response_head(None, 200, "")
    assert log == ["high", "low", "head:low", "head:high"]


def test_a_waiting_hook_defers_the_rest_in_order() -> None:
    log: list[str] = []
    pipeline = Pipeline.compile(
        [Recorder("first", 900, log), Recorder("slow", 800, log, wait=True), Recorder("last", 700, log)]
    )
    pending = run_request_hooks(pipeline.request, None)
    assert pending is not None
    assert log == ["first"]
    asyncio.run(_wait(pending))
    assert log == ["first", "slow", "last"]


def test_a_local_reply_stops_the_chain() -> None:
    log: list[str] = []
    pipeline = Pipeline.compile([Recorder("before", 900, log), Refuser(), Recorder("after", 100, log)])
    with pytest.raises(LocalReply):
        run_request_hooks(pipeline.request, None)
    assert log == ["before"]


async def _wait(pending: Awaitable[None]) -> None:
    await pending


def _gateway(tmp_path: Any, routes: list[dict[str, Any]]) -> Any:
    from fastgw.access_log import AccessLog
    from fastgw.config import config_from_dict
    from fastgw.gateway import Gateway
    from fastgw.metrics import Metrics

    config = config_from_dict(
        {
            "store": f"sqlite:///{tmp_path}/gw.db",
            "signing": {"secret": "s" * 32},
            "auth": {"tokens": [{"token": "t" * 16, "user_id": "ops"}]},
            "rate_limits": {"policies": {"per_user": {"rate": 10, "key": "user"}}},
            "upstreams": {"svc": {"targets": ["http://127.0.0.1:9"]}},
            "routes": routes,
        },
        {},
    )

    async def build() -> Any:
        gw = Gateway(config, Metrics(), AccessLog(False))
        gw.close()
        return gw

    return asyncio.run(build())


def test_a_plain_route_pays_for_nothing_but_completion(tmp_path: Any) -> None:
    gw = _gateway(tmp_path, [{"path": "/p/*", "upstream": "svc", "auth": "none", "rate_limit": "none"}])
    pipeline = gw.routes[0].pipeline
    assert pipeline.request == () and pipeline.body == () and pipeline.upstream_headers == ()
    assert pipeline.response_head == () and pipeline.response_data == ()
    assert not gw.routes[0].buffered
    assert set(pipeline.names()) == {"RequestMetrics", "AccessLogging", "UsageRecording"}


def test_a_full_route_runs_its_filters_in_priority_order_and_signs_last(tmp_path: Any) -> None:
    route = {
        "path": "/s/*",
        "upstream": "svc",
        "roles": ["admin"],
        "rate_limit": "per_user",
        "quota": True,
        "sign": True,
    }
    gw = _gateway(tmp_path, [route])
    pipeline = gw.routes[0].pipeline
    assert [type(f).__name__ for f in pipeline.request] == ["Authenticate", "Authorize", "RateLimit", "Quota"]
    assert [type(f).__name__ for f in pipeline.upstream_headers] == ["IdentityHeaders", "Sign"]
    assert gw.routes[0].buffered  # signing needs the whole body


class Suffix(Filter):
    def __init__(self, text: bytes, priority: int, wait: bool = False) -> None:
        self.text = text
        self.wait = wait
        self.PRIORITY = priority  # type: ignore[misc]

    def on_body(self, ex: Any, body: bytes) -> bytes | Awaitable[bytes]:
        if self.wait:
            return self._later(body)
        return body + self.text

    async def _later(self, body: bytes) -> bytes:
        await asyncio.sleep(0)
        return body + self.text


def test_body_hooks_chain_in_order_and_wait_only_when_one_must() -> None:
    quick = Pipeline.compile([Suffix(b"-b", 800), Suffix(b"-a", 900)])
    assert run_body_hooks(quick.body, None, b"x") == b"x-a-b"  # all answered at once: bytes
    slow = Pipeline.compile([Suffix(b"-a", 900), Suffix(b"-b", 800, wait=True), Suffix(b"-c", 700)])
    pending = run_body_hooks(slow.body, None, b"x")
    assert not isinstance(pending, bytes)
    assert asyncio.run(_result(pending)) == b"x-a-b-c"


async def _result(pending: Awaitable[bytes]) -> bytes:
    return await pending
