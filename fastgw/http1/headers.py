"""A read-only, case-insensitive view of one request's header list, built from the codec's output.

The codec hands over ``(name, value)`` byte pairs with names already lower-cased; the gateway
only ever looks a handful of them up by name, so the view decodes each pair once into a dict of
lists and answers ``get`` with a single dictionary lookup. It mirrors the part of Tornado's
``HTTPHeaders`` interface that the gateway uses (``get``, ``in``, ``get_list``, ``get_all``),
so verifiers stay independent of where a request came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar, overload

_T = TypeVar("_T")


class Headers(Mapping[str, str]):
    """Request headers in arrival order; lookups ignore the case of the name.

    Repeated names keep every value: ``get`` joins them with ``,`` (RFC 9110 5.3), ``get_list``
    returns them one by one. Names come back lower-cased from ``get_all``.
    """

    __slots__ = ("_pairs", "_index")

    def __init__(self, pairs: Iterable[tuple[str, str]] | Mapping[str, str] | None = None) -> None:
        items = pairs.items() if isinstance(pairs, Mapping) else (pairs or ())
        self._pairs: list[tuple[str, str]] = [(name.lower(), value) for name, value in items]
        self._index = _index(self._pairs)

    @classmethod
    def from_raw(cls, raw: list[tuple[bytes, bytes]]) -> Headers:
        """From the codec's pairs (names lower-cased bytes), decoding each byte as one char."""
        self = cls.__new__(cls)
        pairs: list[tuple[str, str]] = []
        index: dict[str, list[str]] = {}
        for raw_name, raw_value in raw:  # one pass: decode, keep, index
            name = raw_name.decode("latin-1")
            value = raw_value.decode("latin-1")
            pairs.append((name, value))
            found = index.get(name)
            if found is None:
                index[name] = [value]
            else:
                found.append(value)
        self._pairs = pairs
        self._index = index
        return self

    @overload
    def get(self, name: str, /) -> str | None: ...

    @overload
    def get(self, name: str, default: str, /) -> str: ...

    @overload
    def get(self, name: str, default: _T, /) -> str | _T: ...

    def get(self, name: str, default: object = None, /) -> object:
        values = self._index.get(name.lower())
        if values is None:
            return default
        return values[0] if len(values) == 1 else ",".join(values)

    def get_list(self, name: str) -> list[str]:
        return list(self._index.get(name.lower(), ()))

    def get_all(self) -> Iterator[tuple[str, str]]:
        return iter(self._pairs)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:
        return f"Headers({len(self._pairs)} fields)"


def _index(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Lower-cased name -> its values in arrival order."""
    index: dict[str, list[str]] = {}
    for name, value in pairs:
        found = index.get(name)
        if found is None:
            index[name] = [value]
        else:
            found.append(value)
    return index
