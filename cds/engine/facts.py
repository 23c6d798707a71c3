"""Facts read from the record: usable conditions, lab values in criterion units, drug exposures.

Each fact keeps the resource reference and the values as used, so every criterion result can name
its evidence. Non-usable records (entered-in-error, refuted, cancelled, not-taken, not-done,
preliminary, future-dated) never become facts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cds.engine import observations, routes, units
from cds.engine import sig as sig_text
from cds.engine.definition import (
    RXNORM,
    Analyte,
    CodeMatch,
    Drug,
    Product,
    RouteClass,
    ValueSet,
)
from cds.engine.model import Evidence, Flag
from cds.engine.record import PatientRecord
from cds.engine.timeutil import Span, span
from cds.fhirjson import observation_key

# ---------------------------------------------------------------------------------------------
# Intervals: a value with a comparator ("<10") is a range; tests on it may be undecidable.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interval:
    lo: float
    hi: float
    lo_incl: bool = True
    hi_incl: bool = True

    @staticmethod
    def point(v: float) -> Interval:
        return Interval(v, v)

    @staticmethod
    def from_comparator(v: float, comparator: str | None) -> Interval:
        match comparator:
            case "<":
                return Interval(-math.inf, v, False, False)
            case "<=":
                return Interval(-math.inf, v, False, True)
            case ">":
                return Interval(v, math.inf, False, False)
            case ">=":
                return Interval(v, math.inf, True, False)
            case _:
                return Interval.point(v)

    def scaled(self, factor: float) -> Interval:
        assert factor > 0
        return Interval(self.lo * factor, self.hi * factor, self.lo_incl, self.hi_incl)

    def test(self, op: str, t: float) -> bool | None:
        """Is `x op t` true for every x in the interval (True), for none (False), or undecided (None)?"""
        lo, hi = self.lo, self.hi
        if op == ">":
            if lo > t or (lo == t and not self.lo_incl):
                return True
            return False if hi <= t else None
        if op == ">=":
            if lo >= t:
                return True
            return False if hi < t or (hi == t and not self.hi_incl) else None
        if op == "<":
            if hi < t or (hi == t and not self.hi_incl):
                return True
            return False if lo >= t else None
        if op == "<=":
            if hi <= t:
                return True
            return False if lo > t or (lo == t and not self.lo_incl) else None
        raise ValueError(op)

    def text(self) -> str:
        if self.lo == self.hi:
            return fmt(self.lo)
        if self.lo == -math.inf:
            return ("<=" if self.hi_incl else "<") + fmt(self.hi)
        if self.hi == math.inf:
            return (">=" if self.lo_incl else ">") + fmt(self.lo)
        return f"{fmt(self.lo)}-{fmt(self.hi)}"


def fmt(x: float) -> str:
    """Numbers as evidence text: up to 4 significant decimals, no trailing zeros."""
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.4g}" if abs(x) < 1 else f"{round(x, 3):g}"


# ---------------------------------------------------------------------------------------------
# Conditions and procedures
# ---------------------------------------------------------------------------------------------

_CONDITION_UNUSABLE_VERIFICATION = frozenset({"refuted", "entered-in-error"})
# Not (yet) established: never proves an inclusion, and turns an exclusion into review.
CONDITION_UNCONFIRMED_VERIFICATION = frozenset({"unconfirmed", "provisional", "differential"})
_ACTIVE_CLINICAL = frozenset({"active", "recurrence", "relapse"})


def _codes(concept: Any) -> set[str]:
    return {c.code for c in (getattr(concept, "coding", None) or []) if c.code}


@dataclass(frozen=True, slots=True)
class ConditionFact:
    ref: str
    match: CodeMatch
    display: str
    onset: Span | None
    abatement: Span | None
    recorded: Span | None
    clinical_status: str | None
    active: bool  # clinically active on the as-of date
    verification: str | None = None
    unconfirmed: bool = False  # verificationStatus unconfirmed / provisional / differential

    def when(self) -> Span | None:
        return self.onset or self.recorded

    def evidence(self, description: str | None = None, flags: tuple[Flag, ...] = ()) -> Evidence:
        d = self.when()
        status = self.clinical_status or "no clinical status"
        if self.unconfirmed:
            status += f", {self.verification} (not confirmed)"
            flags = tuple(dict.fromkeys((*flags, Flag.NEEDS_REVIEW)))
        if self.abatement:
            status += f", abated {self.abatement.iso()}"
        return Evidence(
            reference=self.ref,
            description=description or f"{self.display} ({self.match}; {status})",
            date=d.iso() if d else None,
            flags=flags,
        )


def _concept_display(concept: Any) -> str:
    return "(no code)" if concept is None else observations.concept_text(concept)


_YEAR, _MONTH = 365.25, 30.4375
_AGE_UNITS_DAYS = {
    **dict.fromkeys(("a", "yr", "year", "years"), _YEAR),
    **dict.fromkeys(("mo", "month", "months"), _MONTH),
    **dict.fromkeys(("wk", "week", "weeks"), 7.0),
    **dict.fromkeys(("d", "day", "days"), 1.0),
}


def _age_bounds(age: Any, birth: Span) -> Span | None:
    """The days on which the patient had this Age (years: the whole year of age)."""
    if age is None or age.value is None:
        return None
    unit = (age.code or age.unit or "a").strip()
    if unit not in _AGE_UNITS_DAYS:
        return None
    value = float(age.value)
    if _AGE_UNITS_DAYS[unit] == 365.25:
        years = int(value)
        try:
            return Span(
                birth.earliest.replace(year=birth.earliest.year + years),
                birth.latest.replace(year=birth.latest.year + years + 1) - timedelta(days=1),
            )
        except ValueError:  # 29 February
            return None
    days = value * _AGE_UNITS_DAYS[unit]
    return Span(birth.earliest + timedelta(days=int(days)), birth.latest + timedelta(days=math.ceil(days) + 1))


def _onset_span(cond: Any, birth: Span | None) -> Span | None:
    """Every onset[x] form: dateTime, Period (start, else end as an upper bound), Age, Range of ages,
    and a string holding a date ("2019", "2019-03"); other strings ("childhood") are not dates."""
    if cond.onsetDateTime is not None:
        return span(cond.onsetDateTime)
    if cond.onsetPeriod is not None:
        if cond.onsetPeriod.start is not None:
            return span(cond.onsetPeriod.start)
        if cond.onsetPeriod.end is not None:
            end = span(cond.onsetPeriod.end)
            return Span(date.min, end.latest) if end is not None else None
        return None
    if cond.onsetAge is not None and birth is not None:
        return _age_bounds(cond.onsetAge, birth)
    if cond.onsetRange is not None and birth is not None:
        low = _age_bounds(cond.onsetRange.low, birth) if cond.onsetRange.low is not None else None
        high = _age_bounds(cond.onsetRange.high, birth) if cond.onsetRange.high is not None else None
        if low is not None and high is not None and low.earliest <= high.latest:
            return Span(low.earliest, high.latest)
        if high is not None:
            return Span(birth.earliest, high.latest)
        return None
    if cond.onsetString:
        text = str(cond.onsetString).strip()
        if re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?)?", text):
            return span(text)
    return None


def _abatement_span(cond: Any) -> Span | None:
    if cond.abatementDateTime is not None:
        return span(cond.abatementDateTime)
    if cond.abatementPeriod is not None:
        return span(cond.abatementPeriod.end or cond.abatementPeriod.start)
    return None


def birth_span(record: PatientRecord) -> Span | None:
    p = record.patient
    return span(p.birthDate) if p is not None and p.birthDate is not None else None


def conditions(record: PatientRecord, vs: ValueSet, as_of: date) -> list[ConditionFact]:
    """Usable Conditions matching `vs`: not refuted / entered-in-error, not starting after as_of."""
    out: list[ConditionFact] = []
    birth = birth_span(record)
    for c in record.of("Condition"):
        verification = _codes(c.verificationStatus)
        if verification & _CONDITION_UNUSABLE_VERIFICATION:
            continue
        match = vs.match(c.code)
        if match is None:
            continue
        onset = _onset_span(c, birth)
        recorded = span(c.recordedDate)
        if onset is not None and onset.earliest > as_of:
            continue
        if onset is None and recorded is not None and recorded.earliest > as_of:
            continue
        abatement = _abatement_span(c)
        clinical = next(iter(sorted(_codes(c.clinicalStatus))), None)
        if clinical is not None:
            active = clinical in _ACTIVE_CLINICAL
        else:
            active = c.abatementDateTime is None and c.abatementPeriod is None and not c.abatementString
        if active and abatement is not None and abatement.latest <= as_of:
            active = False
        out.append(
            ConditionFact(
                ref=f"Condition/{c.id}",
                match=match,
                display=_concept_display(c.code),
                onset=onset,
                abatement=abatement,
                recorded=recorded,
                clinical_status=clinical,
                active=active,
                verification=next(iter(sorted(verification)), None),
                unconfirmed=bool(verification & CONDITION_UNCONFIRMED_VERIFICATION),
            )
        )
    return out


_PROCEDURE_UNUSABLE = frozenset({"entered-in-error", "not-done", "preparation", "unknown"})


@dataclass(frozen=True, slots=True)
class ProcedureFact:
    ref: str
    match: CodeMatch
    display: str
    when: Span | None

    def evidence(self, flags: tuple[Flag, ...] = ()) -> Evidence:
        return Evidence(
            reference=self.ref,
            description=f"{self.display} ({self.match})",
            date=self.when.iso() if self.when else None,
            flags=flags,
        )


def procedures(record: PatientRecord, vs: ValueSet, as_of: date) -> list[ProcedureFact]:
    out: list[ProcedureFact] = []
    for p in record.of("Procedure"):
        if p.status in _PROCEDURE_UNUSABLE:
            continue
        match = vs.match(p.code)
        if match is None:
            continue
        when: Span | None = None
        if p.performedDateTime is not None:
            when = span(p.performedDateTime)
        elif p.performedPeriod is not None:
            when = span(p.performedPeriod.start or p.performedPeriod.end)
        if when is not None and when.earliest > as_of:
            continue
        out.append(ProcedureFact(f"Procedure/{p.id}", match, _concept_display(p.code), when))
    return out


# ---------------------------------------------------------------------------------------------
# Laboratory values
# ---------------------------------------------------------------------------------------------

_OBS_USABLE = frozenset({"final", "amended", "corrected"})
#: A DiagnosticReport in these statuses withdraws the results it lists (whatever their own status).
REPORT_WITHDRAWN = frozenset({"entered-in-error"})
_MIN_INSTANT = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class LabValue:
    ref: str
    analyte: Analyte
    when: date
    value: Interval | None  # in analyte.unit; None when unusable (see problem)
    original: str
    uln: float | None = None
    uln_assumed: bool = False
    lln: float | None = None
    lln_assumed: bool = False
    problem: str | None = None
    coded: tuple[str, ...] = ()  # codes of valueCodeableConcept and interpretation
    qualitative: str | None = None  # "positive" / "negative" for qualitative results
    instant: datetime = _MIN_INSTANT  # full time of the result (UTC), for "latest"; date-only = start of day
    report: str | None = None  # the DiagnosticReport that lists this result
    component: str | None = None  # the Observation.component the value came from (panels)
    unit_assumed: str | None = None  # unit read from the analyte's implied unit (value had none)
    interpretation: tuple[str, ...] = ()

    @property
    def order_key(self) -> tuple[date, datetime]:
        return (self.when, self.instant)

    def evidence(self, description: str, flags: tuple[Flag, ...] = ()) -> Evidence:
        fl = list(flags)
        if self.value is not None and self.value.lo != self.value.hi:
            fl.append(Flag.COMPARATOR)
        notes: list[str] = []
        if self.component:
            notes.append(f"panel component {self.component}")
        if self.report:
            notes.append(f"reported in {self.report}")
        flags_ = [c for c in self.interpretation if c != "N"]
        if self.value is not None and flags_:
            notes.append("lab flag " + ", ".join(f"{c} ({observations.INTERPRETATION_TEXT.get(c, c)})" for c in flags_))
        if self.unit_assumed:
            notes.append(f"no unit stated: read as {self.unit_assumed}")
            fl.append(Flag.DERIVED)
        if notes:
            description = f"{description} ({'; '.join(notes)})"
        return Evidence(
            reference=self.ref,
            description=description,
            value=self.value.text() if self.value is not None else None,
            unit=self.analyte.unit if self.value is not None else None,
            date=self.when.isoformat(),
            original=self.original,
            flags=tuple(dict.fromkeys(fl)),
        )


def _instant_of(value: Any) -> tuple[date, datetime] | None:
    """(local calendar day, UTC instant) of a FHIR date/dateTime/instant; a date is its day's start."""
    if value is None:
        return None
    if isinstance(value, datetime):
        utc = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return value.date(), utc
    s = span(value)
    if s is None:
        return None
    return s.latest, datetime(s.latest.year, s.latest.month, s.latest.day, tzinfo=UTC)


def obs_time(o: Any) -> tuple[date, datetime] | None:
    """When a result applies: effective[x] (a period's end), else `issued`."""
    for v in (o.effectiveDateTime, o.effectiveInstant):
        if v is not None:
            return _instant_of(v)
    if o.effectivePeriod is not None:
        return _instant_of(o.effectivePeriod.end or o.effectivePeriod.start)
    if o.issued is not None:
        return _instant_of(o.issued)
    return None


def obs_date(o: Any) -> date | None:
    t = obs_time(o)
    return t[0] if t else None


@dataclass(frozen=True, slots=True)
class ReportLink:
    ref: str  # DiagnosticReport/<id>
    status: str | None
    time: tuple[date, datetime] | None


def report_index(record: PatientRecord) -> dict[str, ReportLink]:
    """Observation reference -> the DiagnosticReport whose `result` lists it (built once per record)."""
    cached: dict[str, ReportLink] | None = record.cache.get("report-index")
    if cached is not None:
        return cached
    index: dict[str, ReportLink] = {}
    for dr in record.of("DiagnosticReport"):
        t = None
        if dr.effectiveDateTime is not None:
            t = _instant_of(dr.effectiveDateTime)
        elif dr.effectivePeriod is not None:
            t = _instant_of(dr.effectivePeriod.end or dr.effectivePeriod.start)
        elif dr.issued is not None:
            t = _instant_of(dr.issued)
        link = ReportLink(f"DiagnosticReport/{dr.id}", dr.status, t)
        for r in dr.result or []:
            key = observation_key(r.reference or "")
            # a withdrawn report wins over any other listing of the same result
            if key is not None and (key not in index or link.status in REPORT_WITHDRAWN):
                index[key] = link
    record.cache["report-index"] = index
    return index


def quantity_text(q: Any) -> str:
    return observations.quantity_text(q)


def to_unit(q: Any, analyte: Analyte) -> tuple[float | None, str | None]:
    """Value of an R4B Quantity in the analyte's unit, or (None, problem)."""
    if q is None or q.value is None:
        return None, "no numeric value"
    code = units.normalise_code(q.code, q.unit, q.system)
    if code is None:
        return None, "no unit"
    return _convert(float(q.value), code, analyte)


def _convert(value: float, code: str, analyte: Analyte) -> tuple[float | None, str | None]:
    code = analyte.unit_equivalents.get(code, code)
    v = units.convert(value, code, analyte.unit, analyte.molar_mass)
    if v is None:
        return None, f"unit {code!r} cannot be converted to {analyte.unit}"
    return v, None


def _bound(bound: tuple[float, str | None] | None, value_unit: str | None, analyte: Analyte) -> float | None:
    """A reference bound in the analyte's unit; a bound stated without a unit has the value's unit."""
    if bound is None:
        return None
    number, unit = bound
    unit = unit or value_unit
    if unit is None:
        return None
    v, _ = _convert(number, unit, analyte)
    return v


def _matching_elements(o: Any, analyte: Analyte) -> list[tuple[Any, str | None]]:
    """The Observation itself when its code matches, else its matching components (panels)."""
    if analyte.codes.match(o.code) is not None:
        return [(o, None)]
    out: list[tuple[Any, str | None]] = []
    for comp in o.component or []:
        m = analyte.codes.match(comp.code)
        if m is not None:
            out.append((comp, str(m)))
    return out


def _lab_value(
    ref: str,
    analyte: Analyte,
    element: Any,
    when: date,
    instant: datetime,
    report: str | None,
    component: str | None,
) -> LabValue:
    raw = observations.read_value(element)
    interp = observations.interpretation_codes(element)
    coded = tuple(sorted(_codes(element.valueCodeableConcept) | set(interp)))
    qualitative = raw.qualitative or (
        observations.qualitative_from_interpretation(interp) if raw.number is None else None
    )
    common: dict[str, Any] = {
        "ref": ref,
        "analyte": analyte,
        "when": when,
        "original": raw.text,
        "coded": coded,
        "qualitative": qualitative,
        "instant": instant,
        "report": report,
        "component": component,
        "interpretation": interp,
    }
    if raw.number is None:
        problem = raw.problem
        if problem is None or (qualitative and problem != "data absent"):
            problem = f"qualitative result ({qualitative or 'not understood'}), not a number"
        return LabValue(value=None, problem=problem, **common)
    unit = raw.unit
    unit_assumed: str | None = None
    if unit is None:
        if analyte.implied_unit is None:
            return LabValue(value=None, problem="no unit", **common)
        unit = unit_assumed = analyte.implied_unit
    v, problem = _convert(raw.number, unit, analyte)
    bounds = observations.reference_bounds(element)
    uln = _bound(bounds.high, unit, analyte) if bounds else None
    lln = _bound(bounds.low, unit, analyte) if bounds else None
    return LabValue(
        value=Interval.from_comparator(v, raw.comparator) if v is not None else None,
        uln=uln if uln is not None else analyte.default_uln,
        uln_assumed=uln is None and analyte.default_uln is not None,
        lln=lln if lln is not None else analyte.default_lln,
        lln_assumed=lln is None and analyte.default_lln is not None,
        problem=problem,
        unit_assumed=unit_assumed,
        **common,
    )


def lab_values(
    record: PatientRecord,
    analyte: Analyte,
    as_of: date,
    window_days: int,
    candidates: list[Any] | None = None,
) -> list[LabValue]:
    """Usable results of `analyte` in [as_of - window, as_of], most recent (full instant) first.

    A result is an Observation whose code matches, or a matching `component` of a panel
    Observation. Usable statuses: final, amended, corrected. An Observation listed by a
    DiagnosticReport names the report in its evidence; a report entered in error withdraws its
    results; an Observation with no date of its own takes the report's.

    `candidates`: a subset of the record's Observations, in record order, that holds every one
    matching the analyte's codes (an index lookup, components included); default: all of them.
    """
    start = as_of - timedelta(days=window_days)
    reports = report_index(record) if record.of("DiagnosticReport") else {}
    out: list[LabValue] = []
    for o in record.of("Observation") if candidates is None else candidates:
        if o.status not in _OBS_USABLE:
            continue
        elements = _matching_elements(o, analyte)
        if not elements:
            continue
        ref = f"Observation/{o.id}"
        link = reports.get(ref)
        if link is not None and link.status in REPORT_WITHDRAWN:
            continue
        t = obs_time(o) or (link.time if link is not None else None)
        if t is None:
            continue
        when, instant = t
        if when > as_of or when < start:
            continue
        for element, component in elements:
            out.append(_lab_value(ref, analyte, element, when, instant, link.ref if link else None, component))
    # ties (same instant) by reference, so the record's order never changes which result is shown
    out.sort(key=lambda lv: (lv.order_key, lv.ref, lv.component or ""), reverse=True)
    return out


# ---------------------------------------------------------------------------------------------
# Medication exposures
# ---------------------------------------------------------------------------------------------

_MS_IGNORED = frozenset({"entered-in-error", "not-taken", "intended"})
_MS_ONGOING = frozenset({"active", "on-hold"})
_MR_IGNORED = frozenset({"entered-in-error", "cancelled", "draft"})
_MR_ONGOING = frozenset({"active", "on-hold"})
_MA_IGNORED = frozenset({"entered-in-error", "not-done"})
# A dispense is evidence of use only once handed over: not cancelled, declined, stopped or pending.
_MD_IGNORED = frozenset({"entered-in-error", "cancelled", "declined", "stopped", "preparation", "on-hold"})

_PERIOD_PER_DAY = {
    "s": 86400.0,
    "min": 1440.0,
    "h": 24.0,
    "d": 1.0,
    "wk": 1 / 7,
    "mo": 1 / 30.4375,
    "a": 1 / 365.25,
}
# HL7 v3 GTSAbbreviation codes in the R4 timing-abbreviation value set. WK and MO are left out
# (unverified here): a dose given only as WK/MO is unknown.
_TIMING_CODE_PER_DAY = {
    "QD": 1.0, "AM": 1.0, "PM": 1.0, "BED": 1.0, "BID": 2.0, "TID": 3.0, "QID": 4.0, "QOD": 0.5,
    "Q1H": 24.0, "Q2H": 12.0, "Q3H": 8.0, "Q4H": 6.0, "Q6H": 4.0, "Q8H": 3.0,
}  # fmt: skip

_COUNT_UNITS = frozenset({"{tbl}", "{tablet}", "{tablets}", "{capsule}", "{cap}", "{caps}", "1", "{count}", "{dose}"})

_STRENGTH_RE = re.compile(r"(\d+(?:\.\d+)?)\s*MG(?!\s*/)", re.I)
_STRENGTH_PER_ML_RE = re.compile(r"(\d+(?:\.\d+)?)\s*MG\s*/\s*ML", re.I)


def classify_route(*texts: str | None) -> RouteClass:
    """Route named by free text (see `cds.engine.routes`)."""
    return routes.classify_text(*texts)


@dataclass(frozen=True, slots=True)
class Exposure:
    ref: str
    drug: Drug
    match: CodeMatch
    label: str
    route: RouteClass
    route_assumed: bool
    start: date | None  # known start
    anchor: date  # a date on which the drug is known to be taken (start, or the recorded date)
    end: date | None  # known end
    ongoing: bool  # still taken on the as-of date
    daily_mg: tuple[float, float] | None  # (low, high) mg/day of the ingredient; None if not computable
    dose_problem: str | None
    as_needed: bool
    flags: tuple[Flag, ...] = ()
    reason_codes: tuple[Any, ...] = ()  # CodeableConcepts from reasonCode
    reason_refs: tuple[str, ...] = ()  # references from reasonReference
    frequency: float | None = None  # administrations per day (first dosage line), when known

    def overlaps(self, window_start: date, as_of: date, max_undated_course_days: int) -> bool | None:
        """Was the drug taken at some point in [window_start, as_of]? None = cannot tell."""
        if self.anchor > as_of:
            return False
        if self.ongoing:
            return True
        if self.end is not None:
            return self.end >= window_start
        if self.anchor >= window_start:
            return True
        if self.anchor + timedelta(days=max_undated_course_days) < window_start:
            return False
        return None

    def dose_text(self) -> str:
        if self.daily_mg is None:
            return f"dose not computable ({self.dose_problem})"
        lo, hi = self.daily_mg
        return f"{fmt(lo)} mg/day" if lo == hi else f"{fmt(lo)}-{fmt(hi)} mg/day"

    def evidence(self, extra: str = "", flags: tuple[Flag, ...] = ()) -> Evidence:
        period = (self.start or self.anchor).isoformat()
        if self.ongoing:
            period += " to present"
        elif self.end is not None:
            period += f" to {self.end.isoformat()}"
        else:
            period += " to an unrecorded stop date"
        desc = f"{self.label} ({self.match}; route {self.route.value}; {period})"
        if extra:
            desc += f"; {extra}"
        value = unit = None
        if self.daily_mg is not None and self.daily_mg[0] == self.daily_mg[1]:
            value, unit = fmt(self.daily_mg[0]), "mg/d"
        return Evidence(
            reference=self.ref,
            description=desc,
            value=value,
            unit=unit,
            date=(self.start or self.anchor).isoformat(),
            flags=tuple(dict.fromkeys((*self.flags, *flags))),
        )


def _medication_concept(res: Any, record: PatientRecord) -> tuple[Any, Any | None]:
    """The drug's CodeableConcept and the Medication resource when referenced."""
    if res.medicationCodeableConcept is not None:
        return res.medicationCodeableConcept, None
    ref = res.medicationReference.reference if res.medicationReference is not None else None
    if not ref:
        return None, None
    if ref.startswith("#"):
        for c in res.contained or []:
            if c.get_resource_type() == "Medication" and f"#{c.id}" == ref:
                return c.code, c
        return None, None
    med = record.medications.get(ref) or record.medications.get("Medication/" + ref.rsplit("/", 1)[-1])
    return (med.code, med) if med is not None else (None, None)


def _product_for(drug: Drug, concept: Any) -> Product | None:
    for c in concept.coding or []:
        if c.system == RXNORM and c.code and (p := drug.product(c.code)) is not None:
            return p
    return None


def _strength_mg(drug: Drug, concept: Any, medication: Any | None, per_ml: bool) -> tuple[float | None, bool]:
    """Strength of one unit (tablet, or mL when per_ml), and whether it was derived from text."""
    product = _product_for(drug, concept)
    if product is not None and product.strength_mg is not None and product.per_ml == per_ml:
        return product.strength_mg, False
    if medication is not None:
        for ing in medication.ingredient or []:
            st = ing.strength
            if st is None or st.numerator is None or st.denominator is None:
                continue
            num = st.numerator
            code = units.normalise_code(num.code, num.unit, num.system)
            mg = units.convert(num.value, code, "mg") if code and num.value is not None else None
            den_code = units.normalise_code(st.denominator.code, st.denominator.unit, st.denominator.system)
            den_value = float(st.denominator.value or 1)
            if mg is None or den_value <= 0:
                continue
            if per_ml and den_code == "mL":
                return mg / den_value, False
            if not per_ml and den_code != "mL":
                return mg / den_value, False
    texts = [concept.text, *[c.display for c in concept.coding or []]]
    pattern = _STRENGTH_PER_ML_RE if per_ml else _STRENGTH_RE
    for t in texts:
        if t and (m := pattern.search(t)):
            return float(m.group(1)), True
    return None, False


def _per_day(dosage: Any, single_administration: bool) -> tuple[tuple[float, float] | None, str | None]:
    timing = dosage.timing
    if timing is None:
        if single_administration:
            return (1.0, 1.0), None
        return None, "no timing"
    rep = timing.repeat
    if rep is not None:
        if rep.dayOfWeek:
            n = len(rep.dayOfWeek) * ((rep.frequency or 1) if rep.periodUnit in (None, "d") else 1)
            return (n / 7, n / 7), None
        if rep.period is not None and rep.periodUnit in _PERIOD_PER_DAY and float(rep.period) > 0:
            f_lo = float(rep.frequency or 1)
            f_hi = float(rep.frequencyMax or f_lo)
            unit = _PERIOD_PER_DAY[rep.periodUnit]
            p_lo = float(rep.period)
            p_hi = float(rep.periodMax or p_lo)
            return (f_lo / p_hi * unit, f_hi / p_lo * unit), None
        if rep.timeOfDay or rep.when:
            n = len(rep.timeOfDay or []) or len(rep.when or [])
            return (float(n), float(n)), None
        if rep.frequency is not None and rep.period is None:
            return None, "frequency without period"
    if timing.code is not None:
        for code in sorted(_codes(timing.code)):
            if code in _TIMING_CODE_PER_DAY:
                f = _TIMING_CODE_PER_DAY[code]
                return (f, f), None
        return None, "unsupported timing code"
    if single_administration:
        return (1.0, 1.0), None
    return None, "timing without frequency"


def _per_administration_mg(
    drug: Drug, concept: Any, medication: Any | None, dose: Any
) -> tuple[tuple[float, float] | None, str | None, bool]:
    """(low, high) mg per administration, problem, derived-from-text flag."""
    quantities: list[Any]
    if dose is None:
        return None, "no dose", False
    quantities = [dose.low, dose.high] if hasattr(dose, "low") else [dose, dose]
    if any(q is None or q.value is None for q in quantities):
        return None, "incomplete dose", False
    out: list[float] = []
    derived = False
    for q in quantities:
        code = units.normalise_code(q.code, q.unit, q.system)
        value = float(q.value)
        if code is None or code in _COUNT_UNITS:
            strength, from_text = _strength_mg(drug, concept, medication, per_ml=False)
            if strength is None:
                return None, "dose in units without a known strength", False
            out.append(value * strength)
            derived = derived or from_text
            continue
        if code == "mL":
            strength, from_text = _strength_mg(drug, concept, medication, per_ml=True)
            if strength is None:
                return None, "dose in mL without a known concentration", False
            out.append(value * strength)
            derived = derived or from_text
            continue
        mg = units.convert(value, code, "mg")
        if mg is None:
            return None, f"dose unit {code!r} is not a mass", False
        out.append(mg)
    return (out[0], out[1]), None, derived


def _dose_quantity(dosage: Any) -> Any:
    """Dosage.doseAndRate: the entry typed 'ordered' first, else the first one."""
    entries = list(dosage.doseAndRate or [])
    entries.sort(key=lambda e: 0 if "ordered" in _codes(e.type) else 1)
    for e in entries:
        if e.doseQuantity is not None:
            return e.doseQuantity
        if e.doseRange is not None:
            return e.doseRange
    return None


def _sig_dose(
    drug: Drug, concept: Any, medication: Any | None, parsed: sig_text.Sig | None
) -> tuple[tuple[float, float] | None, str | None]:
    """Per-administration mg from a parsed sig, or (None, problem)."""
    if parsed is None:
        return None, "no dose"
    if parsed.problem:
        return None, f"sig not read: {parsed.problem}"
    if parsed.mg_per_admin is not None:
        return (parsed.mg_per_admin, parsed.mg_per_admin), None
    if parsed.count_per_admin is not None:
        strength, _ = _strength_mg(drug, concept, medication, per_ml=False)
        if strength is None:
            return None, "dose in units without a known strength"
        return (parsed.count_per_admin * strength, parsed.count_per_admin * strength), None
    return None, "no dose"


def _daily_dose(
    drug: Drug, concept: Any, medication: Any | None, dosages: list[Any], single_administration: bool
) -> tuple[tuple[float, float] | None, str | None, bool, bool, RouteClass, float | None]:
    """Sum over dosage lines: (daily mg range, problem, as_needed, derived, route from dosage,
    administrations per day of the first line). The sig text (Dosage.text) fills a missing
    structured dose or timing only when it is unambiguous (`cds.engine.sig`); evidence is DERIVED."""
    if not dosages:
        return None, "no dosage instructions", False, False, RouteClass.UNKNOWN, None
    lo = hi = 0.0
    as_needed = False
    derived = False
    route = RouteClass.UNKNOWN
    frequency: float | None = None
    for d in dosages:
        if d.asNeededBoolean or d.asNeededCodeableConcept is not None:
            as_needed = True
        quantity = _dose_quantity(d)
        parsed = sig_text.parse(d.text) if (quantity is None or d.timing is None) else None
        if parsed is not None and parsed.as_needed:
            as_needed = True
        if route is RouteClass.UNKNOWN:
            if d.route is not None:
                route = routes.classify(d.route)
            elif parsed is not None:
                route = parsed.route
        if quantity is not None:
            per_admin, problem, from_text = _per_administration_mg(drug, concept, medication, quantity)
        else:
            per_admin, problem = _sig_dose(drug, concept, medication, parsed)
            from_text = per_admin is not None
        if per_admin is None:
            return None, problem, as_needed, derived, route, frequency
        if d.timing is None and not single_administration and parsed is not None and parsed.per_day is not None:
            if parsed.problem:
                return None, f"sig not read: {parsed.problem}", as_needed, derived, route, frequency
            per_day: tuple[float, float] | None = (parsed.per_day, parsed.per_day)
            from_text = True
        else:
            per_day, problem = _per_day(d, single_administration)
        if per_day is None:
            return None, problem, as_needed, derived, route, frequency
        if frequency is None:
            frequency = per_day[0]
        lo += per_admin[0] * per_day[0]
        hi += per_admin[1] * per_day[1]
        derived = derived or from_text
    return (units.tidy(lo), units.tidy(hi)), None, as_needed, derived, route, frequency


def _admin_dose(
    drug: Drug, concept: Any, medication: Any | None, dosage: Any
) -> tuple[tuple[float, float] | None, str | None, bool, RouteClass]:
    if dosage is None:
        return None, "no dosage", False, RouteClass.UNKNOWN
    route = RouteClass.UNKNOWN
    parsed = sig_text.parse(dosage.text) if dosage.text else None
    if dosage.route is not None:
        route = routes.classify(dosage.route)
    elif parsed is not None:
        route = parsed.route
    if dosage.dose is None and parsed is not None:
        per_admin, problem = _sig_dose(drug, concept, medication, parsed)
        return per_admin, problem, per_admin is not None, route
    per_admin, problem, derived = _per_administration_mg(drug, concept, medication, dosage.dose)
    return per_admin, problem, derived, route


def exposures(record: PatientRecord, drugs: tuple[Drug, ...], as_of: date) -> list[Exposure]:
    """Usable exposures to any of `drugs` from MedicationStatement/Request/Administration."""
    out: list[Exposure] = []
    for rtype in ("MedicationStatement", "MedicationRequest", "MedicationAdministration", "MedicationDispense"):
        for res in record.of(rtype):
            exp = _exposure(record, rtype, res, drugs, as_of)
            if exp is not None:
                out.append(exp)
    return out


def _exposure(record: PatientRecord, rtype: str, res: Any, drugs: tuple[Drug, ...], as_of: date) -> Exposure | None:
    status = res.status
    ignored = {
        "MedicationStatement": _MS_IGNORED,
        "MedicationRequest": _MR_IGNORED,
        "MedicationDispense": _MD_IGNORED,
    }.get(rtype, _MA_IGNORED)
    if status in ignored:
        return None
    concept, medication = _medication_concept(res, record)
    if concept is None:
        return None
    drug = match = None
    for d in drugs:
        if (m := d.value_set.match(concept)) is not None:
            drug, match = d, m
            break
    if (drug is None or match is None) and medication is not None:
        # a Medication coded only by its ingredients (or by a local code with RxNorm ingredients)
        for ing in medication.ingredient or []:
            item = ing.itemCodeableConcept
            for d in drugs:
                if item is not None and (m := d.value_set.match(item)) is not None:
                    drug, match = d, m
                    break
            if drug is not None:
                break
    if drug is None or match is None:
        return None
    label = _concept_display(concept)
    start: date | None = None
    anchor: date | None = None
    end: date | None = None
    ongoing = False
    flags: list[Flag] = []
    if rtype == "MedicationStatement":
        if res.effectivePeriod is not None:
            s = span(res.effectivePeriod.start)
            e = span(res.effectivePeriod.end)
            start = s.earliest if s else None
            end = e.latest if e else None
        elif res.effectiveDateTime is not None:
            s = span(res.effectiveDateTime)
            anchor = s.latest if s else None
        if anchor is None:
            da = span(res.dateAsserted)
            anchor = start or (da.latest if da else None)
        ongoing = status in _MS_ONGOING
        daily, problem, as_needed, derived, d_route, frequency = _daily_dose(
            drug, concept, medication, list(res.dosage or []), False
        )
    elif rtype == "MedicationRequest":
        dosages = list(res.dosageInstruction or [])
        bounds = next((d.timing.repeat for d in dosages if d.timing and d.timing.repeat), None)
        validity = res.dispenseRequest.validityPeriod if res.dispenseRequest else None
        s_val = (
            (bounds.boundsPeriod.start if bounds and bounds.boundsPeriod else None)
            or (validity.start if validity else None)
            or res.authoredOn
        )
        s = span(s_val)
        start = s.earliest if s else None
        e_val = (bounds.boundsPeriod.end if bounds and bounds.boundsPeriod else None) or (
            validity.end if validity else None
        )
        e = span(e_val)
        end = e.latest if e else None
        if end is None and start is not None and bounds is not None and bounds.boundsDuration is not None:
            bd = bounds.boundsDuration
            if bd.value is not None and (bd.code or bd.unit) in ("d", "day", "days"):
                end = start + timedelta(days=int(bd.value))
        ongoing = status in _MR_ONGOING
        daily, problem, as_needed, derived, d_route, frequency = _daily_dose(drug, concept, medication, dosages, False)
    elif rtype == "MedicationDispense":  # a fill: taken from hand-over for daysSupply days
        handed = span(res.whenHandedOver or res.whenPrepared)
        start = handed.earliest if handed else None
        supply = res.daysSupply
        supply_days = (
            float(supply.value)
            if supply is not None
            and supply.value is not None
            and (supply.code or supply.unit or "d") in ("d", "day", "days", "D")
            else None
        )
        if start is not None and supply_days is not None and supply_days >= 1:
            end = start + timedelta(days=int(supply_days) - 1)
        ongoing = False
        daily, problem, as_needed, derived, d_route, frequency = _daily_dose(
            drug, concept, medication, list(res.dosageInstruction or []), False
        )
    else:  # MedicationAdministration: a dose given on a day (or over a period)
        if res.effectiveDateTime is not None:
            s = span(res.effectiveDateTime)
            start = end = s.latest if s else None
        elif res.effectivePeriod is not None:
            s = span(res.effectivePeriod.start)
            e = span(res.effectivePeriod.end or res.effectivePeriod.start)
            start = s.earliest if s else None
            end = e.latest if e else None
        ongoing = status == "in-progress"
        per_admin, problem, derived, d_route = _admin_dose(drug, concept, medication, res.dosage)
        daily = per_admin
        as_needed = False
        frequency = None
    anchor = anchor or start
    if anchor is None:
        return None  # no date at all: cannot place the exposure in time
    if anchor > as_of:
        return None
    if ongoing and end is not None and end < as_of:
        ongoing = False
    if derived:
        flags.append(Flag.DERIVED)
    product = _product_for(drug, concept)
    route = d_route
    route_assumed = False
    if route is RouteClass.UNKNOWN:
        route = (
            product.route
            if product is not None
            else classify_route(
                *([concept.text] + [c.display for c in concept.coding or []]),
                medication.form.text if medication is not None and medication.form is not None else None,
            )
        )
        route_assumed = product is None
    return Exposure(
        ref=f"{rtype}/{res.id}",
        drug=drug,
        match=match,
        label=label,
        route=route,
        route_assumed=route_assumed,
        start=start,
        anchor=anchor,
        end=end,
        ongoing=ongoing,
        daily_mg=daily,
        dose_problem=problem,
        as_needed=as_needed,
        flags=tuple(flags),
        reason_codes=tuple(getattr(res, "reasonCode", None) or []),
        reason_refs=tuple(r.reference for r in (getattr(res, "reasonReference", None) or []) if r.reference),
        frequency=frequency,
    )


def medication_activity_dates(record: PatientRecord) -> list[date]:
    """Dates of any medication activity (any drug), to judge whether the med list is current."""
    out: list[date] = []
    for ms in record.of("MedicationStatement"):
        if ms.status in _MS_IGNORED:
            continue
        if ms.status in _MS_ONGOING:
            out.append(date.max)
        for v in (
            ms.dateAsserted,
            ms.effectiveDateTime,
            ms.effectivePeriod.end if ms.effectivePeriod else None,
            ms.effectivePeriod.start if ms.effectivePeriod else None,
        ):
            if (s := span(v)) is not None:
                out.append(s.latest)
    for mr in record.of("MedicationRequest"):
        if mr.status in _MR_IGNORED:
            continue
        if mr.status in _MR_ONGOING:
            out.append(date.max)
        if (s := span(mr.authoredOn)) is not None:
            out.append(s.latest)
    for md in record.of("MedicationDispense"):
        if md.status in _MD_IGNORED:
            continue
        if (s := span(md.whenHandedOver or md.whenPrepared)) is not None:
            out.append(s.latest)
    for ma in record.of("MedicationAdministration"):
        if ma.status in _MA_IGNORED:
            continue
        v = ma.effectiveDateTime or (ma.effectivePeriod.end if ma.effectivePeriod else None)
        if (s := span(v)) is not None:
            out.append(s.latest)
    out.extend(record.medication_activity)  # of the resources the pre-filter did not validate
    return out


def raw_medication_activity(rtype: str, raw: Mapping[str, Any]) -> list[date] | None:
    """`medication_activity_dates` for one raw medication resource that is not validated (the
    pre-filter dropped it: no criterion's drug). None when a field it reads is not plain JSON of
    the expected shape: the caller then validates the resource instead."""
    status = raw.get("status")
    if not isinstance(status, str):
        return None
    values: list[object]
    if rtype == "MedicationStatement":
        ignored, ongoing = _MS_IGNORED, _MS_ONGOING
        period = raw.get("effectivePeriod", {})
        if not isinstance(period, Mapping):
            return None
        values = [raw.get("dateAsserted"), raw.get("effectiveDateTime"), period.get("end"), period.get("start")]
    elif rtype == "MedicationRequest":
        ignored, ongoing = _MR_IGNORED, _MR_ONGOING
        values = [raw.get("authoredOn")]
    elif rtype == "MedicationDispense":
        ignored, ongoing = _MD_IGNORED, frozenset()
        values = [raw.get("whenHandedOver") or raw.get("whenPrepared")]
    elif rtype == "MedicationAdministration":
        ignored, ongoing = _MA_IGNORED, frozenset()
        period = raw.get("effectivePeriod", {})
        if not isinstance(period, Mapping):
            return None
        values = [raw.get("effectiveDateTime") or period.get("end")]
    else:
        return None
    if status in ignored:
        return []
    out = [date.max] if status in ongoing else []
    for v in values:
        if v is None:
            continue
        s = span(v) if isinstance(v, str) else None
        if s is None:
            return None
        out.append(s.latest)
    return out


def allergies(record: PatientRecord, vs: ValueSet) -> list[tuple[str, CodeMatch, str]]:
    """Non-refuted, non-entered-in-error allergies matching vs: (reference, match, display)."""
    out: list[tuple[str, CodeMatch, str]] = []
    for a in record.of("AllergyIntolerance"):
        if _codes(a.verificationStatus) & _CONDITION_UNUSABLE_VERIFICATION:
            continue
        m = vs.match(a.code)
        if m is None:
            for r in a.reaction or []:
                m = vs.match(r.substance)
                if m is not None:
                    break
        if m is not None:
            out.append((f"AllergyIntolerance/{a.id}", m, _concept_display(a.code)))
    return out


def surgical_by_category(record: PatientRecord, vs: ValueSet, as_of: date) -> list[ProcedureFact]:
    """Procedures whose `category` (not code) is in `vs` (e.g. SNOMED 387713003 Surgical procedure)."""
    out: list[ProcedureFact] = []
    for p in record.of("Procedure"):
        if p.status in _PROCEDURE_UNUSABLE or p.category is None:
            continue
        match = vs.match(p.category)
        if match is None:
            continue
        when = (
            span(p.performedDateTime)
            if p.performedDateTime is not None
            else (span(p.performedPeriod.start or p.performedPeriod.end) if p.performedPeriod is not None else None)
        )
        if when is not None and when.earliest > as_of:
            continue
        out.append(ProcedureFact(f"Procedure/{p.id}", match, _concept_display(p.code), when))
    return out
