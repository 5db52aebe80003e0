"""``namespace`` is a security boundary: no request of one user reaches another user's names.

Each test sends through a real gateway process what a caller could try in order to name a
resource outside its own namespace, and checks what the echo upstream received (or that
nothing reached it).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.upstream_server import UpstreamServer

TOKENS = {
    "alice": "alice-token-0123456789",
    "a": "a-token-0123456789",
    "a__b": "a-b-token-0123456789",
    "a_": "a-underscore-token-0123456789",
}


def auth(user: str, json_body: bool = False) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {TOKENS[user]}"}
    if json_body:
        headers["Content-Type"] = "application/json"
    return headers


def config(upstream: UpstreamServer) -> dict[str, Any]:
    return {
        "auth": {"tokens": [{"token": token, "user_id": user} for user, token in TOKENS.items()]},
        "upstreams": {"svc": {"targets": [upstream.url]}},
        "routes": [
            {
                "path": "/vectors/*",
                "upstream": "svc",
                "namespace": {
                    "json_fields": ["database"],
                    "query_params": ["database"],
                    "path_segments_after": ["databases", "db:s"],
                },
            }
        ],
    }


def error(reply: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(reply)["error"]
    return doc


@pytest.mark.parametrize("value", [["bob__db"], 7, 1.5, {"name": "bob__db"}, None, True])
def test_a_namespaced_json_field_that_is_not_a_string_is_refused(
    upstream: UpstreamServer, start_gateway: Any, value: Any
) -> None:
    gw = start_gateway(config(upstream))
    body = json.dumps({"database": value, "k": 3}).encode()
    status, _, reply = gw.request("POST", "/vectors/query", body=body, headers=auth("alice", True))
    assert status == 400, reply
    assert error(reply)["code"] == "VALIDATION_ERROR"
    assert "database" in error(reply)["message"] and "bob" not in error(reply)["message"]
    assert upstream.requests == []


def test_json_field_spellings_a_lenient_decoder_accepts_are_prefixed(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    """Go's encoding/json (and .NET's case-insensitive option) take ``Database`` or
    ``databaſe`` for ``database``, the last one winning: every such key is namespaced."""
    gw = start_gateway(config(upstream))
    body = b'{"database": "mine", "Database": "bob__db", "DATABA\\u017fE": "carol__db"}'
    status, _, reply = gw.request("POST", "/vectors/query", body=body, headers=auth("alice", True))
    assert status == 200, reply
    assert json.loads(upstream.requests[-1].body) == {
        "database": "alice__mine",
        "Database": "alice__bob__db",
        "DATABAſE": "alice__carol__db",
    }
    status, _, reply = gw.request(
        "POST", "/vectors/query", body=b'{"Database": ["x"]}', headers=auth("alice", True)
    )
    assert status == 400 and error(reply)["code"] == "VALIDATION_ERROR"


def forwarded_values(upstream: UpstreamServer, key: str) -> list[str]:
    """The values of ``key`` as the upstream decodes its query (form-urlencoded)."""
    query = urlsplit(upstream.requests[-1].target).query
    return [v for k, v in parse_qsl(query, keep_blank_values=True) if k.split("[", 1)[0].lower() == key]


QUERY_CASES = [
    ("%64atabase=bob__db", ["alice__bob__db"]),
    ("data%62ase=bob__db&k=3", ["alice__bob__db"]),
    ("database=a&database=bob__db", ["alice__a", "alice__bob__db"]),
    ("k=1&%64atabase=x&database=y", ["alice__x", "alice__y"]),
    ("database=bob%5F%5Fdb", ["alice__bob__db"]),
    ("database=my+db%2F%C3%A9", ["alice__my db/\u00e9"]),
    ("Database=bob__db", ["alice__bob__db"]),
    ("database[]=bob__db", ["alice__bob__db"]),
    ("database", ["alice__"]),
]


def test_every_spelling_of_a_namespaced_query_key_is_prefixed(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    """Keys compare after form-urlencoded decoding (and case-insensitively, bracket suffixes
    ignored, as PHP, Rails and ASP.NET read them); every occurrence is prefixed."""
    gw = start_gateway(config(upstream))
    for query, expected in QUERY_CASES:
        status, _, reply = gw.request("GET", f"/vectors/search?{query}", headers=auth("alice"))
        assert status == 200, (query, reply)
        assert forwarded_values(upstream, "database") == expected, query


def test_a_user_id_that_could_collide_with_another_users_names_is_refused(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    """``a__b`` + ``c`` and ``a`` + ``b__c`` would both be ``a__b__c``; ``a_`` + ``x`` and ``a`` +
    ``_x`` would both be ``a___x``. Users whose id could be read two ways are refused."""
    gw = start_gateway(config(upstream))
    for user in ("a__b", "a_"):
        for method, path, body in (
            ("GET", "/vectors/search?database=c", None),
            ("GET", "/vectors/databases/c/query", None),
            ("POST", "/vectors/query", b'{"database": "c"}'),
        ):
            status, _, reply = gw.request(method, path, body=body, headers=auth(user, body is not None))
            assert status == 401, (user, path, reply)
            assert error(reply)["code"] == "UNAUTHORIZED"
    assert upstream.requests == []
    # The other side of each pair still works, and may use the separator in its names.
    status, _, _ = gw.request("GET", "/vectors/search?database=b__c", headers=auth("a"))
    assert status == 200 and forwarded_values(upstream, "database") == ["a__b__c"]
    status, _, _ = gw.request("GET", "/vectors/search?database=_x", headers=auth("a"))
    assert status == 200 and forwarded_values(upstream, "database") == ["a___x"]


PATH_CASES = [
    ("/vectors/%64atabases/bob__db/query", "/vectors/databases/alice__bob__db/query"),
    ("/vectors/databases/bob%5F%5Fdb", "/vectors/databases/alice__bob__db"),
    ("/vectors/databases/my%20db", "/vectors/databases/alice__my%20db"),
    ("/vectors/db:s/bob__db", "/vectors/db:s/alice__bob__db"),
    ("/vectors/db%3As/bob__db", "/vectors/db%3As/alice__bob__db"),
    ("/vectors/db%3as/bob__db", "/vectors/db%3As/alice__bob__db"),  # escapes are normalised
    ("/vectors/Databases/bob__db", "/vectors/Databases/alice__bob__db"),
]


def test_every_spelling_of_a_namespaced_path_segment_is_prefixed(
    upstream: UpstreamServer, start_gateway: Any
) -> None:
    """Segment names compare percent-decoded and case-folded (ASP.NET routes ignore case); the
    prefixed segment decodes to user + name."""
    gw = start_gateway(config(upstream))
    for path, forwarded in PATH_CASES:
        status, _, reply = gw.request("GET", path, headers=auth("alice"))
        assert status == 200, (path, reply)
        assert upstream.requests[-1].target == forwarded, path


@pytest.mark.parametrize(
    "path",
    [
        "/vectors/databases/x%2F..%2F..%2Fdatabases%2Fbob__db",
        "/vectors/databases%2Fbob__db",
        "/vectors/databases/x%2fy",
    ],
)
def test_an_encoded_slash_in_a_namespaced_path_is_refused(
    upstream: UpstreamServer, start_gateway: Any, path: str
) -> None:
    """An upstream that decodes ``%2F`` would see segment boundaries the gateway did not."""
    gw = start_gateway(config(upstream))
    status, _, reply = gw.request("GET", path, headers=auth("alice"))
    assert status == 400, reply
    assert error(reply)["code"] == "VALIDATION_ERROR"
    assert upstream.requests == []
