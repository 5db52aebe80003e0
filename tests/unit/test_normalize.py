"""SPEC section 3 path normalisation, and the path-confusion attacks of HARDENING section B."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgw.routing import PathError, normalize_path

NORMALISED = [
    # already normal: returned as is
    ("/", "/"),
    ("/api/users", "/api/users"),
    ("/api/users/", "/api/users/"),
    ("/a/b.json", "/a/b.json"),
    ("/a/.hidden", "/a/.hidden"),
    ("/a/..b", "/a/..b"),
    ("/a/b..", "/a/b.."),
    ("/a;b=c/d", "/a;b=c/d"),
    ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
    # SPEC 3: dot segments per RFC 3986 5.2.4, trailing slash kept
    ("/a/b/..", "/a/"),
    ("/a/b/.", "/a/b/"),
    ("/a/./b", "/a/b"),
    ("/a/b/../c", "/a/c"),
    ("/a/b/../../c", "/c"),
    ("/a/..", "/"),
    ("/a/../", "/"),
    ("/.", "/"),
    ("/./", "/"),
    ("/a/b/../", "/a/"),
    # SPEC 3: repeated slashes merged, before dot segments
    ("/public//../admin", "/admin"),
    ("//admin/users", "/admin/users"),
    ("///admin", "/admin"),
    ("/a//b///c//", "/a/b/c/"),
    ("//", "/"),
    # SPEC 3: percent-encoded unreserved decoded (including %2e), case-insensitive hex
    ("/%61dmin/users", "/admin/users"),
    ("/%41%5a%7e%2D%5f%2E", "/AZ~-_."),
    ("/%7Euser", "/~user"),
    ("/%30%39", "/09"),
    ("/public/%2e%2e/admin/users", "/admin/users"),
    ("/public/%2E%2E/admin", "/admin"),
    ("/public/.%2e/admin", "/admin"),
    ("/public/%2e./admin", "/admin"),
    ("/a/%2e/b", "/a/b"),
    ("/public/../admin/users", "/admin/users"),
    # other escapes stay encoded, hex uppercased; %2F stays inside its segment
    ("/admin%2Fusers", "/admin%2Fusers"),
    ("/admin%2fusers", "/admin%2Fusers"),
    ("/public/..%2fadmin/users", "/public/..%2Fadmin/users"),
    ("/public%2F..%2Fadmin", "/public%2F..%2Fadmin"),
    ("/a%20b", "/a%20b"),
    ("/a%3a%3F%23", "/a%3A%3F%23"),
    ("/caf%c3%a9", "/caf%C3%A9"),
    ("/%C0%AFadmin", "/%C0%AFadmin"),
    # decoded exactly once
    ("/public/%252e%252e/admin", "/public/%252e%252e/admin"),
    ("/%2561dmin", "/%2561dmin"),
    ("/a%25", "/a%25"),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALISED)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


REJECTED = [
    # above the root
    "/..",
    "/../",
    "/../admin",
    "/a/../..",
    "/a/../../b",
    "/%2e%2e/admin",
    "/%2E%2E",
    "/.%2e/admin",
    "/public/../../admin",
    "//../admin",
    # not an absolute path
    "",
    "admin",
    "*",
    "%2Fadmin",
    # raw or encoded control characters
    "/admin/users%00",
    "/admin/users%0a",
    "/admin/users%0A",
    "/admin%09/users",
    "/admin%0d%0a",
    "/a%1f",
    "/a%7f",
    "/a%7F",
    "/admin/users\x00",
    "/admin\n",
    "/admin\t/users",
    "/a\x7f",
    "/a b",
    # backslash, raw or encoded
    "/public/..\\admin",
    "/admin\\users",
    "/public/..%5cadmin",
    "/public/..%5Cadmin",
    # fragment
    "/public#/../admin/users",
    "/a#",
    # invalid percent-escapes
    "/a%zz",
    "/a%4",
    "/a%",
    "/a%%41",
    "/a%g1",
    "/a%1g",
    # raw non-ASCII (must arrive percent-encoded)
    "/caf\xe9",
    "/\xc3\xa9",
    "/ａｄｍｉｎ",
]


@pytest.mark.parametrize("raw", REJECTED)
def test_rejected(raw: str) -> None:
    with pytest.raises(PathError):
        normalize_path(raw)


def test_path_error_is_value_error() -> None:
    assert issubclass(PathError, ValueError)


def test_admin_attacks_never_reach_public() -> None:
    """HARDENING B: every spelling of an admin path is refused or normalises to /admin/..."""
    attacks = [
        "/public/../admin/users",
        "/public/%2e%2e/admin/users",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "//admin/users",
        "/public//../admin",
        "///admin",
        "/%61dmin/users",
        "/public/./../admin",
        "/public/a/../../admin",
    ]
    for raw in attacks:
        assert normalize_path(raw).startswith("/admin"), raw


_PATH_CHARS = st.sampled_from(
    ["/", "/", "/", ".", "..", "a", "b", "%2e", "%2E", "%2f", "%41", "%7e", "%25", "%2561", "~", ";", "%"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PATH_CHARS, max_size=12).map(lambda parts: "/" + "".join(parts)))
def test_normal_form_properties(raw: str) -> None:
    try:
        path = normalize_path(raw)
    except PathError:
        return
    assert normalize_path(path) == path  # idempotent: normalising twice changes nothing
    assert path.startswith("/")
    assert "//" not in path
    segments = path.split("/")
    assert "." not in segments and ".." not in segments
    for escape in re.findall(r"%(..)", path):
        assert escape == escape.upper()
        char = chr(int(escape, 16))
        assert not (char.isascii() and char.isalnum()) and char not in "-._~"


def reference_normalize(raw: str) -> str:
    """A deliberately plain transcription of SPEC section 3 and RFC 3986 5.2.4 (its buffer
    algorithm), to check the fast path and the optimised slow path against."""
    if not raw.startswith("/"):
        raise PathError("relative")
    decoded = ""
    i = 0
    while i < len(raw):
        char = raw[i]
        if not ("\x21" <= char <= "\x7e") or char in "\\#":
            raise PathError("raw")
        if char != "%":
            decoded += char
            i += 1
            continue
        pair = raw[i + 1 : i + 3]
        if len(pair) != 2 or any(c not in "0123456789abcdefABCDEF" for c in pair):
            raise PathError("escape")
        byte = int(pair, 16)
        if byte < 0x20 or byte == 0x7F or byte == 0x5C:
            raise PathError("encoded control")
        if chr(byte).isascii() and (chr(byte).isalnum() or chr(byte) in "-._~"):
            decoded += chr(byte)
        else:
            decoded += "%" + pair.upper()
        i += 3
    path = re.sub("/+", "/", decoded)
    output = ""
    while path:
        if path.startswith("/./"):
            path = path[2:]
        elif path == "/.":
            path = "/"
        elif path.startswith("/../") or path == "/..":
            if not output:
                raise PathError("above root")
            output = output[: output.rfind("/")]
            path = "/" + path[4:] if path.startswith("/../") else "/"
        else:
            end = path.find("/", 1)
            end = len(path) if end == -1 else end
            output += path[:end]
            path = path[end:]
    return output


_ANY_CHARS = st.lists(
    st.sampled_from(
        [
            "/",
            "/",
            "/",
            ".",
            ".",
            "a",
            "Z",
            "%",
            "2",
            "e",
            "E",
            "f",
            "5",
            "c",
            "0",
            "~",
            "#",
            "\\",
            " ",
            "\x00",
            "é",
            "%2",
        ]
    ),
    max_size=14,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(st.one_of(_ANY_CHARS, _ANY_CHARS.map(lambda s: "/" + s)))
def test_matches_reference(raw: str) -> None:
    try:
        expected = reference_normalize(raw)
    except PathError:
        with pytest.raises(PathError):
            normalize_path(raw)
        return
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), NORMALISED)
def test_reference_agrees_with_table(raw: str, expected: str) -> None:
    assert reference_normalize(raw) == expected
