"""Items of a computed classification or score (SLICC 2012, SLEDAI-2K), each met / not_met / unknown.

An item is read from the chart over a window (`window_days`; None: the whole record, the
"cumulative" reading classification criteria use). Conventions, shared by every item:

* a test never done in the window is `unknown` ("not tested"), never `not_met`;
* a result that settles the item (any result at or beyond the threshold, at least once) makes it
  `met`; `not_met` needs results that all settle against it;
* a coded finding is `met` when a usable, confirmed Condition carries it; its absence is
  `unknown` (a problem list does not prove a finding absent);
* "above / below the laboratory's reference range" uses the result's own range; a documented
  default cut-off is used only where stated (flagged ULN_ASSUMED) and otherwise the item is
  `unknown`.

Items are pure functions of the `Context` (no I/O, no clock); the value sets and cut-offs are data
from the trial definition (see `cds.trials.nct04582136.sle_items`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any, Protocol

from cds.engine import facts, observations, units
from cds.engine.definition import Analyte, ValueSet
from cds.engine.facts import Interval, fmt
from cds.engine.model import Evidence, Flag, ItemResult, Status
from cds.engine.rules import Context

MET, NOT_MET, UNKNOWN = Status.MET, Status.NOT_MET, Status.UNKNOWN

# "The whole record": a window longer than any human record (cumulative classification items).
WHOLE_RECORD_DAYS = 365 * 150

_USABLE = frozenset({"final", "amended", "corrected"})
_HIGH_INTERPRETATION = frozenset({"H", "HH", "HU", "A", "AA", "POS", "DET"})
_LOW_INTERPRETATION = frozenset({"L", "LL", "LU"})
_NORMAL_INTERPRETATION = frozenset({"N", "NEG", "ND"})
_TITRE_RANGE = re.compile(r"^\s*(?P<cmp><=|<|≤|less than)?\s*1\s*:\s*(?P<den>\d+)\s*$", re.I)
MAX_EVIDENCE = 5  # evidence entries shown per item (the most telling first)


class Item(Protocol):
    id: str

    def evaluate(self, ctx: Context) -> ItemResult: ...


def window_start(ctx: Context, window_days: int | None) -> date:
    return ctx.as_of - timedelta(days=window_days if window_days is not None else WHOLE_RECORD_DAYS)


def _span_text(window_days: int | None) -> str:
    return "in the record" if window_days is None else f"in the last {window_days} days"


def _not_searched(ctx: Context, rtype: str) -> bool:
    return rtype not in ctx.record.searched


# ---------------------------------------------------------------------------------------------
# Numeric threshold on a lab analyte (unit-converted): "< 100 x10^9/L at least once"
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabThreshold:
    """Met when any result of `analytes` in the window satisfies `value op threshold`."""

    id: str
    label: str
    group: str
    analytes: tuple[Analyte, ...]
    op: str
    threshold: float
    window_days: int | None = None
    points: int | None = None
    review: str = ""  # a caveat shown with a met item (e.g. "exclude drug causes")

    def describe(self) -> str:
        return f"{self.analytes[0].name} {self.op} {fmt(self.threshold)} {self.analytes[0].unit}"

    def evaluate(self, ctx: Context) -> ItemResult:
        return self._result(ctx, *judge_threshold(ctx, self.analytes, self.op, self.threshold, self.window_days))

    def _result(self, ctx: Context, status: Status, reason: str, ev: tuple[Evidence, ...]) -> ItemResult:
        if status is MET and self.review:
            reason = f"{reason} ({self.review}: to verify)"
            ev = tuple(replace(e, flags=tuple(dict.fromkeys((*e.flags, Flag.NEEDS_REVIEW)))) for e in ev)
        return ItemResult(self.id, self.label, self.group, status, reason, ev, self.points)


def judge_threshold(
    ctx: Context, analytes: Sequence[Analyte], op: str, threshold: float, window_days: int | None
) -> tuple[Status, str, tuple[Evidence, ...]]:
    """(status, reason, evidence) of "any result of these analytes in the window op threshold"."""
    name = analytes[0].name
    want = f"{name} {op} {fmt(threshold)} {analytes[0].unit}"
    if _not_searched(ctx, "Observation"):
        return (
            UNKNOWN,
            f"{name}: observations not available",
            (Evidence("Observation", "data not available (not searched or could not be read)"),),
        )
    days = window_days if window_days is not None else WHOLE_RECORD_DAYS
    results = [lv for a in analytes for lv in ctx.labs(a, days)]
    if not results:
        return (
            UNKNOWN,
            f"{name} not tested {_span_text(window_days)}",
            (Evidence("Observation", f"no {name} result {_span_text(window_days)}"),),
        )
    met: list[facts.LabValue] = []
    undecided: list[facts.LabValue] = []
    decided_not: list[facts.LabValue] = []
    for lv in results:
        decided = lv.value.test(op, threshold) if lv.value is not None else None
        if decided:
            met.append(lv)
        elif decided is None:
            undecided.append(lv)
        else:
            decided_not.append(lv)
    if met:
        extreme = sorted(met, key=lambda lv: _extreme_key(lv, op))
        ev = tuple(lv.evidence(f"{name} {lv.value.text() if lv.value else '?'} {lv.analyte.unit}") for lv in extreme)
        first = extreme[0]
        return MET, f"{want} on {first.when} ({len(met)} of {len(results)} results)", ev[:MAX_EVIDENCE]
    if undecided:
        ev = tuple(lv.evidence(f"{name}: {lv.problem or 'comparator cannot settle'}") for lv in undecided)
        return (
            UNKNOWN,
            f"{name}: {len(undecided)} result(s) cannot be compared with {fmt(threshold)}",
            ev[:MAX_EVIDENCE],
        )
    latest = decided_not[0]
    ev = (latest.evidence(f"{name} {latest.value.text() if latest.value else '?'} {latest.analyte.unit} (latest)"),)
    return NOT_MET, f"no {want} in {len(results)} result(s) {_span_text(window_days)}", ev


def _extreme_key(lv: facts.LabValue, op: str) -> tuple[float, str]:
    assert lv.value is not None
    v = lv.value.lo if op in ("<", "<=") else -lv.value.hi
    return (v, lv.when.isoformat())


# ---------------------------------------------------------------------------------------------
# Above / below the laboratory's own reference range (titres, qualitative results, interpretation)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RangeTest:
    """Results coded in `codes` judged against their own reference range.

    direction "high": above the range (or positive); "low": below the range. `default_titre`: the
    titre cut-off (denominator, positive at >= 1:N) used when a titre has no readable range
    (flagged ULN_ASSUMED, stated in the evidence). `fold`: the result must exceed `fold` x ULN
    (e.g. SLICC's 2x rule for anti-dsDNA by ELISA); a result above the range but below it is
    unknown, `fold_note` saying why.
    """

    name: str
    codes: ValueSet
    direction: str = "high"
    default_titre: int | None = None
    default_titre_source: str = ""
    fold: float = 1.0
    fold_note: str = "method not recorded"
    # Numeric results without a range: the limit the analyte has by definition (RBC casts: none
    # are normal, so 0); None: such a result is unknown.
    default_limit: float | None = None


@dataclass(frozen=True, slots=True)
class _Judged:
    status: Status
    text: str
    flags: tuple[Flag, ...] = ()


def _titre_cutoff(element: Any) -> int | None:
    """The positive-from titre denominator stated by a reference range ("<1:80" -> 80).

    Only the forms "<1:N" / "less than 1:N" (negative below 1:N: positive at >= 1:N) and
    "<=1:N" (positive above 1:N: returned as N + 1) are read; anything else: None.
    """
    for rr in getattr(element, "referenceRange", None) or []:
        text = rr.text or ""
        m = _TITRE_RANGE.match(str(text))
        if m is None or m.group("cmp") is None:
            continue
        den = int(m.group("den"))
        return den + 1 if m.group("cmp") in ("<=", "≤") else den
    return None


def judge_range(test: RangeTest, element: Any) -> _Judged:
    """Is one result above (below) its reference range? met / not_met / unknown with a text."""
    raw = observations.read_value(element)
    interp = set(observations.interpretation_codes(element))
    high = test.direction == "high"
    if raw.number is not None:
        value = Interval.from_comparator(raw.number, raw.comparator)
        if raw.titre:
            cutoff = _titre_cutoff(element)
            flags: tuple[Flag, ...] = ()
            source = "laboratory range"
            if cutoff is None and test.default_titre is not None:
                cutoff, flags, source = (
                    test.default_titre,
                    (Flag.ULN_ASSUMED,),
                    (f"default cut-off 1:{test.default_titre}, no laboratory range ({test.default_titre_source})"),
                )
            if cutoff is None:
                return _from_interpretation(raw.text, interp, high, "titre without a reference range")
            decided = value.test(">=", cutoff)
            return _decided(decided, f"{raw.text} vs positive from 1:{cutoff} ({source})", flags)
        bounds = observations.reference_bounds(element)
        bound = (bounds.high if high else bounds.low) if bounds is not None else None
        if bound is None and test.default_limit is not None:
            op = ">" if high else "<"
            return _decided(value.test(op, test.default_limit), f"{raw.text} (normally {fmt(test.default_limit)})")
        if bound is None:
            return _from_interpretation(raw.text, interp, high, "no laboratory reference range")
        limit, limit_unit = bound
        if limit_unit is not None and raw.unit is not None and limit_unit != raw.unit:
            converted = units.convert(limit, limit_unit, raw.unit, None)
            if converted is None:
                return _Judged(UNKNOWN, f"{raw.text}: range unit {limit_unit} not comparable")
            limit = converted
        if high:
            over = value.test(">", limit * test.fold)
            if over is False and test.fold > 1 and value.test(">", limit):
                return _Judged(
                    UNKNOWN,
                    f"{raw.text} above the range ({fmt(limit)}) but not {fmt(test.fold)}x it ({test.fold_note})",
                )
            shown = f"{fmt(test.fold)}x ULN {fmt(limit * test.fold)}" if test.fold > 1 else f"ULN {fmt(limit)}"
            return _decided(over, f"{raw.text} vs {shown}")
        return _decided(value.test("<", limit), f"{raw.text} vs LLN {fmt(limit)}")
    if raw.qualitative is not None:
        if not high:
            return _Judged(UNKNOWN, f"{raw.text}: qualitative result for a below-range item")
        return _Judged(MET if raw.qualitative == "positive" else NOT_MET, f"{raw.text} ({raw.qualitative})")
    return _from_interpretation(raw.text, interp, high, raw.problem or "no readable value")


def _decided(decided: bool | None, text: str, flags: tuple[Flag, ...] = ()) -> _Judged:
    if decided is None:
        return _Judged(UNKNOWN, f"{text}: comparator cannot settle", (*flags, Flag.COMPARATOR))
    return _Judged(MET if decided else NOT_MET, text, flags)


def _from_interpretation(text: str, interp: set[str], high: bool, problem: str) -> _Judged:
    """Fallback on the laboratory's interpretation flag (H/A/POS or L; N/NEG)."""
    abnormal = _HIGH_INTERPRETATION if high else _LOW_INTERPRETATION
    if interp & abnormal:
        return _Judged(MET, f"{text} flagged {'/'.join(sorted(interp & abnormal))} by the laboratory ({problem})")
    if (
        interp & _NORMAL_INTERPRETATION
        or (high and interp & _LOW_INTERPRETATION)
        or (not high and interp & {"H", "HH", "HU"})
    ):
        return _Judged(NOT_MET, f"{text} flagged {'/'.join(sorted(interp))} by the laboratory ({problem})")
    return _Judged(UNKNOWN, f"{text}: {problem}")


def range_results(ctx: Context, codes: ValueSet, window_days: int | None) -> list[tuple[str, date, Any, str | None]]:
    """(reference, day, element, component) of usable results coded in `codes`, newest first."""
    start = window_start(ctx, window_days)
    reports = facts.report_index(ctx.record) if ctx.record.of("DiagnosticReport") else {}
    out: list[tuple[str, date, Any, str | None, Any]] = []
    for o in ctx.observations(codes):
        if o.status not in _USABLE:
            continue
        ref = f"Observation/{o.id}"
        link = reports.get(ref)
        if link is not None and link.status in facts.REPORT_WITHDRAWN:
            continue
        t = facts.obs_time(o) or (link.time if link is not None else None)
        if t is None or t[0] > ctx.as_of or t[0] < start:
            continue
        if codes.match(o.code) is not None:
            out.append((ref, t[0], o, None, t))
            continue
        for comp in o.component or []:
            if (m := codes.match(comp.code)) is not None:
                out.append((ref, t[0], comp, str(m), t))
    out.sort(key=lambda r: (r[4], r[0], r[3] or ""), reverse=True)  # ties by reference: order-independent
    return [(ref, day, el, comp) for ref, day, el, comp, _ in out]


@dataclass(frozen=True)
class OutOfRange:
    """Met when any result of any test is beyond its laboratory's reference range (or positive)."""

    id: str
    label: str
    group: str
    tests: tuple[RangeTest, ...]
    window_days: int | None = None
    points: int | None = None

    def evaluate(self, ctx: Context) -> ItemResult:
        status, reason, ev = judge_out_of_range(ctx, self.tests, self.window_days)
        return ItemResult(self.id, self.label, self.group, status, reason, ev, self.points)


def judge_out_of_range(
    ctx: Context, tests: Sequence[RangeTest], window_days: int | None
) -> tuple[Status, str, tuple[Evidence, ...]]:
    names = "/".join(dict.fromkeys(t.name for t in tests))
    if _not_searched(ctx, "Observation"):
        return (
            UNKNOWN,
            f"{names}: observations not available",
            (Evidence("Observation", "data not available (not searched or could not be read)"),),
        )
    met: list[Evidence] = []
    unknown: list[Evidence] = []
    normal: list[Evidence] = []
    for test in tests:
        for ref, day, element, component in range_results(ctx, test.codes, window_days):
            j = judge_range(test, element)
            desc = f"{test.name} {j.text}" + (f" (panel component {component})" if component else "")
            ev = Evidence(ref, desc, date=day.isoformat(), original=observations.read_value(element).text,
                          flags=j.flags)  # fmt: skip
            {MET: met, UNKNOWN: unknown, NOT_MET: normal}[j.status].append(ev)
    direction = "below" if tests and tests[0].direction == "low" else "above"
    if met:
        return (
            MET,
            f"{names} {direction} the reference range: {met[0].description} on {met[0].date}",
            tuple(met[:MAX_EVIDENCE]),
        )
    if unknown:
        return (
            UNKNOWN,
            f"{names}: {len(unknown)} result(s) cannot be judged ({unknown[0].description})",
            tuple(unknown[:MAX_EVIDENCE]),
        )
    if normal:
        return (
            NOT_MET,
            f"{names} within the reference range in {len(normal)} result(s) {_span_text(window_days)}",
            (normal[0],),
        )
    return (
        UNKNOWN,
        f"{names} not tested {_span_text(window_days)}",
        (Evidence("Observation", f"no {names} result {_span_text(window_days)}"),),
    )


# ---------------------------------------------------------------------------------------------
# Coded findings (Conditions)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodedFinding:
    """Met when a usable, confirmed Condition (onset on or before the as-of date, any time in the
    record: cumulative) carries the finding; only unconfirmed codes or none -> unknown."""

    id: str
    label: str
    group: str
    conditions: ValueSet
    window_days: int | None = None
    points: int | None = None
    note: str = "attribution to verify"

    def evaluate(self, ctx: Context) -> ItemResult:
        status, reason, ev = judge_coded(ctx, self.conditions, self.label, self.window_days, self.note)
        return ItemResult(self.id, self.label, self.group, status, reason, ev, self.points)


def coded_hits(ctx: Context, vs: ValueSet, window_days: int | None) -> tuple[list[facts.ConditionFact], ...]:
    """(confirmed, unconfirmed) usable Conditions in `vs`, within the window when one is given
    (a condition counts in a window when it is active on the as-of date or began inside it)."""
    start = window_start(ctx, window_days)
    confirmed: list[facts.ConditionFact] = []
    unconfirmed: list[facts.ConditionFact] = []
    for c in ctx.conditions(vs):
        if window_days is not None:
            when = c.onset or c.recorded
            if not (c.active or (when is not None and when.latest >= start)):
                continue
        (unconfirmed if c.unconfirmed else confirmed).append(c)
    return confirmed, unconfirmed


def judge_coded(
    ctx: Context, vs: ValueSet, label: str, window_days: int | None, note: str = "attribution to verify"
) -> tuple[Status, str, tuple[Evidence, ...]]:
    """A coded finding: met on a confirmed Condition (`note` says what stays to verify), else unknown."""
    if _not_searched(ctx, "Condition"):
        return (
            UNKNOWN,
            "conditions not available",
            (Evidence("Condition", "data not available (not searched or could not be read)"),),
        )
    confirmed, unconfirmed = coded_hits(ctx, vs, window_days)
    if confirmed:
        ev = tuple(c.evidence(flags=(Flag.NEEDS_REVIEW,)) for c in confirmed)
        return MET, f"coded: {confirmed[0].display} ({note})", ev[:MAX_EVIDENCE]
    if unconfirmed:
        ev = tuple(c.evidence(flags=(Flag.NEEDS_REVIEW,)) for c in unconfirmed)
        return UNKNOWN, f"{label} coded but not confirmed", ev[:MAX_EVIDENCE]
    return (
        UNKNOWN,
        f"no coded {label} {_span_text(window_days)} (absence of a code does not rule it out)",
        (Evidence("Condition", f"no {vs.name} code"),),
    )


# ---------------------------------------------------------------------------------------------
# Combining parts of one item ("A or B")
# ---------------------------------------------------------------------------------------------


def any_of(parts: Sequence[tuple[Status, str, tuple[Evidence, ...]]]) -> tuple[Status, str, tuple[Evidence, ...]]:
    """An item met by any part: met if any part is met; not_met only if every part is not_met."""
    met = [p for p in parts if p[0] is MET]
    if met:
        return MET, "; ".join(p[1] for p in met), tuple(e for p in met for e in p[2])[:MAX_EVIDENCE]
    evidence = tuple(e for p in parts for e in p[2])
    if all(p[0] is NOT_MET for p in parts):
        return NOT_MET, "; ".join(p[1] for p in parts), evidence
    return UNKNOWN, "; ".join(p[1] for p in parts), evidence


def any_measure(parts: Sequence[tuple[Status, str, tuple[Evidence, ...]]]) -> tuple[Status, str, tuple[Evidence, ...]]:
    """Alternative measures of ONE quantity (24-h protein or UPCR): met if any is met; not_met when
    at least one was measured, all measured ones are not_met and none is undecidable; a measure
    never done does not block the answer."""
    met = [p for p in parts if p[0] is MET]
    if met:
        return met[0]
    tested = [p for p in parts if not (p[0] is UNKNOWN and "not tested" in p[1])]
    if tested and all(p[0] is NOT_MET for p in tested):
        return NOT_MET, "; ".join(p[1] for p in tested), tuple(e for p in tested for e in p[2])
    return any_of(parts)
