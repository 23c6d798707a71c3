"""Reading a body with a byte cap: the one helper for every body read from outside.

Used for the service's request bodies, FHIR responses (gateway), bulk-export downloads, JWKS
fetches and input files. The cap is checked while reading (a declared length may lie or be absent)
and the reader stops at the first chunk past it; `too_large` builds the caller's own error (each
layer keeps its error class and message).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path

TooLarge = Callable[[], Exception]


def declared_length(value: str | None) -> int | None:
    """A Content-Length header as a number, or None when absent or not a plain number."""
    text = (value or "").strip()
    return int(text) if text.isdigit() else None


def check_declared(value: str | None, limit: int, too_large: TooLarge) -> int | None:
    """The declared length; raises `too_large()` at once if it already exceeds `limit`."""
    size = declared_length(value)
    if size is not None and size > limit:
        raise too_large()
    return size


def bounded(chunks: Iterable[bytes], limit: int, too_large: TooLarge) -> Iterator[bytes]:
    """`chunks` as they come; raises `too_large()` as soon as more than `limit` bytes came."""
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large()
        yield chunk


async def abounded(chunks: AsyncIterable[bytes], limit: int, too_large: TooLarge) -> AsyncIterator[bytes]:
    """`bounded` for an async stream (a request body, an httpx response)."""
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large()
        yield chunk


async def aread_bounded(chunks: AsyncIterable[bytes], limit: int, too_large: TooLarge) -> bytes:
    """A whole async stream, at most `limit` bytes."""
    return b"".join([chunk async for chunk in abounded(chunks, limit, too_large)])


def read_file_bounded(path: Path, limit: int, too_large: TooLarge, *, chunk_size: int = 1 << 20) -> bytes:
    """A whole file, at most `limit` bytes (its size is checked first, then while reading: it may grow).
    OSError propagates."""
    if path.stat().st_size > limit:
        raise too_large()
    with path.open("rb") as fh:
        return b"".join(bounded(iter(lambda: fh.read(chunk_size), b""), limit, too_large))
