# The route trie, included into _speedups.pyx. The reference is fastgw/_trie_py.py: the same
# search in the same order, so both give the same match for every path.

cdef class _Route:
    """See ``_trie_py._Route``: param names per route, positions in ``path.split("/")``."""

    cdef Py_ssize_t route_id
    cdef tuple names
    cdef tuple indexes

    def __cinit__(self, Py_ssize_t route_id, tuple names, tuple indexes):
        self.route_id = route_id
        self.names = names
        self.indexes = indexes


cdef class _Endpoint:
    cdef dict by_method
    cdef _Route any_route

    def __cinit__(self):
        self.by_method = {}
        self.any_route = None

    cdef void add(self, object methods, _Route route) except *:
        # First added wins on overlap, as in the twin.
        if methods is None:
            if self.any_route is None:
                self.any_route = route
            return
        for method in sorted(methods):
            if method not in self.by_method:
                self.by_method[method] = route

    cdef inline _Route pick(self, str method):
        cdef PyObject* route = PyDict_GetItem(self.by_method, method)
        if route == NULL:
            return self.any_route
        return <_Route>route


cdef class _Node:
    cdef dict literals
    cdef _Node param
    cdef _Endpoint exact
    cdef _Endpoint wild

    def __cinit__(self):
        self.literals = {}
        self.param = None
        self.exact = None
        self.wild = None


cdef _Route _search(
    _Node node, list segs, Py_ssize_t i, Py_ssize_t pos, str method, Py_ssize_t* found
):
    """As ``_trie_py._search``; ``found`` is a C array instead of a list."""
    cdef str seg
    cdef _Route route
    cdef PyObject* child
    if i == len(segs):
        if node.exact is not None:
            route = node.exact.pick(method)
            if route is not None:
                found[0] = pos
                return route
            found[1] = 1
    else:
        seg = <str>segs[i]
        if node.literals:
            child = PyDict_GetItem(node.literals, seg)
            if child != NULL:
                route = _search(<_Node>child, segs, i + 1, pos + 1 + len(seg), method, found)
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


cdef void _collect(_Node node, list segs, Py_ssize_t i, set out) except *:
    cdef str seg
    cdef PyObject* child
    if i == len(segs):
        if node.exact is not None:
            out.update(node.exact.by_method)
    else:
        seg = <str>segs[i]
        if node.literals:
            child = PyDict_GetItem(node.literals, seg)
            if child != NULL:
                _collect(<_Node>child, segs, i + 1, out)
        if node.param is not None and len(seg) > 0:
            _collect(node.param, segs, i + 1, out)
    if node.wild is not None:
        out.update(node.wild.by_method)


cdef tuple _NOT_FOUND = (-1, None, 0)
cdef tuple _NOT_ALLOWED = (-2, None, 0)


cdef class RouteTrie:
    """Segment trie: literal children in a dict, one ``{param}`` child, one ``*`` endpoint."""

    cdef _Node _root

    def __cinit__(self):
        self._root = _Node()

    def add(self, str pattern not None, methods, Py_ssize_t route_id):
        if not pattern.startswith("/"):
            raise ValueError(f"route pattern must start with '/': {pattern!r}")
        cdef list parts = pattern.split("/")
        cdef _Node node = self._root
        cdef _Node child
        cdef list names = []
        cdef list indexes = []
        cdef Py_ssize_t last = len(parts) - 1
        cdef Py_ssize_t k
        cdef str part
        for k in range(1, len(parts)):
            part = <str>parts[k]
            if part == "*":
                if k != last:
                    raise ValueError(f"'*' must be the last segment: {pattern!r}")
                break
            if len(part) > 2 and part[0] == "{" and part[len(part) - 1] == "}":
                names.append(part[1:len(part) - 1])
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
        cdef _Route route = _Route(route_id, tuple(names), tuple(indexes))
        if parts[last] == "*":
            if node.wild is None:
                node.wild = _Endpoint()
            node.wild.add(methods, route)
        else:
            if node.exact is None:
                node.exact = _Endpoint()
            node.exact.add(methods, route)

    def match(self, str method not None, str path not None):
        cdef list segs = path.split("/")
        cdef Py_ssize_t found[2]
        found[0] = 0
        found[1] = 0
        cdef _Route route = _search(self._root, segs, 1, 0, method, found)
        if route is None:
            if found[1]:
                return _NOT_ALLOWED
            return _NOT_FOUND
        if not route.names:
            return (route.route_id, None, found[0])
        cdef dict params = {}
        cdef Py_ssize_t k
        for k in range(len(route.names)):
            params[route.names[k]] = segs[<Py_ssize_t>route.indexes[k]]
        return (route.route_id, params, found[0])

    def allowed_methods(self, str path not None):
        cdef set out = set()
        _collect(self._root, path.split("/"), 1, out)
        return sorted(out)
