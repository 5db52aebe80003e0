"""Route matching (SPEC section 3) on both trie implementations, plus the routing helpers."""

from __future__ import annotations

import itertools
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw import speedups
from fastgw.routing import RouteSpec, RouteTable, pattern_error, rewrite_path, spec_errors

Route = tuple[str, frozenset[str] | None]


def r(pattern: str, *methods: str) -> Route:
    return (pattern, frozenset(methods) if methods else None)


def build(impl: ModuleType, routes: list[Route]) -> Any:
    trie = impl.RouteTrie()
    for route_id, (pattern, methods) in enumerate(routes):
        trie.add(pattern, methods, route_id)
    return trie


NOT_FOUND = (-1, None, 0)
NOT_ALLOWED = (-2, None, 0)

# (routes, method, path, expected); expected names the winning route by its pattern, or is 404/405,
# so the same case can be replayed with the routes in every insertion order.
CASES: list[tuple[list[Route], str, str, Any]] = [
    # literal > {param} > *, segment by segment
    ([r("/u/me"), r("/u/{id}"), r("/u/*")], "GET", "/u/me", ("/u/me", None, 5)),
    ([r("/u/me"), r("/u/{id}"), r("/u/*")], "GET", "/u/42", ("/u/{id}", {"id": "42"}, 5)),
    ([r("/u/me"), r("/u/{id}"), r("/u/*")], "GET", "/u/42/x", ("/u/*", None, 2)),
    ([r("/u/me"), r("/u/{id}"), r("/u/*")], "GET", "/u/me/x", ("/u/*", None, 2)),
    ([r("/u/me"), r("/u/{id}"), r("/u/*")], "GET", "/u", ("/u/*", None, 2)),
    ([r("/u/me"), r("/u/{id}"), r("/u/*")], "GET", "/u/", ("/u/*", None, 2)),
    ([r("/u/me"), r("/u/{id}"), r("/u/*")], "GET", "/uu", NOT_FOUND),
    # a longer literal prefix beats a shorter one, whatever the order
    ([r("/admin/*"), r("/admin/billing/*")], "GET", "/admin/billing/x", ("/admin/billing/*", None, 14)),
    ([r("/admin/*"), r("/admin/billing/*")], "GET", "/admin/billing", ("/admin/billing/*", None, 14)),
    ([r("/admin/*"), r("/admin/billing/*")], "GET", "/admin/billing/", ("/admin/billing/*", None, 14)),
    ([r("/admin/*"), r("/admin/billing/*")], "GET", "/admin/billingx", ("/admin/*", None, 6)),
    ([r("/admin/*"), r("/admin/billing/*")], "GET", "/admin/users/1", ("/admin/*", None, 6)),
    ([r("/admin/*"), r("/admin/billing/*")], "GET", "/admin", ("/admin/*", None, 6)),
    ([r("/admin/*"), r("/admin/billing/*")], "GET", "/administrator", NOT_FOUND),
    # /x/* matches /x, /x/ and below, never /xy
    ([r("/x/*")], "GET", "/x", ("/x/*", None, 2)),
    ([r("/x/*")], "GET", "/x/", ("/x/*", None, 2)),
    ([r("/x/*")], "GET", "/x/a/b", ("/x/*", None, 2)),
    ([r("/x/*")], "GET", "/x/a/b/", ("/x/*", None, 2)),
    ([r("/x/*")], "GET", "/xy", NOT_FOUND),
    ([r("/x/*")], "GET", "/xy/a", NOT_FOUND),
    ([r("/x/*")], "GET", "/", NOT_FOUND),
    ([r("/a/b/*")], "GET", "/a/b", ("/a/b/*", None, 4)),
    ([r("/a/b/*")], "GET", "/a", NOT_FOUND),
    # an exact pattern beats a wildcard ending at the same place
    ([r("/x"), r("/x/*")], "GET", "/x", ("/x", None, 2)),
    ([r("/x"), r("/x/*")], "GET", "/x/", ("/x/*", None, 2)),
    ([r("/x/"), r("/x/*")], "GET", "/x/", ("/x/", None, 3)),
    # trailing slashes are significant for exact patterns
    ([r("/a")], "GET", "/a/", NOT_FOUND),
    ([r("/a/")], "GET", "/a", NOT_FOUND),
    ([r("/a/")], "GET", "/a/", ("/a/", None, 3)),
    ([r("/a/{id}/")], "GET", "/a/1/", ("/a/{id}/", {"id": "1"}, 5)),
    ([r("/a/{id}/")], "GET", "/a/1", NOT_FOUND),
    # the root
    ([r("/*")], "GET", "/", ("/*", None, 0)),
    ([r("/*")], "GET", "/a", ("/*", None, 0)),
    ([r("/*")], "GET", "/a/b/", ("/*", None, 0)),
    ([r("/"), r("/*")], "GET", "/", ("/", None, 1)),
    ([r("/"), r("/*")], "GET", "/a", ("/*", None, 0)),
    ([r("/")], "GET", "/a", NOT_FOUND),
    ([r("/{id}")], "GET", "/", NOT_FOUND),
    ([r("/{id}")], "GET", "/7", ("/{id}", {"id": "7"}, 2)),
    # {param} never matches an empty segment
    ([r("/u/{id}")], "GET", "/u/", NOT_FOUND),
    ([r("/u/{id}/x")], "GET", "/u//x", NOT_FOUND),
    # literals are exact and case-sensitive
    ([r("/admin")], "GET", "/Admin", NOT_FOUND),
    ([r("/admin"), r("/{page}")], "GET", "/ADMIN", ("/{page}", {"page": "ADMIN"}, 6)),
    # params
    (
        [r("/api/service/{serviceId}/endpoint/{endpointId}/invoke")],
        "POST",
        "/api/service/svc_1/endpoint/ep_9/invoke",
        (
            "/api/service/{serviceId}/endpoint/{endpointId}/invoke",
            {"serviceId": "svc_1", "endpointId": "ep_9"},
            39,
        ),
    ),
    (
        [
            r("/api/service/{serviceId}/endpoint/{endpointId}/invoke"),
            r("/api/service/{serviceId}/endpoint/{endpointId}/invoke/async"),
        ],
        "POST",
        "/api/service/s/endpoint/e/invoke/async",
        (
            "/api/service/{serviceId}/endpoint/{endpointId}/invoke/async",
            {"serviceId": "s", "endpointId": "e"},
            38,
        ),
    ),
    ([r("/u/{id}/*")], "GET", "/u/1/files/a.txt", ("/u/{id}/*", {"id": "1"}, 4)),
    ([r("/u/{id}/*")], "GET", "/u/1", ("/u/{id}/*", {"id": "1"}, 4)),
    ([r("/a/{id}")], "GET", "/a/x%2Fy", ("/a/{id}", {"id": "x%2Fy"}, 8)),
    ([r("/a/{id}", "GET"), r("/a/{name}", "POST")], "GET", "/a/1", ("/a/{id}", {"id": "1"}, 4)),
    ([r("/a/{id}", "GET"), r("/a/{name}", "POST")], "POST", "/a/1", ("/a/{name}", {"name": "1"}, 4)),
    # method sets: 405 only when some pattern matches the path
    ([r("/items", "GET"), r("/items", "POST")], "GET", "/items", ("/items", None, 6)),
    ([r("/items", "GET"), r("/items", "POST")], "DELETE", "/items", NOT_ALLOWED),
    ([r("/items", "GET")], "GET", "/other", NOT_FOUND),
    ([r("/items", "GET")], "POST", "/items/", NOT_FOUND),
    ([r("/items", "GET"), r("/items/*", "POST")], "POST", "/items", ("/items/*", None, 6)),
    ([r("/items", "GET"), r("/items/*", "POST")], "PUT", "/items", NOT_ALLOWED),
    ([r("/x"), r("/x/*", "GET")], "POST", "/x", ("/x", None, 2)),
    ([r("/api/*", "POST"), r("/*", "GET")], "GET", "/api/x", ("/*", None, 0)),
    ([r("/api/*", "POST"), r("/*", "GET")], "POST", "/api/x", ("/api/*", None, 4)),
    ([r("/api/*", "POST"), r("/*", "GET")], "DELETE", "/api/x", NOT_ALLOWED),
    # backtracking: the more specific branch has no route for the method, or dead-ends
    ([r("/a/{id}/c", "GET"), r("/a/b/*", "POST")], "GET", "/a/b/c", ("/a/{id}/c", {"id": "b"}, 6)),
    ([r("/a/{id}/c", "GET"), r("/a/b/*", "POST")], "POST", "/a/b/c", ("/a/b/*", None, 4)),
    ([r("/a/{id}/c", "GET"), r("/a/b/*", "POST")], "PUT", "/a/b/c", NOT_ALLOWED),
    ([r("/a/{id}/c", "GET"), r("/a/b/*", "POST")], "GET", "/a/x/c", ("/a/{id}/c", {"id": "x"}, 6)),
    ([r("/a/{id}/c", "GET"), r("/a/b/*", "POST")], "GET", "/a/b/d", NOT_ALLOWED),
    ([r("/a/{id}/c", "GET"), r("/a/b/*", "POST")], "GET", "/a/x/d", NOT_FOUND),
    ([r("/a/{id}/c"), r("/a/b/*")], "GET", "/a/b/c", ("/a/b/*", None, 4)),
    ([r("/a/b/c"), r("/a/{x}/d")], "GET", "/a/b/d", ("/a/{x}/d", {"x": "b"}, 6)),
    ([r("/a/b/c/d"), r("/a/{x}/c/e"), r("/*")], "GET", "/a/b/c/e", ("/a/{x}/c/e", {"x": "b"}, 8)),
    ([r("/a/b/c/d"), r("/a/{x}/c/e"), r("/*")], "GET", "/a/b/c/f", ("/*", None, 0)),
    ([r("/a/b/c/d", "GET"), r("/a/{x}/c/d", "POST"), r("/a/*", "PUT")], "PUT", "/a/b/c/d", ("/a/*", None, 2)),
    (
        [r("/a/b/c/d", "GET"), r("/a/{x}/c/d", "POST"), r("/a/*", "PUT")],
        "POST",
        "/a/b/c/d",
        ("/a/{x}/c/d", {"x": "b"}, 8),
    ),
    ([r("/a/b/c/d", "GET"), r("/a/{x}/c/d", "POST"), r("/a/*", "PUT")], "HEAD", "/a/b/c/d", NOT_ALLOWED),
]


def _orders(routes: list[Route]) -> list[list[Route]]:
    return [list(p) for p in itertools.permutations(routes)] if len(routes) <= 3 else [routes, routes[::-1]]


@pytest.mark.parametrize(("routes", "method", "path", "expected"), CASES)
def test_match(speedups_impl: ModuleType, routes: list[Route], method: str, path: str, expected: Any) -> None:
    for order in _orders(routes):
        trie = build(speedups_impl, order)
        route_id, params, tail_start = trie.match(method, path)
        got = (order[route_id][0] if route_id >= 0 else route_id, params, tail_start)
        assert got == expected, order
        if route_id >= 0:
            assert 0 <= tail_start <= len(path)


ALLOWED = [
    ([r("/items", "GET"), r("/items", "POST", "PUT")], "/items", ["GET", "POST", "PUT"]),
    ([r("/items", "GET"), r("/items/*", "DELETE")], "/items", ["DELETE", "GET"]),
    ([r("/items", "GET"), r("/items/*", "DELETE")], "/items/1", ["DELETE"]),
    ([r("/a/{id}/c", "GET"), r("/a/b/*", "POST"), r("/*", "PATCH")], "/a/b/c", ["GET", "PATCH", "POST"]),
    ([r("/a/{id}/c", "GET"), r("/a/b/*", "POST")], "/a/x/c", ["GET"]),
    ([r("/a", "GET")], "/b", []),
    ([r("/a"), r("/a", "GET")], "/a", ["GET"]),
    ([r("/u/{id}", "GET")], "/u/", []),
]


@pytest.mark.parametrize(("routes", "path", "expected"), ALLOWED)
def test_allowed_methods(
    speedups_impl: ModuleType, routes: list[Route], path: str, expected: list[str]
) -> None:
    assert build(speedups_impl, routes).allowed_methods(path) == expected


def test_first_route_wins_on_overlap(speedups_impl: ModuleType) -> None:
    """Overlaps are config errors; if one slips through, the choice is still deterministic."""
    trie = build(speedups_impl, [r("/x", "GET"), r("/x", "GET", "POST"), r("/x"), r("/x")])
    assert trie.match("GET", "/x") == (0, None, 2)
    assert trie.match("POST", "/x") == (1, None, 2)
    assert trie.match("PUT", "/x") == (2, None, 2)


def test_star_must_be_last(speedups_impl: ModuleType) -> None:
    with pytest.raises(ValueError):
        speedups_impl.RouteTrie().add("/a/*/b", None, 0)
    with pytest.raises(ValueError):
        speedups_impl.RouteTrie().add("a", None, 0)


def test_params_dict_is_fresh(speedups_impl: ModuleType) -> None:
    trie = build(speedups_impl, [r("/a/{id}")])
    first = trie.match("GET", "/a/1")[1]
    first["id"] = "changed"
    assert trie.match("GET", "/a/1")[1] == {"id": "1"}


# --- a reference model of the rules, checked against both tries on random route sets ---------


def _segment_kinds(pattern: str, segs: list[str]) -> list[int] | None:
    """Specificity key of ``pattern`` for path segments ``segs`` (literal 0, param 1, * 2), or
    None if it does not match; the smallest key wins, and a prefix is smaller (exact before *)."""
    parts = pattern.split("/")[1:]
    wild = parts[-1] == "*"
    if wild:
        parts = parts[:-1]
        if len(segs) < len(parts):
            return None
    elif len(segs) != len(parts):
        return None
    kinds = []
    for part, seg in zip(parts, segs, strict=False):
        if part.startswith("{"):
            if seg == "":
                return None
            kinds.append(1)
        elif part == seg:
            kinds.append(0)
        else:
            return None
    return kinds + [2] if wild else kinds


def reference_match(routes: list[Route], method: str, path: str) -> tuple[int, dict[str, str] | None, int]:
    segs = path.split("/")[1:]
    best: tuple[list[int], int, int] | None = None
    matched = False
    for route_id, (pattern, methods) in enumerate(routes):
        kinds = _segment_kinds(pattern, segs)
        if kinds is None:
            continue
        matched = True
        if methods is not None and method not in methods:
            continue
        rank = (kinds, 0 if methods is not None else 1, route_id)
        if best is None or rank < best:
            best = rank
    if best is None:
        return NOT_ALLOWED if matched else NOT_FOUND
    route_id = best[2]
    parts = routes[route_id][0].split("/")[1:]
    params = {p[1:-1]: segs[k] for k, p in enumerate(parts) if p.startswith("{")} or None
    if parts[-1] == "*":
        tail_start = sum(1 + len(s) for s in segs[: len(parts) - 1])
    else:
        tail_start = len(path)
    return (route_id, params, tail_start)


_SEGMENT = st.sampled_from(["a", "b", "ab", "{p}", "{q}"])
_METHODS = st.one_of(st.none(), st.frozensets(st.sampled_from(["GET", "POST", "PUT"]), min_size=1))


@st.composite
def route_patterns(draw: st.DrawFn) -> str:
    segs = draw(st.lists(_SEGMENT, max_size=4))
    names = iter(["p0", "p1", "p2", "p3"])
    segs = ["{" + next(names) + "}" if s.startswith("{") else s for s in segs]
    tail = draw(st.sampled_from(["", "", "/*", "/"]))
    pattern = "/" + "/".join(segs) + tail
    return pattern.replace("//", "/")


route_sets = st.lists(st.tuples(route_patterns(), _METHODS), min_size=1, max_size=8)
paths = st.lists(st.sampled_from(["a", "b", "ab", "c", ""]), min_size=1, max_size=5).map(
    lambda s: "/" + "/".join(s)
)


@settings(max_examples=300, deadline=None)
@given(routes=route_sets, method=st.sampled_from(["GET", "POST", "PUT"]), path=paths)
def test_match_follows_reference(
    speedups_impl: ModuleType, routes: list[Route], method: str, path: str
) -> None:
    trie = build(speedups_impl, routes)
    assert trie.match(method, path) == reference_match(routes, method, path)


# --- RouteTable and helpers -------------------------------------------------------------------


def test_route_table(speedups_impl: ModuleType) -> None:
    specs = [
        RouteSpec("/auth/*", None),
        RouteSpec("/admin/*", frozenset({"GET"})),
        RouteSpec("/admin/billing/*", frozenset({"GET", "POST"})),
        RouteSpec("/api/service/{serviceId}/endpoint/{endpointId}/invoke", frozenset({"POST"})),
    ]
    table = RouteTable(specs, trie_factory=speedups_impl.RouteTrie)
    assert table.specs == tuple(specs)
    assert table.match("GET", "/admin/billing/x") == (2, None, 14)
    assert table.match("GET", "/admin/users") == (1, None, 6)
    assert table.match("POST", "/admin/users") == (-2, None, 0)
    assert table.allowed("/admin/billing") == ["GET", "POST"]
    assert table.match("POST", "/api/service/s1/endpoint/e1/invoke") == (
        3,
        {"serviceId": "s1", "endpointId": "e1"},
        34,
    )
    assert table.match("GET", "/nowhere") == (-1, None, 0)


def test_route_table_default_trie() -> None:
    table = RouteTable([RouteSpec("/x/*", None)])
    assert table.match("GET", "/x/y") == (0, None, 2)
    assert isinstance(table._trie, speedups.RouteTrie)


@pytest.mark.parametrize(
    "specs",
    [
        [RouteSpec("/x", frozenset({"GET"})), RouteSpec("/x", frozenset({"GET", "POST"}))],
        [RouteSpec("/x", None), RouteSpec("/x", frozenset({"GET"}))],
        [RouteSpec("/a/{id}", None), RouteSpec("/a/{name}", None)],
        [RouteSpec("/a/*", frozenset({"PUT"})), RouteSpec("/a/*", None)],
        [RouteSpec("a", None)],
        [RouteSpec("/a/{id}/{id}", None)],
    ],
)
def test_route_table_rejects(specs: list[RouteSpec]) -> None:
    assert spec_errors(specs)
    with pytest.raises(ValueError):
        RouteTable(specs)


def test_spec_errors_allows_disjoint_methods() -> None:
    specs = [
        RouteSpec("/x", frozenset({"GET"})),
        RouteSpec("/x", frozenset({"POST"})),
        RouteSpec("/x/*", None),
        RouteSpec("/a/{id}", frozenset({"GET"})),
        RouteSpec("/a/{name}", frozenset({"DELETE"})),
    ]
    assert spec_errors(specs) == []


def test_spec_errors_reports_every_problem() -> None:
    specs = [RouteSpec("x", None), RouteSpec("/a", None), RouteSpec("/a", None), RouteSpec("/b//c", None)]
    errors = spec_errors(specs)
    assert len(errors) == 3
    assert errors[0].startswith("route 0 ")
    assert errors[1].startswith("route 2 ") and "route 1" in errors[1]
    assert errors[2].startswith("route 3 ")


@pytest.mark.parametrize(
    ("path", "tail_start", "replacement", "expected"),
    [
        ("/old/a", 4, "/new", "/new/a"),
        ("/old", 4, "/new", "/new"),
        ("/old/", 4, "/new", "/new/"),
        ("/old/a/b", 4, "/new/", "/new/a/b"),
        ("/api/users", 4, "", "/users"),
        ("/api", 4, "", "/"),
        ("/api/", 4, "", "/"),
        ("/api/users", 4, "/", "/users"),
        ("/a/b", 0, "/v1", "/v1/a/b"),
        ("/", 0, "", "/"),
        ("/exact", 6, "/other", "/other"),
        ("/admin/billing/x%2Fy", 14, "/b", "/b/x%2Fy"),
    ],
)
def test_rewrite_path(path: str, tail_start: int, replacement: str, expected: str) -> None:
    assert rewrite_path(path, tail_start, replacement) == expected


@pytest.mark.parametrize(
    "pattern",
    [
        "/",
        "/*",
        "/a",
        "/a/",
        "/a/*",
        "/a/{id}",
        "/a/{id}/",
        "/a/{id}/*",
        "/a/{_x9}/{Y}",
        "/a/b.json",
        "/a%2Fb",
        "/a;v=1",
        "/v1/chat/completions",
        "/api/service/{serviceId}/endpoint/{endpointId}/invoke/async",
    ],
)
def test_pattern_valid(pattern: str) -> None:
    assert pattern_error(pattern) is None


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "a",
        "*",
        "//a",
        "/a//b",
        "/a/*/b",
        "/a*",
        "/a/b*",
        "/*/",
        "/a/{id",
        "/a/id}",
        "/a/x{id}",
        "/a/{id}x",
        "/a/{}",
        "/a/{1id}",
        "/a/{i-d}",
        "/a/{id}/{id}",
        "/a/.",
        "/a/..",
        "/./a",
        "/a?b",
        "/a#b",
        "/a b",
        "/a\x00",
        "/a\n",
        "/a\\b",
        "/caf\xe9",
        "/%7euser",
        "/a%2fb",
        "/a%zz",
        "/a%00",
    ],
)
def test_pattern_invalid(pattern: str) -> None:
    assert isinstance(pattern_error(pattern), str)
