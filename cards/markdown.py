"""Markdown helpers: everything that comes from data is made inert before it reaches a card.

Card ``detail`` is GitHub-flavoured markdown rendered by the EHR. Text from FHIR data (codes,
displays, free text, values) can be written by anyone who can write to the chart, or come from an
outside record, so `escape` makes it inert **in every renderer clients use**, not only in one:

* invisible and direction-changing characters are removed: control characters (C0, C1, DEL),
  format characters (bidi overrides and isolates U+202A-U+202E / U+2066-U+2069, marks U+200E/U+200F,
  zero-width U+200B-U+200D, U+2060, U+FEFF, soft hyphen, tag characters) and lone surrogates - they
  could make a text read differently from what it holds;
* all whitespace (newlines, tabs, U+2028/U+2029) is flattened to single spaces, so a value cannot end
  a table row or start a line (no headings, quotes, lists, fences, setext or thematic breaks);
* code-system URIs are written as clinicians read them: ``http://snomed.info/sct|55464009`` becomes
  ``SNOMED CT 55464009`` (`humanize_codes`), any other ``system|code`` becomes ``code X``;
* **links are defanged in the text itself** (`defang`), because backslash escapes do not survive
  every renderer: remark-gfm (the CDS Hooks sandbox: react-markdown + remark-gfm + rehype-raw) finds
  bare URLs, ``www.`` hosts and e-mail addresses in the text *after* parsing, when escapes are gone,
  and markdown-it's linkify also links bare ``host.tld`` names. Every whitespace-delimited word that
  a linkifier could take for a link - it holds ``//``, ``www.``, ``@``, a link scheme such as
  ``https:``, ``mailto:`` or ``javascript:``, or a ``name.tld`` - is shown with ``[.]``, ``[:]``,
  ``[at]`` and ``/[/]`` in place of ``.``, ``:``, ``@`` and ``//`` (``https[:]/[/]evil[.]example``):
  a reader can still see what was written, no renderer can make it a link;
* every character that can start markdown or HTML syntax is backslash-escaped: emphasis (``*`` ``_``),
  code (backtick), strike-through (``~``), links and images (``[`` ``]``), raw HTML and autolinks
  (``<``), entities (``&``), table cells (``|``) and the backslash itself;
* the result is cut to `MAX_CELL` characters.

The only links in a card are the ones the service puts in ``links`` (its own report page and the
trial's ClinicalTrials.gov page); `tests/cards/test_renderers.py` renders every fixture's card and a
chart full of hostile text with react-markdown 10 + remark-gfm 4 + rehype-raw 7 and with markdown-it
(linkify on) and checks that.
"""

from __future__ import annotations

import re
import unicodedata

from cds.engine.definition import ICD10CM, LOINC, RXNORM, SNOMED

MAX_CELL = 2000

UCUM = "http://unitsofmeasure.org"
TERMINOLOGY_SYSTEMS = (SNOMED, LOINC, RXNORM, ICD10CM, UCUM)
TERMINOLOGY_NAMES = {SNOMED: "SNOMED CT", LOINC: "LOINC", RXNORM: "RxNorm", ICD10CM: "ICD-10-CM", UCUM: "UCUM"}

_SPECIAL = re.compile(r"([\\`*_\[\]<|~&])")
_SPACE = re.compile(r"\s+")
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_KEEP = frozenset("\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85")  # whitespace controls: flattened to spaces below
_KNOWN_CODE = re.compile(
    "(" + "|".join(re.escape(s) for s in sorted(TERMINOLOGY_SYSTEMS, key=len, reverse=True)) + r")\|([\w.\-]+)"
)
_OTHER_CODE = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*:[^\s|;,()]*\|([\w.\-]+)")
# What a linkifier may take for a link (checked per whitespace-delimited word).
_LINKISH = re.compile(
    r"//|www\.|@|\b(?:https?|ftp|mailto|xmpp|javascript|vbscript|data|file|tel|sms|irc):"
    r"|[\w\-]\.[^\W\d_]{2,}",
    re.IGNORECASE,
)
_WORD = re.compile(r"\S+")
_UCUM_BRACKET = re.compile(r"\[(IU|iU|arb'U|U)\]")
_UCUM_ANNOTATION = re.compile(r"\{([A-Za-z0-9_.]{1,20})\}")
_SPACES = re.compile(r" {2,}")


def _visible(text: str) -> str:
    if text.isascii() and text.isprintable():
        return text
    return "".join(ch for ch in text if ch in _KEEP or unicodedata.category(ch) not in _INVISIBLE_CATEGORIES)


def plain(text: object) -> str:
    """One line of visible text: invisible characters removed, whitespace flattened."""
    return _SPACE.sub(" ", _visible(str(text))).strip()


def _annotation(match: re.Match[str]) -> str:
    inner = match.group(1).replace("_", " ")
    return "" if inner.isalpha() else inner


def humanize_codes(text: str) -> str:
    """As clinicians read it: ``http://snomed.info/sct|55464009`` -> ``SNOMED CT 55464009``, another
    ``system|code`` -> ``code X``; UCUM ``[IU]/mL`` -> ``IU/mL``, ``{score}`` dropped, ``{1.73_m2}`` ->
    ``1.73 m2``."""
    text = _KNOWN_CODE.sub(lambda m: f"{TERMINOLOGY_NAMES[m.group(1)]} {m.group(2)}", text)
    text = _OTHER_CODE.sub(lambda m: f"code {m.group(1)}", text)
    text = _UCUM_BRACKET.sub(r"\1", text)
    return _SPACES.sub(" ", _UCUM_ANNOTATION.sub(_annotation, text)).strip()


def _defang_word(match: re.Match[str]) -> str:
    word = match.group(0)
    if not _LINKISH.search(word):
        return word
    word = word.replace(".", "[.]").replace(":", "[:]").replace("@", "[at]")
    while "//" in word:
        word = word.replace("//", "/[/]")
    return word


def defang(text: str) -> str:
    """Break everything a linkifier could turn into a link (see the module doc); plain text otherwise."""
    return _WORD.sub(_defang_word, text)


def inert(text: object, limit: int = MAX_CELL) -> str:
    """Chart text made safe to *show* anywhere (no link, no markup syntax is removed yet): visible,
    one line, codes humanized, links defanged, cut to `limit`. The HTML report page escapes this
    with `html.escape`; markdown goes through `escape`."""
    flat = plain(text)
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return defang(humanize_codes(flat))


def escape(text: object) -> str:
    """Escape `text` for use inside a markdown paragraph, list item or table cell (one line)."""
    return _SPECIAL.sub(r"\\\1", inert(text))


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A GFM table; cells must already be escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(cell or " " for cell in row) + " |" for row in rows)
    return "\n".join(lines)
