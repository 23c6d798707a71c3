"""Markdown helpers: everything that comes from data is escaped before it reaches a card."""

from __future__ import annotations

import re

# GitHub-flavoured markdown backslash-escapes any ASCII punctuation. Escaped here: what can start
# emphasis (* _), code (`), strike-through (~), links and images ([ ]: with both escaped, "(" and "!"
# cannot form one), raw HTML (<), entities (&), or split a table cell (|); and the backslash itself.
# Text is flattened to one line, so line-start syntax (#, >, -, 1.) cannot occur.
_SPECIAL = re.compile(r"([\\`*_\[\]<|~&])")
_SPACE = re.compile(r"\s+")


def escape(text: object) -> str:
    """Escape `text` for use inside a markdown paragraph or table cell (one line)."""
    flat = _SPACE.sub(" ", str(text)).strip()
    return _SPECIAL.sub(r"\\\1", flat)


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A GFM table; cells must already be escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(cell or " " for cell in row) + " |" for row in rows)
    return "\n".join(lines)
