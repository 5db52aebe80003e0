"""The hot-path twins: spec vectors and behaviour on both, and exact C/py parity on random input."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw import speedups


def test_extension_loaded_when_required() -> None:
    """CI sets FASTGW_EXTENSION=1: a build that silently fell back to the twin must fail here."""
    if os.environ.get("FASTGW_EXTENSION") != "1":
        pytest.skip("FASTGW_EXTENSION is not 1")
    assert speedups.IMPLEMENTATION == "c"


def test_selector_exports() -> None:
    assert speedups.IMPLEMENTATION in ("c", "py")
    # the twin is _speedups_py and the modules it re-exports (as the extension includes .pxi files)
    modules = {"c": {"fastgw._speedups"}, "py": {"fastgw._speedups_py", "fastgw._trie_py"}}
    for name in ("BucketTable", "RouteTrie", "sign_v2", "webhook_signature"):
        assert getattr(speedups, name).__module__ in modules[speedups.IMPLEMENTATION]


# --- signing: SPEC section 6 vectors -----------------------------------------------------------

SECRET = b"test-signing-secret"


def test_sign_v2_spec_vector_full(speedups_impl: ModuleType) -> None:
    signature = speedups_impl.sign_v2(
        SECRET,
        "1767225600",
        "POST",
        "/api/service/svc_1/endpoint/ep_9/invoke?mode=fast",
        "usr_abc123",
        "admin",
        "app_main",
        "pro",
        b'{"hello":"world"}',
    )
    assert signature == "v2=09472f5aab971fa69f410e14292bb60c841a7cc614af09dbd4939e7fa331b556"


def test_sign_v2_spec_vector_empty(speedups_impl: ModuleType) -> None:
    signature = speedups_impl.sign_v2(SECRET, "1767225600", "GET", "/x", "", "", "", "", b"")
    assert signature == "v2=643efcbc0de0dbcb2a3469be8a2ed8e58a5b7e6c9860a4096cd8676bd234fce2"


def test_sign_v2_message_layout(speedups_impl: ModuleType) -> None:
    message = "1\nGET\n/p?q=é\n2|ü|r|a|p\n".encode() + b"\x00body"
    expected = "v2=" + hmac.new(b"k", message, hashlib.sha256).hexdigest()
    assert speedups_impl.sign_v2(b"k", "1", "GET", "/p?q=é", "ü", "r", "a", "p", b"\x00body") == expected


def test_sign_v2_accepts_bytes_like_body(speedups_impl: ModuleType) -> None:
    args = (SECRET, "1", "POST", "/x", "u", "r", "a", "p")
    expected = speedups_impl.sign_v2(*args, b"body")
    assert speedups_impl.sign_v2(*args, bytearray(b"body")) == expected
    assert speedups_impl.sign_v2(*args, memoryview(b"body")) == expected


@pytest.mark.parametrize("bad", [None, b"bytes", 1])
def test_sign_v2_rejects_non_str_fields(speedups_impl: ModuleType, bad: object) -> None:
    with pytest.raises(TypeError):
        speedups_impl.sign_v2(SECRET, "1", "GET", "/x", bad, "", "", "", b"")


def test_sign_v2_unencodable_text(speedups_impl: ModuleType) -> None:
    with pytest.raises(UnicodeEncodeError):
        speedups_impl.sign_v2(SECRET, "1", "GET", "/x", "\ud800", "", "", "", b"")


def test_webhook_spec_vector(speedups_impl: ModuleType) -> None:
    signature = speedups_impl.webhook_signature(b"whsec_test", "1767225600", b'{"event":"paid"}')
    assert signature == "sha256=9f260bf256a9420fd627777690e631ee16a4420d935b177b2822c097cdddf919"


def test_webhook_without_timestamp(speedups_impl: ModuleType) -> None:
    expected = "sha256=" + hmac.new(b"whsec_test", b'{"event":"paid"}', hashlib.sha256).hexdigest()
    assert speedups_impl.webhook_signature(b"whsec_test", None, b'{"event":"paid"}') == expected
    assert speedups_impl.webhook_signature(b"whsec_test", None, bytearray(b'{"event":"paid"}')) == expected


# --- token buckets: SPEC section 7 --------------------------------------------------------------


def test_bucket_burst_then_refuse(speedups_impl: ModuleType) -> None:
    table = speedups_impl.BucketTable(10, 1, 20)
    results = [table.take("k", 0.0) for _ in range(21)]
    assert results[0] == (True, 19, 0, 1)
    assert [res[1] for res in results[:20]] == list(range(19, -1, -1))
    assert all(res[0] and res[2] == 0 for res in results[:20])
    assert results[20] == (False, 0, 1, 2)
    assert len(table) == 1


def test_bucket_refill_timing(speedups_impl: ModuleType) -> None:
    table = speedups_impl.BucketTable(12, 60, 12)  # one token every 5 s
    for _ in range(12):
        assert table.take("ip", 100.0)[0]
    assert table.take("ip", 100.0) == (False, 0, 5, 60)
    assert table.take("ip", 104.999) == (False, 0, 1, 56)
    assert table.take("ip", 105.0) == (True, 0, 0, 60)
    assert table.take("ip", 107.0) == (False, 0, 3, 58)
    assert table.take("ip", 160.0) == (True, 10, 0, 10)
    assert table.take("ip", 1000.0) == (True, 11, 0, 5)


def test_bucket_rounding(speedups_impl: ModuleType) -> None:
    table = speedups_impl.BucketTable(1, 10, 1)
    assert table.take("k", 0.0) == (True, 0, 0, 10)
    assert table.take("k", 2.5) == (False, 0, 8, 8)  # 7.5 s to go, rounded up
    assert table.take("k", 9.99) == (False, 0, 1, 1)
    table = speedups_impl.BucketTable(1, 1, 5)
    for _ in range(5):
        table.take("k", 0.0)
    assert table.take("k", 2.5) == (True, 1, 0, 4)  # 2.5 tokens - 1 = 1.5: floor 1, full in 3.5 s


def test_bucket_exact_refill_is_never_refused(speedups_impl: ModuleType) -> None:
    """Float noise (0.3 - 0.2 = 0.09999999999999998) must not refuse a request on time."""
    table = speedups_impl.BucketTable(10, 1, 1)
    for k in range(1000):
        assert table.take("k", k / 10)[0], k
        assert not table.take("k", k / 10 + 0.05)[0], k
    table = speedups_impl.BucketTable(3, 1, 1)
    now = 0.0
    for k in range(1000):
        assert table.take("k", now)[0], k
        now += 1 / 3


def test_bucket_epsilon(speedups_impl: ModuleType) -> None:
    """Within a millionth of a token counts as a whole token; further away does not."""
    table = speedups_impl.BucketTable(1, 1, 1)
    assert table.take("k", 0.0)[0]
    assert table.take("k", 1.0 - 1.5e-6) == (False, 0, 1, 1)
    assert table.take("k", 1.0 - 0.5e-6) == (True, 0, 0, 1)


def test_bucket_keys_are_independent(speedups_impl: ModuleType) -> None:
    table = speedups_impl.BucketTable(1, 1, 1)
    assert table.take("a", 0.0)[0]
    assert not table.take("a", 0.0)[0]
    assert table.take("b", 0.0)[0]
    assert len(table) == 2


def test_bucket_clock_going_back_does_not_refill(speedups_impl: ModuleType) -> None:
    table = speedups_impl.BucketTable(1, 1, 2)
    assert table.take("k", 10.0) == (True, 1, 0, 1)
    assert table.take("k", 5.0) == (True, 0, 0, 2)
    assert table.take("k", 9.0) == (False, 0, 1, 2)
    assert table.take("k", 11.0) == (True, 0, 0, 2)


def test_bucket_attributes(speedups_impl: ModuleType) -> None:
    table = speedups_impl.BucketTable(1000, 1, 2000)
    assert (table.rate, table.per, table.burst, table.max_keys) == (1000.0, 1.0, 2000.0, 100_000)
    assert isinstance(table.burst, float)


@pytest.mark.parametrize(
    "args",
    [(0, 1, 1), (-1, 1, 1), (1, 0, 1), (1, 1, 0), (1, 1, 0.5), (float("inf"), 1, 1), (float("nan"), 1, 1)],
)
def test_bucket_rejects_bad_policy(speedups_impl: ModuleType, args: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        speedups_impl.BucketTable(*args)
    with pytest.raises(ValueError):
        speedups_impl.BucketTable(1, 1, 1, 0)


def test_bucket_eviction_bounds_memory_under_key_flood(speedups_impl: ModuleType) -> None:
    """A million distinct callers, none refilled yet: the table never exceeds max_keys."""
    table = speedups_impl.BucketTable(1, 1, 5, max_keys=1000)
    take = table.take
    now = 0.0
    for k in range(1_000_000):
        take(str(k), now)
        now += 1e-7
        if k % 997 == 0:
            assert len(table) <= 1000
    assert len(table) == 1000


def test_bucket_eviction_drops_full_buckets(speedups_impl: ModuleType) -> None:
    """Callers arriving slower than the refill: the sweep finds them full, state is exact."""
    table = speedups_impl.BucketTable(1, 1, 1, max_keys=100)
    for k in range(10_000):
        assert table.take(str(k), float(k)) == (True, 0, 0, 1)
        assert len(table) <= 100
    assert table.take("9999", 9999.5) == (False, 0, 1, 1)  # the latest one was kept


def test_bucket_eviction_prefers_full_over_lru(speedups_impl: ModuleType) -> None:
    table = speedups_impl.BucketTable(1, 1, 2, max_keys=2)
    table.take("a", 0.0)
    table.take("a", 0.0)  # a: empty, full again at t=2
    table.take("b", 0.5)  # b: one token, full again at t=1.5
    table.take("c", 1.9)  # over max_keys: b is full, a (least recently used) is not
    assert len(table) == 2
    assert table.take("a", 1.9) == (True, 0, 0, 2)  # 1.9 tokens: a's state survived
    assert table.take("b", 1.9) == (True, 1, 0, 1)  # b starts full, as if never evicted


def test_bucket_eviction_lru_when_nothing_is_full(speedups_impl: ModuleType) -> None:
    table = speedups_impl.BucketTable(1, 100, 1, max_keys=2)
    assert table.take("a", 0.0)[0]
    assert table.take("b", 1.0)[0]
    assert not table.take("a", 2.0)[0]  # a is now the most recent
    assert table.take("c", 3.0)[0]  # evicts b
    assert len(table) == 2
    assert not table.take("a", 3.5)[0]  # a kept its state
    assert table.take("b", 4.0)[0]  # b was forgotten: a fresh bucket (evicts c)
    assert table.take("c", 5.0)[0]  # c was forgotten too (evicts a)


def test_bucket_hot_key_survives_flood(speedups_impl: ModuleType) -> None:
    table = speedups_impl.BucketTable(1, 3600, 3, max_keys=50)
    for _ in range(3):
        table.take("attacker", 0.0)
    for k in range(5000):
        table.take(f"noise-{k}", 0.001 * k)
        assert not table.take("attacker", 0.001 * k)[0]


# --- parity: the compiled module returns exactly what the twin returns --------------------------


def outcome(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # the exception type must match too
        return ("error", type(exc))


_TEXT = st.text(max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    secret=st.binary(max_size=80),
    fields=st.lists(_TEXT, min_size=7, max_size=7),
    body=st.binary(max_size=300),
)
def test_parity_sign_v2(
    c_speedups: ModuleType, py_speedups: ModuleType, secret: bytes, fields: list[str], body: bytes
) -> None:
    assert outcome(c_speedups.sign_v2, secret, *fields, body) == outcome(
        py_speedups.sign_v2, secret, *fields, body
    )


@settings(max_examples=300, deadline=None)
@given(secret=st.binary(max_size=80), timestamp=st.one_of(st.none(), _TEXT), body=st.binary(max_size=300))
def test_parity_webhook_signature(
    c_speedups: ModuleType, py_speedups: ModuleType, secret: bytes, timestamp: str | None, body: bytes
) -> None:
    assert outcome(c_speedups.webhook_signature, secret, timestamp, body) == outcome(
        py_speedups.webhook_signature, secret, timestamp, body
    )


_SEGMENT = st.sampled_from(["a", "b", "c", "aa", "{x}", "{y}", "{z}", "", "%2F"])
_METHOD_SET = st.one_of(
    st.none(), st.frozensets(st.sampled_from(["GET", "POST", "PUT", "DELETE"]), min_size=1)
)


@st.composite
def _pattern(draw: st.DrawFn) -> str:
    segs = draw(st.lists(_SEGMENT, max_size=5))
    # unique param names within a pattern, as pattern_error demands
    segs = [f"{{p{k}}}" if s.startswith("{") else s for k, s in enumerate(segs)]
    return "/" + "/".join(segs) + draw(st.sampled_from(["", "/*"]))


@settings(max_examples=300, deadline=None)
@given(
    routes=st.lists(st.tuples(_pattern(), _METHOD_SET), min_size=1, max_size=12),
    requests=st.lists(
        st.tuples(
            st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
            st.lists(st.sampled_from(["a", "b", "c", "aa", "", "x", "%2F"]), min_size=1, max_size=6),
        ),
        min_size=1,
        max_size=10,
    ),
)
def test_parity_route_trie(
    c_speedups: ModuleType,
    py_speedups: ModuleType,
    routes: list[tuple[str, frozenset[str] | None]],
    requests: list[tuple[str, list[str]]],
) -> None:
    tries = [impl.RouteTrie() for impl in (c_speedups, py_speedups)]
    for route_id, (pattern, methods) in enumerate(routes):
        for trie in tries:
            trie.add(pattern, methods, route_id)
    for method, segs in requests:
        path = "/" + "/".join(segs)
        c_trie, py_trie = tries
        assert c_trie.match(method, path) == py_trie.match(method, path)
        assert c_trie.allowed_methods(path) == py_trie.allowed_methods(path)


@st.composite
def bucket_runs(draw: st.DrawFn) -> tuple[float, float, float, int, float, list[tuple[str, float]]]:
    """A policy and a sequence of takes whose gaps often land on, or within float noise and
    epsilon of, whole-token refill times: where the two implementations could drift apart."""
    rate = draw(
        st.one_of(st.floats(min_value=0.01, max_value=1000.0), st.sampled_from([1.0, 3.0, 10.0, 12.0]))
    )
    per = draw(st.one_of(st.floats(min_value=0.001, max_value=3600.0), st.sampled_from([1.0, 60.0])))
    burst = draw(st.one_of(st.floats(min_value=1.0, max_value=50.0), st.integers(1, 3).map(float)))
    max_keys = draw(st.integers(1, 5))
    start = draw(st.floats(min_value=0.0, max_value=1e7))
    per_token = per / rate
    gap = st.one_of(
        st.just(0.0),
        st.floats(min_value=0.0, max_value=5.0),
        st.floats(min_value=-1.0, max_value=0.0),
        st.tuples(st.integers(1, 3), st.sampled_from([1.0, 1 - 1e-9, 1 + 1e-9, 1 - 1.5e-6, 1 - 0.5e-6])).map(
            lambda kf: kf[0] * per_token * kf[1]
        ),
    )
    steps = draw(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "e", "f"]), gap), max_size=60))
    return rate, per, burst, max_keys, start, steps


@settings(max_examples=400, deadline=None)
@given(run=bucket_runs())
def test_parity_bucket_table(
    c_speedups: ModuleType,
    py_speedups: ModuleType,
    run: tuple[float, float, float, int, float, list[tuple[str, float]]],
) -> None:
    rate, per, burst, max_keys, start, steps = run
    c_table = c_speedups.BucketTable(rate, per, burst, max_keys)
    py_table = py_speedups.BucketTable(rate, per, burst, max_keys)
    assert (c_table.rate, c_table.per, c_table.burst) == (py_table.rate, py_table.per, py_table.burst)
    now = start
    for key, gap in steps:
        now += gap
        assert c_table.take(key, now) == py_table.take(key, now)
        assert len(c_table) == len(py_table)
        assert c_table._peek(key) == py_table._peek(key)  # same bits, not just same rounding
