"""Routes that rewrite the body: transform, namespace, llm: openai."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from tests.upstream_server import UpstreamServer

TOKEN = "body-token-0123456789"
JSON = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}


def config(upstream: UpstreamServer) -> dict[str, Any]:
    return {
        "auth": {"tokens": [{"token": TOKEN, "user_id": "u42", "plan": "pro"}]},
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [
            {
                "path": "/ocr",
                "upstream": "svc",
                "transform": {
                    "when_absent": ["document", "documents"],
                    "rename": {"url": "document.url"},
                    "add": {"document.type": "url", "model": "ocr-1"},
                    "headers": {"add": {"X-Source": "gw"}, "remove": ["X-Debug"]},
                },
            },
            {
                "path": "/vectors/*",
                "upstream": "svc",
                "namespace": {
                    "json_fields": ["database"],
                    "query_params": ["database"],
                    "path_segments_after": ["databases"],
                },
            },
            {
                "path": "/open-ns/*",
                "upstream": "svc",
                "auth": "optional",
                "namespace": {"query_params": ["db"]},
            },
            {"path": "/v1/chat/completions", "upstream": "svc", "llm": "openai"},
        ],
    }


def test_transform_renames_adds_and_skips(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    body = json.dumps({"url": "https://x/doc.pdf", "model": "mine"}).encode()
    status, _, _ = gw.request("POST", "/ocr", body=body, headers={**JSON, "X-Debug": "1"})
    assert status == 200
    seen = upstream.requests[-1]
    assert json.loads(seen.body) == {"model": "mine", "document": {"url": "https://x/doc.pdf", "type": "url"}}
    assert seen.header("X-Source") == "gw" and seen.header("X-Debug") is None
    kept = json.dumps({"document": {"id": 1}, "url": "u"}).encode()
    gw.request("POST", "/ocr", body=kept, headers=JSON)
    assert upstream.requests[-1].body == kept
    assert upstream.requests[-1].header("X-Source") == "gw"
    gw.request("POST", "/ocr", body=kept, headers={**JSON, "X-Source": "client"})
    assert [v for k, v in upstream.requests[-1].headers if k.lower() == "x-source"] == ["client"]
    status, _, reply = gw.request("POST", "/ocr", body=b"not json", headers=JSON)
    assert status == 400 and json.loads(reply)["error"]["code"] == "VALIDATION_ERROR"
    status, _, _ = gw.request(
        "POST", "/ocr", body=b"{}", headers={"Content-Type": "text/plain", "Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 400


def test_namespace_prefixes_user_id(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    body = json.dumps({"database": "main", "other": "x"}).encode()
    status, _, _ = gw.request(
        "POST", "/vectors/databases/main/query?database=main&k=3", body=body, headers=JSON
    )
    assert status == 200
    seen = upstream.requests[-1]
    assert seen.target == "/vectors/databases/u42__main/query?database=u42__main&k=3"
    assert json.loads(seen.body) == {"database": "u42__main", "other": "x"}
    status, _, _ = gw.request("GET", "/open-ns/x?db=a")
    assert status == 401


def test_llm_streams_with_usage_and_counts_tokens(upstream: UpstreamServer, start_gateway: Any) -> None:
    gw = start_gateway(config(upstream))
    request = json.dumps({"model": "gpt-test", "stream": True, "messages": []}).encode()
    status, headers, body = gw.request("POST", "/v1/chat/completions", body=request, headers=JSON)
    assert status == 200 and headers["content-type"] == "text/event-stream"
    assert json.loads(upstream.requests[-1].body)["stream_options"] == {"include_usage": True}
    assert body.count(b"data: ") == 4 and body.endswith(b"data: [DONE]\n\n")
    gw.request("POST", "/v1/chat/completions", body=b'{"model":"gpt-json"}', headers=JSON)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=5).read().decode()
    assert 'fastgw_llm_tokens_total{kind="input",model="gpt-test"} 11.0' in metrics
    assert 'fastgw_llm_tokens_total{kind="output",model="gpt-test"} 7.0' in metrics
    assert 'fastgw_llm_tokens_total{kind="output",model="gpt-json"} 3.0' in metrics
    status, headers, _ = gw.request("GET", "/v1/chat/completions", headers=JSON)
    assert status == 405 and headers["allow"] == "POST"
