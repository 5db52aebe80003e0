"""The route trie, pure-Python twin of ``_trie.pxi`` (compiled into ``fastgw._speedups``)."""

from __future__ import annotations


class _Route:
    """One route as stored in the trie.

    Param names live here, not on the trie node, because routes sharing a node may name the same
    segment differently (``/a/{id}`` GET and ``/a/{name}`` POST). ``indexes`` are positions in
    ``path.split("/")``, so extracting params needs no bookkeeping during the search.
    """

    __slots__ = ("route_id", "names", "indexes")

    def __init__(self, route_id: int, names: tuple[str, ...], indexes: tuple[int, ...]) -> None:
        self.route_id = route_id
        self.names = names
        self.indexes = indexes


class _Endpoint:
    """The routes that end at one trie position (exactly there, or as its ``*`` tail)."""

    __slots__ = ("by_method", "any_route")

    def __init__(self) -> None:
        self.by_method: dict[str, _Route] = {}
        self.any_route: _Route | None = None

    def add(self, methods: frozenset[str] | None, route: _Route) -> None:
        # First added wins on overlap: overlapping routes are a config error caught earlier, and
        # this keeps the choice deterministic if one slips through.
        if methods is None:
            if self.any_route is None:
                self.any_route = route
            return
        for method in sorted(methods):
            if method not in self.by_method:
                self.by_method[method] = route

    def pick(self, method: str) -> _Route | None:
        route = self.by_method.get(method)
        if route is None:
            return self.any_route
        return route


class _Node:
    __slots__ = ("literals", "param", "exact", "wild")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.exact: _Endpoint | None = None
        self.wild: _Endpoint | None = None


def _search(node: _Node, segs: list[str], i: int, pos: int, method: str, found: list[int]) -> _Route | None:
    """Depth-first, most specific branch first; backtracks when a branch has no route for method.

    ``pos`` is the index in the path where the unconsumed part starts (the ``/`` before
    ``segs[i]``), which is the wildcard tail start. ``found[0]`` becomes the tail start of the
    result; ``found[1]`` is set to 1 when some pattern matched the path but not the method.
    """
    if i == len(segs):
        if node.exact is not None:
            route = node.exact.pick(method)
            if route is not None:
                found[0] = pos
                return route
            found[1] = 1
    else:
        seg = segs[i]
        if node.literals:
            child = node.literals.get(seg)
            if child is not None:
                route = _search(child, segs, i + 1, pos + 1 + len(seg), method, found)
                if route is not None:
                    return route
        if node.param is not None and len(seg) > 0:
            route = _search(node.param, segs, i + 1, pos + 1 + len(seg), method, found)
            if route is not None:
                return route
    if node.wild is not None:
        route = node.wild.pick(method)
        if route is not None:
            found[0] = pos
            return route
        found[1] = 1
    return None


def _collect(node: _Node, segs: list[str], i: int, out: set[str]) -> None:
    """Visit every matching branch (no short-cut): the Allow header names all of them."""
    if i == len(segs):
        if node.exact is not None:
            out.update(node.exact.by_method)
    else:
        seg = segs[i]
        if node.literals:
            child = node.literals.get(seg)
            if child is not None:
                _collect(child, segs, i + 1, out)
        if node.param is not None and len(seg) > 0:
            _collect(node.param, segs, i + 1, out)
    if node.wild is not None:
        out.update(node.wild.by_method)


class RouteTrie:
    """Segment trie: literal children in a dict, one ``{param}`` child, one ``*`` endpoint."""

    __slots__ = ("_root",)

    def __init__(self) -> None:
        self._root = _Node()

    def add(self, pattern: str, methods: frozenset[str] | None, route_id: int) -> None:
        if not pattern.startswith("/"):
            raise ValueError(f"route pattern must start with '/': {pattern!r}")
        parts = pattern.split("/")
        node = self._root
        names: list[str] = []
        indexes: list[int] = []
        last = len(parts) - 1
        for k in range(1, len(parts)):
            part = parts[k]
            if part == "*":
                if k != last:
                    raise ValueError(f"'*' must be the last segment: {pattern!r}")
                break
            if len(part) > 2 and part[0] == "{" and part[-1] == "}":
                names.append(part[1:-1])
                indexes.append(k)
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                child = node.literals.get(part)
                if child is None:
                    child = _Node()
                    node.literals[part] = child
                node = child
        route = _Route(route_id, tuple(names), tuple(indexes))
        if parts[last] == "*":
            if node.wild is None:
                node.wild = _Endpoint()
            node.wild.add(methods, route)
        else:
            if node.exact is None:
                node.exact = _Endpoint()
            node.exact.add(methods, route)

    def match(self, method: str, path: str) -> tuple[int, dict[str, str] | None, int]:
        segs = path.split("/")
        found = [0, 0]
        route = _search(self._root, segs, 1, 0, method, found)
        if route is None:
            if found[1]:
                return (-2, None, 0)
            return (-1, None, 0)
        if not route.names:
            return (route.route_id, None, found[0])
        params = {}
        for k in range(len(route.names)):
            params[route.names[k]] = segs[route.indexes[k]]
        return (route.route_id, params, found[0])

    def allowed_methods(self, path: str) -> list[str]:
        out: set[str] = set()
        _collect(self._root, path.split("/"), 1, out)
        return sorted(out)
