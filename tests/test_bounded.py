"""The one bounded-read helper: the cap holds whatever the declared length says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cds.bounded import aread_bounded, bounded, check_declared, declared_length, read_file_bounded


class TooBig(Exception):
    pass


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_async_read_stops_past_the_cap() -> None:
    assert await aread_bounded(_chunks(b"ab", b"cd"), 4, TooBig) == b"abcd"
    with pytest.raises(TooBig):
        await aread_bounded(_chunks(b"ab", b"cd", b"e"), 4, TooBig)


def test_sync_chunks_stop_at_the_first_chunk_past_the_cap() -> None:
    chunks = bounded(iter([b"xx", b"yy", b"zz"]), 3, TooBig)
    assert next(chunks) == b"xx"
    with pytest.raises(TooBig):
        next(chunks)


@pytest.mark.parametrize(("header", "expected"), [("10", 10), (" 7 ", 7), (None, None), ("-1", None), ("1e3", None)])
def test_declared_length(header: str | None, expected: int | None) -> None:
    assert declared_length(header) == expected


def test_a_declared_length_over_the_cap_is_refused_at_once() -> None:
    assert check_declared("5", 5, TooBig) == 5
    with pytest.raises(TooBig):
        check_declared("6", 5, TooBig)


def test_file_read(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_bytes(b"x" * 10)
    assert read_file_bounded(path, 10, TooBig, chunk_size=3) == b"x" * 10
    with pytest.raises(TooBig):
        read_file_bounded(path, 9, TooBig)
