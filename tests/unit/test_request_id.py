"""X-Request-Id (SPEC 4): a well-formed client id is kept, otherwise a UUID4 minted without a syscall."""

from __future__ import annotations

import os
import re
import uuid

import pytest

from fastgw import forwarding
from fastgw.forwarding import new_request_id, request_id_from

_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def assert_uuid4(value: str) -> None:
    assert len(value) == 36
    parsed = uuid.UUID(value)
    assert parsed.version == 4
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == value  # canonical: lower-case, dashes in place
    assert _CANONICAL.fullmatch(value)


def test_new_ids_are_uuid4_and_distinct() -> None:
    ids = [new_request_id() for _ in range(5000)]
    for value in ids:
        assert_uuid4(value)
    assert len(set(ids)) == len(ids)


def test_every_random_bit_varies() -> None:
    """All 122 random bits are used (no nibble stuck at 0, none masked by mistake)."""
    fixed = (0xF000 << 64) | (0xC000 << 48)
    ones, zeros = 0, 0
    for _ in range(2000):
        n = uuid.UUID(new_request_id()).int
        ones |= n
        zeros |= ~n
    assert ones & ~fixed == (1 << 128) - 1 & ~fixed
    assert zeros & ~fixed & ((1 << 128) - 1) == (1 << 128) - 1 & ~fixed


def test_no_syscall_per_id(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real = os.urandom

    def counting(n: int) -> bytes:
        nonlocal calls
        calls += 1
        return real(n)

    monkeypatch.setattr(os, "urandom", counting)
    for _ in range(1000):
        request_id_from(None)
    assert calls == 0


def read_child_ids(count: int) -> list[str]:
    """Ids minted by a forked child, read through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery, just write and leave
        try:
            os.close(r)
            os.write(w, "\n".join(new_request_id() for _ in range(count)).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as pipe:
        chunks.append(pipe.read())
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return chunks[0].decode().split("\n")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads alive (other tests)
def test_a_forked_child_does_not_repeat_the_parent() -> None:
    new_request_id()
    child = read_child_ids(8)
    parent = [new_request_id() for _ in range(8)]  # what the child would have produced unseeded
    for value in child:
        assert_uuid4(value)
    assert not set(child) & set(parent)
    # Two children forked from the same parent state differ too (each reseeds on its own).
    assert not set(read_child_ids(8)) & set(read_child_ids(8))


@pytest.mark.parametrize(
    "value",
    ["abc.DEF-123_x", "a", "x" * 128, "0123456789", "550e8400-e29b-41d4-a716-446655440000", "._-"],
)
def test_a_well_formed_client_id_is_kept(value: str) -> None:
    assert request_id_from(value) == value


@pytest.mark.parametrize(
    "value",
    [None, "", "x" * 129, "bad id!", "a/b", "id\n", "id\r\nX-Evil: 1", "é", "١٢٣", "a:b", "tab\t"],
)
def test_anything_else_gets_a_new_uuid4(value: str | None) -> None:
    minted = request_id_from(value)
    assert minted != value
    assert_uuid4(minted)


def test_request_id_from_uses_the_cheap_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forwarding, "new_request_id", lambda: "minted")
    assert request_id_from("bad id!") == "minted"
