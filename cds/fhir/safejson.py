"""JSON decoding with bounds, for everything that arrives from outside (hook bodies, FHIR responses).

`loads_bounded` refuses, with `JsonRejected` (a `ValueError` whose message quotes nothing from the
input), what `json.loads` would accept but the rest of the service cannot safely carry:

* nesting deeper than `max_depth` (checked iteratively: a deep document cannot exhaust the stack
  later, in pydantic, the engine or the card renderer; documents deep enough to hit the
  interpreter's recursion limit inside ``json.loads`` are refused too);
* ``NaN``/``Infinity`` literals and numbers too large for a float (they cannot be written back as
  JSON); integers longer than Python's digit limit;
* lone UTF-16 surrogates (``"\\ud800"``): they would crash UTF-8 encoding of a response or a log line.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

DEFAULT_MAX_DEPTH = 64

# A \uD800-\uDFFF escape, or a surrogate encoded as UTF-8 bytes (json.loads decodes bytes with
# "surrogatepass", so such bytes are not rejected as invalid UTF-8).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonRejected(ValueError):
    """The document is not acceptable JSON (message free of content)."""


def _reject_constant(name: str) -> Any:
    raise JsonRejected("NaN and Infinity are not valid JSON numbers")


def _check_tree(value: Any, max_depth: int, *, strings: bool) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise JsonRejected(f"JSON nested deeper than {max_depth} levels")
        if isinstance(node, dict):
            if strings and any(_SURROGATE.search(k) for k in node):
                raise JsonRejected("JSON strings hold unpaired surrogates")
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
            elif isinstance(child, float):
                if not math.isfinite(child):
                    raise JsonRejected("a JSON number is out of range")
            elif strings and isinstance(child, str) and _SURROGATE.search(child):
                raise JsonRejected("JSON strings hold unpaired surrogates")


def loads_bounded(
    raw: bytes | str,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    object_hook: Callable[[dict[str, Any]], Any] | None = None,
) -> Any:
    """Decode `raw` (UTF-8 bytes or text) and check the bounds above; raises `JsonRejected`."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    try:
        value = json.loads(data, object_hook=object_hook, parse_constant=_reject_constant)
    except JsonRejected:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise JsonRejected("not valid JSON") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise JsonRejected("a JSON number is out of range")
    if isinstance(value, str) and _SURROGATE.search(value):
        raise JsonRejected("JSON strings hold unpaired surrogates")
    _check_tree(value, max_depth, strings=bool(_SURROGATE_ESCAPE.search(data)))
    return value
