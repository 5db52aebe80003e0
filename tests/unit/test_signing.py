"""fastgw.signing: the spec vectors, what breaks a signature, and sign/verify as twins."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tornado.httputil import HTTPHeaders

from fastgw.signing import SIGNATURE, SIGNING_VERSION, TIMESTAMP, Signer, sign, verify

SECRET = "test-signing-secret"
TS = 1767225600
PATH = "/api/service/svc_1/endpoint/ep_9/invoke?mode=fast"
BODY = b'{"hello":"world"}'
IDENTITY = {"user_id": "usr_abc123", "role": "admin", "app_key": "app_main", "plan": "pro"}
VECTOR_1 = "v2=09472f5aab971fa69f410e14292bb60c841a7cc614af09dbd4939e7fa331b556"
VECTOR_2 = "v2=643efcbc0de0dbcb2a3469be8a2ed8e58a5b7e6c9860a4096cd8676bd234fce2"


def signed_request(**overrides: Any) -> dict[str, str]:
    """Headers as a backend receives them for the first spec vector."""
    headers = sign(SECRET, "POST", PATH, BODY, timestamp=TS, **IDENTITY)
    headers.update(
        {"X-User-Id": "usr_abc123", "X-User-Role": "admin", "X-App-Key": "app_main", "X-User-Plan": "pro"}
    )
    headers.update(overrides)
    return headers


def test_spec_vectors() -> None:
    first = sign(SECRET, "POST", PATH, BODY, timestamp=TS, **IDENTITY)
    assert first == {TIMESTAMP: "1767225600", SIGNING_VERSION: "2", SIGNATURE: VECTOR_1}
    assert sign(SECRET, "GET", "/x", timestamp=TS)[SIGNATURE] == VECTOR_2
    assert sign(SECRET.encode(), "GET", "/x", b"", timestamp=str(TS))[SIGNATURE] == VECTOR_2


def test_signer_gives_the_same_headers() -> None:
    pairs = Signer(SECRET).headers("POST", PATH, BODY, timestamp=TS, **IDENTITY)
    assert dict(pairs) == sign(SECRET, "POST", PATH, BODY, timestamp=TS, **IDENTITY)
    assert dict(Signer(SECRET.encode()).headers("GET", "/x", timestamp=TS))[SIGNATURE] == VECTOR_2


def test_timestamp_defaults_to_now() -> None:
    import time

    before = int(time.time())
    ts = int(sign(SECRET, "GET", "/x")[TIMESTAMP])
    assert before <= ts <= int(time.time())
    assert verify(SECRET, "GET", "/x", sign(SECRET, "GET", "/x"), b"")


def test_verify_accepts_the_spec_vectors() -> None:
    assert verify(SECRET, "POST", PATH, signed_request(), BODY, now=TS)
    assert verify(SECRET.encode(), "POST", PATH, signed_request(), bytearray(BODY), now=TS)
    assert verify(SECRET, "POST", PATH, signed_request(), memoryview(BODY), now=TS)
    plain = {TIMESTAMP: str(TS), SIGNING_VERSION: "2", SIGNATURE: VECTOR_2}
    assert verify(SECRET, "GET", "/x", plain, b"", now=TS)


def test_header_names_are_case_insensitive_in_any_mapping() -> None:
    lower = {k.lower(): v for k, v in signed_request().items()}
    upper = {k.upper(): v for k, v in signed_request().items()}
    assert verify(SECRET, "POST", PATH, lower, BODY, now=TS)
    assert verify(SECRET, "POST", PATH, upper, BODY, now=TS)
    assert verify(SECRET, "POST", PATH, HTTPHeaders(lower), BODY, now=TS)
    raw = {k.encode(): v.encode() for k, v in lower.items()}  # frameworks that hand out bytes
    assert verify(SECRET, "POST", PATH, raw, BODY, now=TS)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", PATH, b'{"hello":"World"}'),  # one body byte
        ("POST", PATH, BODY + b" "),
        ("POST", PATH, b""),
        ("POST", PATH.replace("ep_9", "ep_8"), BODY),  # the path
        ("POST", PATH.replace("fast", "slow"), BODY),  # the query
        ("POST", PATH.split("?")[0], BODY),
        ("PUT", PATH, BODY),  # the method
        ("post", PATH, BODY),
    ],
)
def test_any_change_to_the_request_fails(method: str, path: str, body: bytes) -> None:
    assert not verify(SECRET, method, path, signed_request(), body, now=TS)


@pytest.mark.parametrize(
    "overrides",
    [
        {TIMESTAMP: str(TS + 1)},  # the timestamp
        {"X-User-Id": "usr_other"},  # each identity field
        {"X-User-Role": "user"},
        {"X-App-Key": ""},
        {"X-User-Plan": "free"},
        {SIGNATURE: VECTOR_1.upper()},
        {SIGNATURE: VECTOR_1[:-1]},
        {SIGNATURE: VECTOR_1[3:]},
        {SIGNATURE: ""},
        {SIGNATURE: VECTOR_1 + "00"},
        {SIGNATURE: VECTOR_1.replace("v2=", "v1=")},
        {SIGNATURE: VECTOR_1[:-1] + "\u00e9"},
        {SIGNING_VERSION: "1"},
        {SIGNING_VERSION: "2.0"},
        {TIMESTAMP: "1767225600.0"},
        {TIMESTAMP: "-1767225600"},
        {TIMESTAMP: "\u0661\u0667"},  # Arabic-Indic digits: isdigit() but not ASCII
        {TIMESTAMP: "9" * 5000},
    ],
)
def test_tampered_or_malformed_headers_fail(overrides: dict[str, str]) -> None:
    assert not verify(SECRET, "POST", PATH, signed_request(**overrides), BODY, now=TS)


@pytest.mark.parametrize("missing", [TIMESTAMP, SIGNING_VERSION, SIGNATURE, "X-User-Id", "X-User-Plan"])
def test_a_missing_header_fails(missing: str) -> None:
    headers = signed_request()
    del headers[missing]
    assert not verify(SECRET, "POST", PATH, headers, BODY, now=TS)


def test_wrong_secret_fails() -> None:
    assert not verify("other-secret", "POST", PATH, signed_request(), BODY, now=TS)


def test_timestamp_skew() -> None:
    headers = signed_request()
    assert verify(SECRET, "POST", PATH, headers, BODY, now=TS + 300)
    assert verify(SECRET, "POST", PATH, headers, BODY, now=TS - 300)
    assert not verify(SECRET, "POST", PATH, headers, BODY, now=TS + 301)
    assert not verify(SECRET, "POST", PATH, headers, BODY, now=TS - 301)
    assert verify(SECRET, "POST", PATH, headers, BODY, max_skew=3600, now=TS + 3000)
    old = sign(SECRET, "GET", "/x", timestamp=1000)
    assert not verify(SECRET, "GET", "/x", old, b"")  # against the clock by default


def test_renamed_identity_headers() -> None:
    headers = sign(SECRET, "GET", "/x", timestamp=TS, user_id="u1", plan="pro")
    headers |= {"X-Uid": "u1", "X-User-Plan": "pro"}
    assert verify(SECRET, "GET", "/x", headers, b"", identity_headers={"user_id": "X-Uid"}, now=TS)
    assert not verify(SECRET, "GET", "/x", headers, b"", now=TS)


def test_sign_refuses_a_timestamp_that_is_not_unix_seconds() -> None:
    with pytest.raises(ValueError):
        sign(SECRET, "GET", "/x", timestamp="yesterday")


_field = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="|"), max_size=20)


_fields = st.tuples(
    st.binary(min_size=1, max_size=80),
    st.integers(min_value=0, max_value=2**40).map(str),
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "get", "X-CUSTOM"]),
    st.text(max_size=60).map(lambda p: "/" + p),
    _field,
    _field,
    _field,
    _field,
    st.binary(max_size=300),
)


@given(fields=_fields)
def test_both_implementations_sign_alike(
    py_speedups: ModuleType, c_speedups: ModuleType, fields: tuple[Any, ...]
) -> None:
    expected = py_speedups.sign_v2(*fields)
    assert c_speedups.sign_v2(*fields) == expected
    # A body buffer is hashed as is, without a copy, by both (signing.py relies on it).
    for impl in (py_speedups, c_speedups):
        assert impl.sign_v2(*fields[:-1], bytearray(fields[-1])) == expected
        assert impl.sign_v2(*fields[:-1], memoryview(fields[-1])) == expected


@given(fields=_fields)
def test_verify_accepts_what_sign_produces(py_speedups: ModuleType, fields: tuple[Any, ...]) -> None:
    secret, timestamp, method, path, user_id, role, app_key, plan, body = fields
    identity = {"user_id": user_id, "role": role, "app_key": app_key, "plan": plan}
    headers = sign(secret, method, path, body, timestamp=int(timestamp), **identity)
    assert headers[SIGNATURE] == py_speedups.sign_v2(*fields)
    headers |= {"X-User-Id": user_id, "X-User-Role": role, "X-App-Key": app_key, "X-User-Plan": plan}
    now = int(timestamp)
    assert verify(secret, method, path, headers, body, now=now)
    assert not verify(secret, method, path, headers, body + b"x", now=now)
    assert not verify(secret, method, path + "x", headers, body, now=now)
    assert not verify(secret, method, path, headers | {TIMESTAMP: str(now + 1)}, body, now=now)
