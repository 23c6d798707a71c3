"""JSON decoding with bounds, for everything that arrives from outside (hook bodies, FHIR responses).

`loads_bounded` refuses, with `JsonRejected` (a `ValueError` whose message quotes nothing from the
input), what the rest of the service cannot safely carry:

* nesting deeper than `max_depth`, reported as such at ANY depth: the parser (orjson) stops by
  itself at 1024 levels and says so, which is reported as the depth error too; below that a
  level-by-level walk over the containers (never recursive: a deep document cannot exhaust the
  stack here, nor later in pydantic, the engine or the card renderer) checks `max_depth`
  (`_check_depth`);
* ``NaN``/``Infinity`` literals and numbers too large for a float (they cannot be written back as
  JSON), integers of thousands of digits included;
* lone UTF-16 surrogates (``"\\ud800"``, or a surrogate encoded as UTF-8 bytes) and any invalid
  UTF-8: they would crash UTF-8 encoding of a response or a log line.

Parsing is orjson (strict RFC 8259, C speed), which enforces the number and unicode bounds itself;
the walk adds the depth bound. A UTF-8 byte-order mark is skipped. Integers beyond 64 bits are read
as floats (orjson); no FHIR element needs more.

The cyclic garbage collector is paused while a large document (`GC_PAUSE_BYTES`) is decoded: a JSON
tree has no reference cycles, so a collection during its construction can free nothing it builds,
yet the millions of new containers trigger repeated full collections that traverse the growing tree
(on a 15 MB hook body they cost 2-3x the parse itself). The pause is shared by concurrent decoders
(the collector resumes when the last one finishes) and is only lifted if it was enabled before.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from cds.config import setting_default

DEFAULT_MAX_DEPTH: int = setting_default("max_json_depth")
PARSER_MAX_DEPTH = 1024  # orjson refuses deeper documents ("depth limit exceeded")

GC_PAUSE_BYTES = 262_144

_BOM = b"\xef\xbb\xbf"
_gc_lock = threading.Lock()
_gc_pauses = 0


class JsonRejected(ValueError):
    """The document is not acceptable JSON (message free of content)."""


def depth_message(max_depth: int) -> str:
    return f"JSON nested deeper than {max_depth} levels"


def _reason(error: orjson.JSONDecodeError) -> str:
    """A fixed, content-free reason for a parser error."""
    text = str(error)
    if "depth limit" in text or "recursion" in text:
        return "depth"
    if "infinity" in text:
        return "a JSON number is out of range"
    if "surrogate" in text or "UTF-8" in text:
        return "JSON text is not valid UTF-8 or holds unpaired surrogates"
    return "not valid JSON"


def _exact_depth_check(value: Any, max_depth: int) -> None:
    """Iterative walk over containers only (scalars are never pushed): depth <= `max_depth`."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop = stack.pop
    push = stack.append
    while stack:
        node, depth = pop()
        if depth > max_depth:
            raise JsonRejected(depth_message(max_depth))
        children = node.values() if type(node) is dict else node
        below = depth + 1
        for child in children:
            kind = type(child)
            if kind is dict or kind is list:
                push((child, below))


def _check_depth(value: Any, max_depth: int) -> None:
    """Depth <= `max_depth`, level by level at C speed: ``gc.get_referents`` of a level's containers
    are their values, and ``gc.is_tracked`` keeps the containers among them. The collector leaves a
    container untracked only when nothing in it can hold a reference (no container inside: a cycle
    through it is impossible), so untracked containers are leaves and the true depth is the depth
    of tracked containers `d` or ``d + 1``. Only ``d == max_depth`` needs the exact walk."""
    if not gc.is_tracked(value):
        return  # a leaf container: depth 1
    level = [value]
    referents = gc.get_referents
    tracked = gc.is_tracked
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise JsonRejected(depth_message(max_depth))
        level = list(filter(tracked, referents(*level)))
    if depth == max_depth:
        _exact_depth_check(value, max_depth)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic collector (shared, counted: see the module docstring)."""
    global _gc_pauses
    with _gc_lock:
        if _gc_pauses == 0 and not gc.isenabled():
            paused = False  # someone else disabled it: leave it alone
        else:
            paused = True
            _gc_pauses += 1
            gc.disable()
    try:
        yield
    finally:
        if paused:
            with _gc_lock:
                _gc_pauses -= 1
                if _gc_pauses == 0:
                    gc.enable()


def _parse(data: bytes | bytearray | memoryview | str, max_depth: int) -> Any:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        reason = _reason(exc)
        raise JsonRejected(depth_message(max_depth) if reason == "depth" else reason) from None
    if type(value) is dict or type(value) is list:
        _check_depth(value, max_depth)
    return value


def loads_bounded(raw: bytes | bytearray | memoryview | str, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode `raw` (UTF-8 bytes or text) and check the bounds above; raises `JsonRejected`."""
    if max_depth >= PARSER_MAX_DEPTH:
        raise ValueError(f"max_depth must be below {PARSER_MAX_DEPTH}")
    data: bytes | bytearray | memoryview | str = raw
    if isinstance(raw, bytes) and raw.startswith(_BOM):
        data = raw[len(_BOM) :]
    elif isinstance(raw, str) and raw.startswith("\ufeff"):
        data = raw[1:]
    if len(data) < GC_PAUSE_BYTES:
        return _parse(data, max_depth)
    with _gc_paused():
        return _parse(data, max_depth)
