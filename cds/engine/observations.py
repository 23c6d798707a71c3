"""Observation values as laboratories send them.

Real exports carry a result in many shapes; every shape is read here, once, into a `RawValue`:

* ``valueQuantity`` (with ``comparator``), ``valueInteger``;
* ``valueString``: a number with an optional comparator and unit (``>60``, ``<0.5``, ``0.6 mg/dL``,
  ``45 H``), a titre (``1:640``), or a qualitative word (``POSITIVE``, ``Negative``, ``Detected``,
  ``Non-reactive``);
* ``valueCodeableConcept``: SNOMED CT qualifier values for positive / negative / detected / not
  detected / present / absent (or the same words as text);
* ``valueBoolean`` (a presence test: true = positive);
* ``interpretation`` (HL7 v3 ObservationInterpretation: H, HH, L, LL, A, AA, N, POS, NEG, DET, ND):
  kept as supporting evidence; for a qualitative test with no readable value, POS/DET and NEG/ND
  give the result.

Reference ranges are read from ``referenceRange.low/high`` and, when those are absent, from
``referenceRange.text`` (``7-56``, ``<40``, ``0.0-1.2 mg/dL``, ``>= 60``). Anything that does not
parse is left unread, so the caller falls back to its documented default or to ``unknown``.
Nothing here guesses: a shape that is not understood gives a `RawValue` with a ``problem``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from cds.engine import units
from cds.engine.definition import SNOMED

# SNOMED CT qualifier values (and common synonyms) for qualitative results.
POSITIVE_CODES = frozenset(
    {
        "10828004",  # Positive (qualifier value)
        "260373001",  # Detected (qualifier value)
        "52101004",  # Present (qualifier value)
        "11214006",  # Reactive (qualifier value)
        "77386006",  # Pregnant (finding) - pregnancy status observations
    }
)
NEGATIVE_CODES = frozenset(
    {
        "260385009",  # Negative (qualifier value)
        "260415000",  # Not detected (qualifier value)
        "2667000",  # Absent (qualifier value)
        "131194007",  # Non-Reactive (qualifier value)
        "60001007",  # Not pregnant (finding)
    }
)
# HL7 v3 ObservationInterpretation codes that state a qualitative result.
POSITIVE_INTERPRETATION = frozenset({"POS", "DET", "RR"})
NEGATIVE_INTERPRETATION = frozenset({"NEG", "ND", "NR"})
INTERPRETATION_TEXT = {
    "H": "high",
    "HH": "critically high",
    "HU": "significantly high",
    "L": "low",
    "LL": "critically low",
    "LU": "significantly low",
    "A": "abnormal",
    "AA": "critically abnormal",
    "N": "normal",
    "POS": "positive",
    "NEG": "negative",
    "DET": "detected",
    "ND": "not detected",
    "IND": "indeterminate",
    "E": "equivocal",
}

_POSITIVE_WORDS = re.compile(
    r"^(?:(?:weakly|strongly|weak|strong)\s+)?(?:pos|positive|detected|reactive|present|pregnant)$", re.I
)
_NEGATIVE_WORDS = re.compile(
    r"^(?:neg|negative|not\s+detected|none\s+detected|undetected|non-?\s?reactive|absent|not\s+pregnant)$", re.I
)
_INDETERMINATE_WORDS = re.compile(r"^(?:indeterminate|equivocal|borderline|inconclusive|invalid)$", re.I)
_COMPARATORS = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "≤": "<=", "≥": ">=", "=<": "<=", "=>": ">="}
_NUMBER_RE = re.compile(r"^(?P<cmp><=|>=|=<|=>|<|>|≤|≥)?\s*(?P<num>[+-]?(?:\d+\.?\d*|\.\d+))\s*(?P<rest>.*?)\s*$")
_TITRE_RE = re.compile(r"^(?P<cmp><=|>=|<|>)?\s*1\s*:\s*(?P<den>\d+)\s*$")
# A lab flag printed after the value: "45 H", "2.1 K/uL (L)", "130*" (never the L of "U/L").
_FLAG_SUFFIX = re.compile(r"\s*[\(\[]\s*(?:HH|LL|H|L|A)\s*[\)\]]\s*$|(?:^|\s+)(?:HH|LL|H|L|A)\s*$|\s*\*+\s*$")
_RANGE_RE = re.compile(
    r"^\s*(?P<lo>[+-]?\d+(?:\.\d+)?)\s*(?:-|–|—|to)\s*(?P<hi>[+-]?\d+(?:\.\d+)?)\s*(?P<unit>[^\d\s].*?)?\s*$",
    re.I,
)
_BOUND_RE = re.compile(
    r"^\s*(?P<cmp><=|>=|<|>|≤|≥|less than|greater than|up to)\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>[^\d\s].*?)?\s*$",
    re.I,
)


@dataclass(frozen=True, slots=True)
class RawValue:
    """One result as recorded, before conversion to an analyte's unit."""

    text: str  # the value as recorded, for evidence
    number: float | None = None
    comparator: str | None = None  # "<", "<=", ">", ">=" or None
    unit: str | None = None  # UCUM code (spelling mapped by cds.engine.unit_aliases), None if not stated
    qualitative: str | None = None  # "positive" | "negative" | None
    problem: str | None = None  # why no number / qualitative result could be read
    titre: bool = False


@dataclass(frozen=True, slots=True)
class RangeBounds:
    """A reference range, bounds as (value, UCUM unit or None when the text states no unit)."""

    low: tuple[float, str | None] | None
    high: tuple[float, str | None] | None
    from_text: bool


def _codes(concept: Any) -> set[str]:
    return {c.code for c in (getattr(concept, "coding", None) or []) if c.code}


def interpretation_codes(element: Any) -> tuple[str, ...]:
    return tuple(sorted({c for i in (getattr(element, "interpretation", None) or []) for c in _codes(i)}))


def qualitative_word(text: str | None) -> str | None:
    """'positive' / 'negative' for a qualitative word, else None."""
    if not text:
        return None
    t = re.sub(r"[\s.!]+$", "", text.strip())
    if _POSITIVE_WORDS.match(t):
        return "positive"
    if _NEGATIVE_WORDS.match(t):
        return "negative"
    return None


def _concept_qualitative(concept: Any) -> str | None:
    pos = neg = False
    for c in concept.coding or []:
        if c.code in POSITIVE_CODES and (c.system in (None, SNOMED)):
            pos = True
        elif c.code in NEGATIVE_CODES and (c.system in (None, SNOMED)):
            neg = True
    if pos != neg:
        return "positive" if pos else "negative"
    if pos and neg:
        return None
    for t in (concept.text, *[c.display for c in concept.coding or []]):
        if (q := qualitative_word(t)) is not None:
            return q
    return None


def concept_text(concept: Any) -> str:
    """A CodeableConcept for people: its text, else a coding's display, else a code."""
    if concept.text:
        return str(concept.text)
    for c in concept.coding or []:
        if c.display:
            return str(c.display)
    for c in concept.coding or []:
        if c.code:
            return str(c.code)
    return "(no code)"


def parse_number_text(text: str) -> RawValue:
    """A valueString: number (comparator, unit, trailing lab flag), titre or qualitative word."""
    original = text.strip()
    if (q := qualitative_word(original)) is not None:
        return RawValue(original, qualitative=q)
    if _INDETERMINATE_WORDS.match(original):
        return RawValue(original, problem="indeterminate result")
    if m := _TITRE_RE.match(original):
        return RawValue(original, float(m.group("den")), _COMPARATORS.get(m.group("cmp") or ""), "{titer}", titre=True)
    m = _NUMBER_RE.match(original)
    if m is None:
        return RawValue(original, problem="text result not understood")
    rest = _FLAG_SUFFIX.sub("", m.group("rest")) if m.group("rest") else ""
    if rest and re.match(r"^[,\d]", rest):
        return RawValue(original, problem="number not understood (thousands separator or decimal comma)")
    unit = units.normalise_code(None, rest, None) if rest else None
    return RawValue(original, float(m.group("num")), _COMPARATORS.get(m.group("cmp") or ""), unit)


def quantity_text(q: Any) -> str:
    comp = q.comparator or ""
    unit = q.unit or q.code or ""
    value = "?" if q.value is None else _fmt(float(q.value))
    return f"{comp}{value} {unit}".strip()


def _fmt(x: float) -> str:
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.4g}" if abs(x) < 1 else f"{round(x, 3):g}"


def read_value(element: Any) -> RawValue:
    """The value of an Observation or Observation.component, in whichever value[x] it came."""
    if getattr(element, "dataAbsentReason", None) is not None:
        return RawValue("data absent", problem="data absent")
    q = element.valueQuantity
    if q is not None:
        if q.value is None:
            return RawValue(quantity_text(q), problem="no numeric value")
        if not math.isfinite(float(q.value)):
            return RawValue(quantity_text(q), problem="no numeric value")
        unit = units.normalise_code(q.code, q.unit, q.system)
        return RawValue(quantity_text(q), float(q.value), q.comparator, unit)
    if element.valueInteger is not None:
        return RawValue(str(element.valueInteger), float(element.valueInteger))
    if element.valueString is not None:
        return parse_number_text(str(element.valueString))
    if element.valueCodeableConcept is not None:
        concept = element.valueCodeableConcept
        text = concept_text(concept)
        qual = _concept_qualitative(concept)
        return RawValue(text, qualitative=qual, problem=None if qual else "coded result not understood")
    if element.valueBoolean is not None:
        return RawValue(
            "true" if element.valueBoolean else "false", qualitative="positive" if element.valueBoolean else "negative"
        )
    for other in ("valueRange", "valueRatio", "valueSampledData", "valueTime", "valueDateTime", "valuePeriod"):
        if getattr(element, other, None) is not None:
            return RawValue(other, problem=f"{other} not read")
    return RawValue("no value", problem="no value")


def qualitative_from_interpretation(codes: tuple[str, ...]) -> str | None:
    pos = bool(set(codes) & POSITIVE_INTERPRETATION)
    neg = bool(set(codes) & NEGATIVE_INTERPRETATION)
    if pos == neg:
        return None
    return "positive" if pos else "negative"


def _range_usable(rr: Any) -> bool:
    if rr.type is not None and _codes(rr.type) and "normal" not in _codes(rr.type):
        return False
    return not rr.appliesTo  # population-specific ranges are not matched to the patient


def parse_range_text(text: str) -> RangeBounds | None:
    t = text.strip()
    if m := _RANGE_RE.match(t):
        unit = units.normalise_code(None, m.group("unit"), None) if m.group("unit") else None
        lo, hi = float(m.group("lo")), float(m.group("hi"))
        if lo > hi:
            return None
        return RangeBounds((lo, unit), (hi, unit), True)
    if m := _BOUND_RE.match(t):
        unit = units.normalise_code(None, m.group("unit"), None) if m.group("unit") else None
        bound = (float(m.group("num")), unit)
        cmp = m.group("cmp").lower()
        if cmp in ("<", "<=", "≤", "less than", "up to"):
            return RangeBounds(None, bound, True)
        return RangeBounds(bound, None, True)
    return None


def reference_bounds(element: Any) -> RangeBounds | None:
    """The first usable normal range: low/high quantities, else its text. None when none is usable."""
    for rr in getattr(element, "referenceRange", None) or []:
        if not _range_usable(rr):
            continue
        low = high = None
        if rr.low is not None and rr.low.value is not None:
            low = (float(rr.low.value), units.normalise_code(rr.low.code, rr.low.unit, rr.low.system))
        if rr.high is not None and rr.high.value is not None:
            high = (float(rr.high.value), units.normalise_code(rr.high.code, rr.high.unit, rr.high.system))
        if low is not None or high is not None:
            return RangeBounds(low, high, False)
        if rr.text:
            parsed = parse_range_text(str(rr.text))
            if parsed is not None:
                return parsed
    return None
