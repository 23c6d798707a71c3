"""Common EHR sig text (``Dosage.text``), read only when the dose is unambiguous.

Real exports often carry the structured dose or timing only in the sig: "Take 2 tablets (10 mg
total) by mouth daily", "5 mg PO BID", "Inject 20 mg subcutaneously once weekly". `parse` reads:

* the amount per administration: an explicit ``(N mg total)`` / ``(N mg)`` after a tablet count;
  a single mg amount with no count, or with a count of one; or a tablet/capsule count (strength
  then comes from the product);
* the frequency: daily / BID / TID / QID / QOD / weekly / "three times weekly" / "Mon, Wed, Fri" /
  "every N hours";
* as-needed (PRN) and the route named in the text.

Anything that makes the dose ambiguous (tapers, "then", "or", ranges such as "1-2 tablets", "up
to", "as directed", several different mg amounts or frequencies, a count above one with an mg
amount that may be the strength) gives a `Sig` with a ``problem``: the caller keeps the dose
unknown. Nothing is guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cds.engine import routes
from cds.engine.definition import RouteClass


@dataclass(frozen=True, slots=True)
class Sig:
    mg_per_admin: float | None = None
    count_per_admin: float | None = None  # tablets / capsules
    per_day: float | None = None
    as_needed: bool = False
    route: RouteClass = RouteClass.UNKNOWN
    problem: str | None = None


_AMBIGUOUS = re.compile(
    r"\btaper|\bthen\b|\bor\b|as directed|\bup to\b|sliding|alternat|per protocol|see (?:instructions|notes)|"
    r"\bvariable\b|\buntil\b|\bdecrease|\bincrease|\breduce|\d\s*(?:-|–|to)\s*\d",
    re.I,
)
_PRN = re.compile(r"\bas needed\b|\bprn\b|\bif needed\b|\bwhen needed\b", re.I)
_WORDS = {"one": 1.0, "two": 2.0, "three": 3.0, "four": 4.0, "half": 0.5, "1/2": 0.5, "½": 0.5}
_COUNT = re.compile(
    r"(?P<n>\d+(?:\.\d+)?|one|two|three|four|half|1/2|½)\s*(?:a\s+)?(?P<form>tablets?|tabs?|capsules?|caps?|pills?)\b",
    re.I,
)
_MG = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<u>mg|milligrams?|mcg|micrograms?|g|grams?)\b", re.I)
_MG_TOTAL = re.compile(
    r"\(\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<u>mg|mcg|g)(?:\s+total)?\s*\)",
    re.I,
)
_UNIT_MG = {"mg": 1.0, "milligram": 1.0, "milligrams": 1.0, "mcg": 0.001, "microgram": 0.001,
            "micrograms": 0.001, "g": 1000.0, "gram": 1000.0, "grams": 1000.0}  # fmt: skip

# Ordered: multi-word frequencies first; each match is blanked before the next pattern is tried.
_FREQUENCIES: tuple[tuple[re.Pattern[str], float | None], ...] = (
    (re.compile(r"every\s+(\d+)\s*(?:hours|hrs?|h)\b|\bq\s?(\d+)\s?h\b", re.I), None),
    (re.compile(r"every other day|\bqod\b|on alternate days", re.I), 0.5),
    (
        re.compile(
            r"three times (?:a|per|each) week|3 times (?:a |per )?week(?:ly)?|three times weekly|\btiw\b|\bmwf\b|"
            r"mon(?:day)?s?,?\s*wed(?:nesday)?s?,?\s*(?:and\s*|&\s*)?fri(?:day)?s?",
            re.I,
        ),
        3 / 7,
    ),
    (re.compile(r"twice (?:a|per|each) week|twice weekly|2 times (?:a |per )?week(?:ly)?|\bbiw\b", re.I), 2 / 7),
    (re.compile(r"once (?:a|per|each) week|once weekly|\bweekly\b|every week|\bq\s?wk\b|every 7 days", re.I), 1 / 7),
    (
        re.compile(r"four times (?:a|per|each) day|four times daily|4 times (?:a |per )?da(?:y|ily)|\bqid\b", re.I),
        4.0,
    ),
    (
        re.compile(
            r"three times (?:a|per|each) day|three times daily|3 times (?:a |per )?da(?:y|ily)|\btid\b|\bt\.i\.d\.",
            re.I,
        ),
        3.0,
    ),
    (
        re.compile(
            r"twice (?:a|per|each) day|twice daily|2 times (?:a |per )?da(?:y|ily)|\bbid\b|\bb\.i\.d\.|"
            r"morning and (?:evening|night)",
            re.I,
        ),
        2.0,
    ),
    (
        re.compile(
            r"once (?:a|per|each) day|once daily|\bdaily\b|every day|each day|\bqd\b|\bq\.d\.|"
            r"every (?:morning|evening|night)|\bnightly\b|at bedtime|\bqhs\b|\bqam\b|\bqpm\b|in the morning",
            re.I,
        ),
        1.0,
    ),
)


def _number(text: str) -> float:
    return _WORDS.get(text.lower()) or float(text)


def _frequency(text: str) -> tuple[float | None, str | None]:
    found: set[float] = set()
    rest = text
    for pattern, per_day in _FREQUENCIES:
        for m in pattern.finditer(rest):
            if per_day is None:
                hours = float(next(g for g in m.groups() if g))
                if hours <= 0:
                    return None, "frequency not understood"
                found.add(round(24 / hours, 6))
            else:
                found.add(round(per_day, 6))
        rest = pattern.sub(" ", rest)
    if len(found) > 1:
        return None, "several frequencies"
    return (next(iter(found)) if found else None), None


def parse(text: str | None) -> Sig | None:
    """The sig read from text; None when there is no text. `Sig.problem` set when ambiguous."""
    if not text or not text.strip():
        return None
    t = " ".join(text.split())
    as_needed = bool(_PRN.search(t))
    route = routes.classify_text(t)
    if _AMBIGUOUS.search(t):
        return Sig(as_needed=as_needed, route=route, problem="sig is ambiguous (range, taper or alternatives)")
    per_day, problem = _frequency(t)
    if problem:
        return Sig(as_needed=as_needed, route=route, problem=problem)
    counts = {_number(m.group("n")) for m in _COUNT.finditer(t)}
    totals = {float(m.group("n")) * _UNIT_MG[m.group("u").lower()] for m in _MG_TOTAL.finditer(t)}
    amounts = {float(m.group("n")) * _UNIT_MG[m.group("u").lower()] for m in _MG.finditer(t)}
    if len(counts) > 1:
        return Sig(as_needed=as_needed, route=route, problem="several tablet counts")
    count = next(iter(counts)) if counts else None
    mg: float | None = None
    if totals:
        if len(totals) > 1:
            return Sig(as_needed=as_needed, route=route, problem="several mg amounts")
        mg = next(iter(totals))
    elif amounts:
        if len(amounts) > 1:
            return Sig(as_needed=as_needed, route=route, problem="several mg amounts")
        if count is not None and count != 1:
            return Sig(as_needed=as_needed, route=route, problem="mg amount may be the strength, not the dose")
        mg = next(iter(amounts))
    return Sig(
        mg_per_admin=mg,
        count_per_admin=None if mg is not None else count,
        per_day=per_day,
        as_needed=as_needed,
        route=route,
    )
