"""``namespace`` maps (user, name) pairs to upstream names one-to-one (SPEC section 2 route key).

For any separator, user ids and names, two different (user, name) pairs that the gateway accepts
never reach the upstream as the same name, in any of the three places a name can be (a JSON
field, a query parameter, a path segment), as the upstream decodes each of them.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, quote, quote_plus, unquote

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastgw.body_rewrite import namespace_request
from fastgw.config import NamespaceConfig
from fastgw.errors import LocalReply
from fastgw.http1.headers import Headers
from fastgw.routing import PathError, normalize_path

JSON = Headers({"Content-Type": "application/json"})

# Separators that repeat themselves ("__", "aba") are where a naive check lets names collide.
separators = st.sampled_from(["__", "_", ":", "--", "aba", "%", "/", "~x~"])
# Identity values the gateway accepts: printable ASCII without '|', weighted towards the
# characters the separators are made of.
users = st.text(
    alphabet=st.sampled_from("ab_:-%~/x")
    | st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="|"),
    min_size=1,
    max_size=8,
)
# Names: any text a client can send (UTF-8, so no lone surrogates).
names = st.text(
    alphabet=st.sampled_from("ab_:-%~/x.é ") | st.characters(blacklist_categories=("Cs",)),
    min_size=1,
    max_size=8,
)

CONFIG = {
    "json": {"json_fields": ["database"]},
    "query": {"query_params": ["database"]},
    "path": {"path_segments_after": ["databases"]},
}


def upstream_names(separator: str, user: str, name: str) -> dict[str, str]:
    """What the upstream decodes for ``name`` sent by ``user``, per place that accepts it."""
    out: dict[str, str] = {}
    for place, keys in CONFIG.items():
        cfg = NamespaceConfig(separator=separator, **keys)  # type: ignore[arg-type]
        path, query, body = "/x", "", b""
        if place == "path":
            try:
                path = normalize_path("/databases/" + quote(name, safe=""))
            except PathError:
                continue  # never routed, let alone namespaced
        elif place == "query":
            query = "database=" + quote_plus(name)
        else:
            body = json.dumps({"database": name}).encode()
        try:
            path, query, body = namespace_request(cfg, user, path, query, body, JSON)
        except LocalReply:
            continue
        if place == "path":
            segments = path.split("/")
            if len(segments) < 3 or not segments[2]:
                continue  # "." or ".." names no segment: /databases/ itself, nobody's name
            out[place] = unquote(segments[2])
        elif place == "query":
            (out[place],) = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "database"]
        else:
            out[place] = json.loads(body)["database"]
    return out


def disjoint(mine: dict[str, str], theirs: dict[str, str]) -> bool:
    return all(mine[place] != theirs[place] for place in mine.keys() & theirs.keys())


def splits(separator: str, text: str) -> list[tuple[str, str]]:
    """Every (user, name) whose ``user + separator + name`` is ``text``."""
    out = []
    start = text.find(separator)
    while start >= 0:
        out.append((text[:start], text[start + len(separator) :]))
        start = text.find(separator, start + 1)
    return out


@settings(max_examples=400, deadline=None)
@given(separators, users, names)
@example("__", "a__b", "c")  # = "a" + "b__c"
@example("__", "a_", "x")  # = "a" + "_x"
@example("aba", "xab", "ay")  # "xababaay" = "x" + "abaay"
def test_no_other_pair_reaches_the_same_upstream_name(separator: str, user: str, name: str) -> None:
    """Every way of reading ``user + separator + name`` back as a pair: at most one is accepted."""
    mine = upstream_names(separator, user, name)
    for other_user, other_name in splits(separator, user + separator + name):
        if (other_user, other_name) == (user, name) or not other_user or not other_name:
            continue
        assert disjoint(mine, upstream_names(separator, other_user, other_name)), (other_user, other_name)


@settings(max_examples=400, deadline=None)
@given(separators, users, names, users, names)
@example("__", "a__b", "c", "a", "b__c")
@example("__", "a_", "x", "a", "_x")
def test_different_pairs_never_share_an_upstream_name(
    separator: str, user: str, name: str, other_user: str, other_name: str
) -> None:
    mine = upstream_names(separator, user, name)
    theirs = upstream_names(separator, other_user, other_name)
    if (user, name) != (other_user, other_name):
        assert disjoint(mine, theirs)


@settings(max_examples=400, deadline=None)
@given(separators, users, names)
def test_an_accepted_name_reads_back_as_its_user_and_name(separator: str, user: str, name: str) -> None:
    """The upstream can always tell the owner: everything before the first separator."""
    mine = upstream_names(separator, user, name)
    for upstream_name in mine.values():
        assert upstream_name.partition(separator) == (user, separator, name)
