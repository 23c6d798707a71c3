"""Markdown helpers: everything that comes from data is escaped before it reaches a card.

Card ``detail`` is GitHub-flavoured markdown rendered by the EHR. Text from FHIR data (codes,
displays, free text, values) can be written by anyone who can write to the chart, or come from an
outside record, so `escape` makes it inert:

* invisible and direction-changing characters are removed: control characters (C0, C1, DEL),
  format characters (bidi overrides and isolates U+202A-U+202E / U+2066-U+2069, marks U+200E/U+200F,
  zero-width U+200B-U+200D, U+2060, U+FEFF, soft hyphen, tag characters) and lone surrogates - they
  could make a cell read differently from what it holds;
* all whitespace (newlines, tabs, U+2028/U+2029) is flattened to single spaces, so a value cannot end
  a table row or start a line (no headings, quotes, lists, fences, setext or thematic breaks);
* every character that can start markdown or HTML syntax is backslash-escaped: emphasis (``*`` ``_``),
  code (backtick), strike-through (``~``), links and images (``[`` ``]``: with both escaped, ``(``
  and ``!`` cannot form one), raw HTML and autolinks (``<``; ``>`` alone starts nothing inside a line),
  entities (``&``), table cells (``|``),
  and the backslash itself;
* GFM *extended autolinks* (bare ``https://...``, ``www.``, ``user@host``) and protocol-relative
  ``//host`` links of other linkifiers are broken by escaping the ``:`` of ``://``, the second ``/``
  of ``//``, the ``.`` of ``www.`` and every ``@``: the text shows unchanged, but no link is made
  from data (a ``javascript:`` or phishing URL in a chart never becomes clickable in a card). The one
  exception is the exact URI of a terminology the trial definition uses (SNOMED CT, LOINC, RxNorm,
  ICD-10-CM, UCUM) forming a whole word as a code system or ``system|code``
  (``http://snomed.info/sct|55464009``): it may render as a link to that terminology, which data
  cannot redirect anywhere else;
* the result is cut to `MAX_CELL` characters.
"""

from __future__ import annotations

import re
import unicodedata

from cds.engine.definition import ICD10CM, LOINC, RXNORM, SNOMED

MAX_CELL = 2000

_SPECIAL = re.compile(r"([\\`*_\[\]<|~&@])")
_WWW = re.compile(r"\b(www)\.", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
TERMINOLOGY_SYSTEMS = (SNOMED, LOINC, RXNORM, ICD10CM, "http://unitsofmeasure.org")
# A system URI is left linkable only as a whole whitespace-delimited token "system" or "system|code"
# (plus closing punctuation): linkifiers extend a link over whatever follows it up to whitespace, and
# "http://loinc.org|x@evil.example" would otherwise link to evil.example (userinfo trick).
_SYSTEM = re.compile(
    r"(?<![\w./:@\\-])("
    + "|".join(re.escape(s) for s in TERMINOLOGY_SYSTEMS)
    + r")(?=(?:\|[A-Za-z0-9.\-]*)?[;,)]*(?:\s|$))"
)
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")  # private-use characters: removed from data by _visible
_KEEP = frozenset("\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85")  # whitespace controls: flattened to spaces below


def _visible(text: str) -> str:
    if text.isascii() and text.isprintable():
        return text
    return "".join(ch for ch in text if ch in _KEEP or unicodedata.category(ch) not in _INVISIBLE_CATEGORIES)


def escape(text: object) -> str:
    """Escape `text` for use inside a markdown paragraph or table cell (one line)."""
    flat = _SPACE.sub(" ", _visible(str(text))).strip()
    if len(flat) > MAX_CELL:
        flat = flat[: MAX_CELL - 1].rstrip() + "…"
    systems: list[str] = []

    def hold(match: re.Match[str]) -> str:
        systems.append(match.group(1))
        return f"\ue000{len(systems) - 1}\ue001"

    held = _SYSTEM.sub(hold, flat)
    escaped = _SPECIAL.sub(r"\\\1", held)
    escaped = escaped.replace("://", "\\://").replace("//", "/\\/")  # no scheme or protocol-relative links
    escaped = _WWW.sub(r"\1\\.", escaped)
    return _PLACEHOLDER.sub(lambda m: systems[int(m.group(1))], escaped)


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A GFM table; cells must already be escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(cell or " " for cell in row) + " |" for row in rows)
    return "\n".join(lines)
