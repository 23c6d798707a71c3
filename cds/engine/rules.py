"""Generic, parameterised rules. A trial definition pairs each criterion id with one of these.

Every rule returns an `Outcome` (status, one-line reason, evidence). Rules are pure: they read the
`Context` (record, as-of date, policy) and never do I/O. Conventions:

* inclusion rules answer "is the requirement met?"; exclusion rules answer "does the exclusion apply?"
* absence of evidence settles an exclusion as `not_met` only when the data domain was searched;
  otherwise the result is `unknown`.
* anything that cannot be decided from the data (ranges straddling a threshold, unconvertible units,
  doses that cannot be computed, unknown stop dates) is `unknown`, with the evidence that blocked it.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any, Protocol

from cds.engine import facts
from cds.engine.definition import (
    SYSTEMIC_ROUTES,
    Analyte,
    Drug,
    Policy,
    RouteClass,
    ValueSet,
)
from cds.engine.facts import ConditionFact, Exposure, LabValue, fmt
from cds.engine.model import Evidence, Flag, ItemResult, Status
from cds.engine.record import MEDICATION_TYPES, PatientRecord
from cds.engine.sex import clinical_sex
from cds.engine.timeutil import add_months, add_years, age_on, span

MET, NOT_MET, UNKNOWN = Status.MET, Status.NOT_MET, Status.UNKNOWN


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    reason: str
    evidence: tuple[Evidence, ...] = ()
    items: tuple[ItemResult, ...] = ()  # computed items (SLICC, SLEDAI) shown with the result
    # The resource types this outcome rests on, when a rule knows them to be fewer than its declared
    # reads (e.g. "no such diagnosis coded" rests on Conditions only); None: the declared reads.
    depends_on: tuple[str, ...] | None = None


@dataclass
class Context:
    record: PatientRecord
    as_of: date
    policy: Policy
    _cache: dict[Any, Any] = field(default_factory=dict)

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def exposures(self, drugs: tuple[Drug, ...]) -> list[Exposure]:
        result: list[Exposure] = self.cached(("exp", drugs), lambda: facts.exposures(self.record, drugs, self.as_of))
        return result

    def labs(self, analyte: Analyte, window_days: int) -> list[LabValue]:
        result: list[LabValue] = self.cached(
            ("lab", analyte.name, window_days),
            lambda: facts.lab_values(
                self.record, analyte, self.as_of, window_days, candidates=self.observations(analyte.codes)
            ),
        )
        return result

    def observations(self, vs: ValueSet) -> list[Any]:
        """The record's Observations whose code may match `vs`, in record order.

        A value set of plain codes is answered from an index of the record's codings built once
        per context (so many analytes cost one pass over the record, not one pass each); a value
        set with prefixes or a text pattern gets a full scan. Callers still match each candidate.
        """
        if vs.prefixes or vs.text is not None:
            return self.record.of("Observation")
        index: dict[tuple[str, str], list[int]] = self.cached("obs-index", self._observation_index)
        hits = sorted({i for code in vs.codes for i in index.get(code, ())})
        observations = self.record.of("Observation")
        return [observations[i] for i in hits]

    def _observation_index(self) -> dict[tuple[str, str], list[int]]:
        index: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, o in enumerate(self.record.of("Observation")):
            concepts = [o.code, *[comp.code for comp in o.component or []]]
            for concept in concepts:
                for c in (concept.coding if concept is not None else None) or []:
                    if c.system and c.code and (not index[(c.system, c.code)] or index[(c.system, c.code)][-1] != i):
                        index[(c.system, c.code)].append(i)
        return index

    def conditions(self, vs: ValueSet) -> list[ConditionFact]:
        result: list[ConditionFact] = self.cached(
            ("cond", vs.name), lambda: facts.conditions(self.record, vs, self.as_of)
        )
        return result

    def med_list_current(self) -> tuple[bool, Evidence]:
        """Is the medication list recent enough to infer 'not taking' from absence? (once per context)"""
        result: tuple[bool, Evidence] = self.cached("med-list-current", self._med_list_current)
        return result

    def _med_list_current(self) -> tuple[bool, Evidence]:
        if not self.record.has_searched_any(*MEDICATION_TYPES):
            return False, Evidence("MedicationStatement/MedicationRequest", "medication data not available")
        cutoff = self.as_of - timedelta(days=self.policy.med_list_recent_days)
        dates = [d for d in facts.medication_activity_dates(self.record) if d >= cutoff]
        if dates:
            return True, Evidence(
                "MedicationStatement/MedicationRequest/MedicationAdministration",
                f"medication list has activity within {self.policy.med_list_recent_days} days",
            )
        return False, Evidence(
            "MedicationStatement/MedicationRequest/MedicationAdministration",
            f"no medication activity recorded within {self.policy.med_list_recent_days} days: "
            "absence of a drug cannot be inferred",
        )


class Rule(Protocol):
    def evaluate(self, ctx: Context) -> Outcome: ...


def missing_types(ctx: Context, *types: str) -> Evidence | None:
    """None when all types were searched, else evidence naming what was missing."""
    missing = [t for t in types if t not in ctx.record.searched]
    if not missing:
        return None
    return Evidence(", ".join(missing), "data not available (not searched or could not be read)")


def declared_types(rule: Rule, policy: Policy) -> tuple[str, ...]:
    """The resource types a rule declares it reads (`cds.engine.reads`), sorted."""
    from cds.engine.reads import reads  # it declares the reads of the rules below: imported on use

    return tuple(sorted({r.resource_type for r in reads(rule, policy)}))


# ---------------------------------------------------------------------------------------------
# Combinators and simple rules
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnyOf:
    """Exclusion made of alternatives: met if any is met; not_met only if all are not_met."""

    parts: tuple[Rule, ...]

    def evaluate(self, ctx: Context) -> Outcome:
        outcomes = [p.evaluate(ctx) for p in self.parts]
        met = [o for o in outcomes if o.status is MET]
        if met:
            rests_on = {
                t
                for part, o in zip(self.parts, outcomes, strict=True)
                if o.status is MET
                for t in (o.depends_on if o.depends_on is not None else declared_types(part, ctx.policy))
            }
            return Outcome(
                MET,
                "; ".join(o.reason for o in met),
                tuple(e for o in met for e in o.evidence),
                depends_on=tuple(sorted(rests_on)),
            )
        unknown = [o for o in outcomes if o.status is UNKNOWN]
        evidence = tuple(e for o in outcomes for e in o.evidence)
        if unknown:
            return Outcome(UNKNOWN, "; ".join(o.reason for o in unknown), evidence)
        return Outcome(NOT_MET, "; ".join(o.reason for o in outcomes), evidence)


@dataclass(frozen=True)
class PositiveTestReview:
    """Qualitative tests (e.g. HBsAg, HCV antibody) whose latest result, if positive, sends an
    exclusion to investigator review: a positive screen is not by itself the excluded condition
    (active infection needing treatment), so it never makes the exclusion met.

    For each analyte, the latest usable result within `window_days` (None: at any date): positive
    (qualitative word, SNOMED/HL7 positive code or POS interpretation) -> unknown with the result as
    evidence; negative, or no result at all -> not met (no test is no sign of the condition; other
    parts of the criterion still decide); a latest result that cannot be read as positive or
    negative -> unknown.
    """

    analytes: tuple[Analyte, ...]
    label: str
    review_reason: str
    window_days: int | None = None

    def evaluate(self, ctx: Context) -> Outcome:
        if (missing := missing_types(ctx, "Observation")) is not None:
            return Outcome(UNKNOWN, "observations not available", (missing,))
        days = self.window_days if self.window_days is not None else (ctx.as_of - date.min).days
        positive: list[Evidence] = []
        unreadable: list[Evidence] = []
        negative: list[Evidence] = []
        for analyte in self.analytes:
            results = ctx.labs(analyte, days)
            if not results:
                continue
            latest = results[0]
            if latest.qualitative == "positive":
                positive.append(latest.evidence(f"{analyte.name} positive", (Flag.NEEDS_REVIEW,)))
            elif latest.qualitative == "negative":
                negative.append(latest.evidence(f"{analyte.name} negative"))
            else:
                unreadable.append(
                    latest.evidence(f"{analyte.name}: {latest.problem or 'not read as positive or negative'}")
                )
        if positive:
            return Outcome(UNKNOWN, self.review_reason, tuple(positive))
        if unreadable:
            return Outcome(UNKNOWN, f"latest {self.label} not readable as positive or negative", tuple(unreadable))
        if negative:
            return Outcome(NOT_MET, f"latest {self.label} negative", tuple(negative))
        return Outcome(NOT_MET, f"no {self.label} recorded", ())


@dataclass(frozen=True)
class AlwaysReview:
    reason: str

    def evaluate(self, ctx: Context) -> Outcome:
        return Outcome(UNKNOWN, self.reason, (Evidence("investigator", "requires clinical judgment"),))


@dataclass(frozen=True)
class AgeRange:
    """min_age <= completed years <= max_age; partial birth dates give an age range; deceased fails."""

    min_age: int
    max_age: int

    def evaluate(self, ctx: Context) -> Outcome:
        p = ctx.record.patient
        if p is None:
            return Outcome(UNKNOWN, "Patient resource not available", (Evidence("Patient", "not available"),))
        ref = f"Patient/{p.id}"
        if p.deceasedBoolean is True or p.deceasedDateTime is not None:
            when = span(p.deceasedDateTime)
            return Outcome(
                NOT_MET,
                "patient is recorded as deceased",
                (Evidence(ref, "Patient.deceased", date=when.iso() if when else None),),
            )
        birth = span(p.birthDate)
        if birth is None:
            return Outcome(UNKNOWN, "birth date not recorded", (Evidence(ref, "Patient.birthDate missing"),))
        youngest = age_on(birth.latest, ctx.as_of)
        oldest = age_on(birth.earliest, ctx.as_of)
        ev = (
            Evidence(
                ref,
                "age on the as-of date",
                value=str(youngest) if youngest == oldest else f"{youngest}-{oldest}",
                unit="a",
                date=birth.iso(),
            ),
        )
        ok = [self.min_age <= a <= self.max_age for a in (youngest, oldest)]
        if all(ok):
            return Outcome(MET, f"age {ev[0].value} is within {self.min_age}-{self.max_age}", ev)
        if not any(ok) and not (youngest < self.min_age <= self.max_age < oldest):
            return Outcome(NOT_MET, f"age {ev[0].value} is outside {self.min_age}-{self.max_age}", ev)
        return Outcome(UNKNOWN, f"partial birth date: age {ev[0].value} straddles the limit", ev)


# ---------------------------------------------------------------------------------------------
# Diagnosis rules
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodedDiagnosis:
    """A required diagnosis: `confirmed` codes -> met; `review` codes only -> unknown; none -> not_met."""

    confirmed: ValueSet
    review: ValueSet  # related codes that do not prove the diagnosis (sent to review)
    not_sufficient: ValueSet  # related codes that are definitely not the diagnosis
    label: str
    review_counts_when: Callable[[Policy], bool] = lambda _p: False
    # The trial's wording of "only `review` codes" and "only `not_sufficient` codes".
    review_only: str = "only a non-specific or secondary code"
    not_sufficient_only: str = "only a related code that is not the diagnosis"

    def evaluate(self, ctx: Context) -> Outcome:
        return replace(self._evaluate(ctx), depends_on=("Condition",))  # coded diagnoses only

    def _evaluate(self, ctx: Context) -> Outcome:
        if (missing := missing_types(ctx, "Condition")) is not None:
            return Outcome(UNKNOWN, "conditions not available", (missing,))
        coded = ctx.conditions(self.confirmed)
        confirmed = [c for c in coded if not c.unconfirmed]
        if confirmed:
            ev = tuple(c.evidence(flags=(Flag.PROXY,)) for c in confirmed)
            return Outcome(MET, f"coded {self.label} diagnosis (proxy for classification criteria)", ev)
        review = ctx.conditions(self.review)
        if review:
            ev = tuple(c.evidence(flags=(Flag.NEEDS_REVIEW,)) for c in coded + review)
            if self.review_counts_when(ctx.policy) and any(not c.unconfirmed for c in review):
                return Outcome(MET, f"generic code accepted as {self.label} by configuration", ev)
            return Outcome(UNKNOWN, f"{self.review_only}: {self.label} not confirmed", ev)
        if coded:
            ev = tuple(c.evidence(flags=(Flag.NEEDS_REVIEW,)) for c in coded)
            return Outcome(
                UNKNOWN, f"{self.label} coded but not confirmed (unconfirmed / provisional / differential)", ev
            )
        other = ctx.conditions(self.not_sufficient)
        if other:
            ev = tuple(c.evidence() for c in other)
            return Outcome(NOT_MET, f"{self.not_sufficient_only}, no {self.label}", ev)
        return Outcome(
            NOT_MET,
            f"no {self.label} diagnosis recorded",
            (Evidence("Condition", f"{ctx.record.count('Condition')} conditions searched, none match"),),
        )


@dataclass(frozen=True)
class DiagnosisAge:
    """The earliest qualifying diagnosis is at least `months` calendar months before the as-of date."""

    diagnosis: ValueSet
    fallback: ValueSet  # codes evaluated when the diagnosis itself is unknown (non-specific codes)
    months: int
    label: str

    def evaluate(self, ctx: Context) -> Outcome:
        if (missing := missing_types(ctx, "Condition")) is not None:
            return Outcome(UNKNOWN, "conditions not available", (missing,))
        conds = ctx.conditions(self.diagnosis) or ctx.conditions(self.fallback)
        if not conds:
            return Outcome(UNKNOWN, f"no {self.label} diagnosis to date", ())
        confirmed = [c for c in conds if not c.unconfirmed]
        if not confirmed:
            return Outcome(
                UNKNOWN,
                f"{self.label} diagnosis not confirmed: its duration cannot establish the criterion",
                tuple(c.evidence() for c in conds),
            )
        conds = confirmed
        cutoff = add_months(ctx.as_of, -self.months)
        dated = [(c, c.onset) for c in conds if c.onset] + [(c, c.recorded) for c in conds if c.recorded]
        if not dated:
            ev = tuple(c.evidence() for c in conds)
            return Outcome(UNKNOWN, f"{self.label} diagnosis has no onset or recorded date", ev)
        # Any date that is certainly on/before the cutoff proves duration (recordedDate bounds onset).
        for c, s in dated:
            assert s is not None
            if s.latest <= cutoff:
                return Outcome(
                    MET,
                    f"{self.label} diagnosed {s.iso()}, at least {self.months} months before {ctx.as_of}",
                    (c.evidence(),),
                )
        onsets = [(c, s) for c, s in dated if s is not None]
        if all(s.earliest > cutoff for _, s in onsets) and all(c.onset is not None for c in conds):
            c0, s0 = min(onsets, key=lambda cs: cs[1].earliest)
            return Outcome(
                NOT_MET,
                f"{self.label} diagnosed {s0.iso()}, less than {self.months} months before {ctx.as_of}",
                (c0.evidence(),),
            )
        return Outcome(
            UNKNOWN,
            f"{self.label} diagnosis date is too imprecise to tell",
            tuple(c.evidence() for c, _ in onsets),
        )


@dataclass(frozen=True)
class ConditionPresent:
    """Exclusion by coded condition.

    mode "ever": any usable record (history counts); "active": clinically active on the as-of date;
    "concomitant": present now - active -> met, in remission -> review, resolved / inactive / abated
    -> not counted; "active-recent": active with onset within `recent_days` (active with an older or
    unknown onset goes to review); review: codes that send the patient to review (unknown) instead
    of excluding. A matching condition that is only unconfirmed / provisional / differential never
    excludes: it sends the patient to review.
    """

    vs: ValueSet
    label: str
    mode: str = "ever"
    recent_days: int | None = None
    review: ValueSet | None = None
    review_reason: str = "needs review"
    also_procedures: ValueSet | None = None

    def _hits(self, ctx: Context) -> list[ConditionFact]:
        conds = ctx.conditions(self.vs)
        if self.mode == "ever":
            return conds
        out = []
        recent_start = ctx.as_of - timedelta(days=self.recent_days or 0)
        for c in conds:
            is_recent = c.onset is not None and c.onset.latest >= recent_start
            if (self.mode in ("active", "concomitant") and c.active) or (
                self.mode == "active-recent" and c.active and is_recent
            ):
                out.append(c)
        return out

    def _review(self, ctx: Context, hits: list[ConditionFact]) -> list[ConditionFact]:
        """Conditions that send the patient to review rather than exclude."""
        refs = {h.ref for h in hits}
        out: list[ConditionFact] = [h for h in hits if h.unconfirmed]
        if self.mode == "active-recent":  # active conditions with older or unknown onset
            out += [c for c in ctx.conditions(self.vs) if c.active and c.ref not in refs]
        if self.mode == "concomitant":  # remission: may still be present
            out += [c for c in ctx.conditions(self.vs) if c.clinical_status == "remission" and c.ref not in refs]
        if self.review is not None:
            out += [c for c in ctx.conditions(self.review) if self.mode == "ever" or c.active]
        return list({c.ref: c for c in out}.values())

    def evaluate(self, ctx: Context) -> Outcome:
        types = ("Condition", "Procedure") if self.also_procedures is not None else ("Condition",)
        hits = self._hits(ctx) if "Condition" in ctx.record.searched else []
        ev: list[Evidence] = [c.evidence() for c in hits if not c.unconfirmed]
        if self.also_procedures is not None and "Procedure" in ctx.record.searched:
            ev += [p.evidence() for p in facts.procedures(ctx.record, self.also_procedures, ctx.as_of)]
        if ev:
            return Outcome(MET, f"{self.label} recorded", tuple(ev))
        if "Condition" in ctx.record.searched:
            review = self._review(ctx, hits)
            if review:
                reason = self.review_reason
                if all(c.unconfirmed for c in review):
                    reason = f"{self.label} coded but not confirmed: needs review"
                elif all(c.clinical_status == "remission" for c in review) and self.mode == "concomitant":
                    reason = f"{self.label} in remission: whether it is concomitant needs review"
                return Outcome(UNKNOWN, reason, tuple(c.evidence(flags=(Flag.NEEDS_REVIEW,)) for c in review))
        if (missing := missing_types(ctx, *types)) is not None:
            return Outcome(UNKNOWN, f"cannot rule out {self.label}: data not available", (missing,))
        if self.mode == "concomitant" and "Condition" in ctx.record.searched:
            past = ctx.conditions(self.vs)
            if past:
                return Outcome(
                    NOT_MET,
                    f"{self.label} recorded only as resolved or inactive (not concomitant)",
                    tuple(c.evidence() for c in past),
                )
        return Outcome(
            NOT_MET,
            f"no {self.label} recorded",
            (Evidence("/".join(types), f"searched {', '.join(types)}: no matching record"),),
        )


@dataclass(frozen=True)
class Malignancy:
    """Malignancy within `years` (or still active), or lymphoproliferative disease ever.

    Exceptions (treated cutaneous BCC/SCC, cured cervical carcinoma in situ) do not exclude when
    they are resolved/abated; otherwise they go to review.
    """

    malignant: ValueSet
    lymphoproliferative: ValueSet
    exceptions: ValueSet
    years: int

    def evaluate(self, ctx: Context) -> Outcome:
        if (missing := missing_types(ctx, "Condition")) is not None:
            return Outcome(UNKNOWN, "conditions not available", (missing,))
        cutoff = add_years(ctx.as_of, -self.years)
        exc_refs = {c.ref for c in ctx.conditions(self.exceptions)}
        all_lpd = [c for c in ctx.conditions(self.lymphoproliferative) if c.ref not in exc_refs]
        lpd = [c for c in all_lpd if not c.unconfirmed]
        if lpd:
            return Outcome(MET, "lymphoproliferative disease recorded", tuple(c.evidence() for c in lpd))
        met: list[ConditionFact] = []
        review: list[ConditionFact] = [c for c in all_lpd if c.unconfirmed]
        old: list[ConditionFact] = []
        lpd_refs = {c.ref for c in review}
        for c in ctx.conditions(self.malignant):
            if c.ref in exc_refs or c.ref in lpd_refs:
                continue
            if c.unconfirmed:
                review.append(c)
                continue
            if c.active and c.abatement is None:
                met.append(c)
                continue
            when = c.onset or c.recorded
            if when is None:
                review.append(c)
            elif when.latest >= cutoff or (c.abatement is not None and c.abatement.latest >= cutoff):
                met.append(c)
            elif when.earliest < cutoff and (c.abatement is None or c.abatement.latest < cutoff):
                if c.abatement is None and c.clinical_status not in ("resolved", "remission", "inactive"):
                    review.append(c)
                else:
                    old.append(c)
            else:
                review.append(c)
        if met:
            return Outcome(MET, f"malignancy active or within {self.years} years", tuple(c.evidence() for c in met))
        exceptions = ctx.conditions(self.exceptions)
        untreated = [c for c in exceptions if c.active and c.abatement is None]
        if review or untreated:
            return Outcome(
                UNKNOWN,
                "malignancy history needs review (dates or cure not documented)",
                tuple(c.evidence(flags=(Flag.NEEDS_REVIEW,)) for c in review + untreated),
            )
        ev = tuple(c.evidence() for c in old + exceptions)
        if ev:
            return Outcome(NOT_MET, f"only malignancy more than {self.years} years ago or an allowed exception", ev)
        return Outcome(NOT_MET, "no malignancy recorded", (Evidence("Condition", "no malignancy code"),))


# ---------------------------------------------------------------------------------------------
# Laboratory rules
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabTest:
    """One analyte compared with a threshold, absolute or as a multiple of ULN/LLN.

    Uses the most recent usable result in the last `window_days` days. `relative_to` is "uln" or "lln" (threshold
    is then a multiple), or None (threshold in analyte.unit). Result `met` means `value op threshold`.
    """

    analyte: Analyte
    op: str
    threshold: float
    window_days: int  # results dated within this many days before the as-of date (both ends included)
    relative_to: str | None = None

    def describe(self) -> str:
        if self.relative_to:
            return f"{self.analyte.name} {self.op} {fmt(self.threshold)}x{self.relative_to.upper()}"
        return f"{self.analyte.name} {self.op} {fmt(self.threshold)} {self.analyte.unit}"

    def evaluate(self, ctx: Context) -> Outcome:
        days = self.window_days
        if (missing := missing_types(ctx, "Observation")) is not None:
            return Outcome(UNKNOWN, f"{self.analyte.name}: observations not available", (missing,))
        results = ctx.labs(self.analyte, days)
        if not results:
            return Outcome(
                UNKNOWN,
                f"no {self.analyte.name} result in the last {days} days",
                (Evidence("Observation", f"no usable {self.analyte.name} result within {days} days"),),
            )
        outcome = self._judge(results[0])
        ties = [lv for lv in results[1:] if lv.order_key == results[0].order_key]
        for tie in ties:
            other = self._judge(tie)
            if other.status is not outcome.status:
                return Outcome(
                    UNKNOWN,
                    f"two {self.analyte.name} results at the same time disagree: {outcome.reason}; {other.reason}",
                    outcome.evidence + other.evidence,
                )
        return outcome

    def _judge(self, latest: LabValue) -> Outcome:
        if latest.value is None:
            return Outcome(
                UNKNOWN,
                f"latest {self.analyte.name} is not usable ({latest.problem})",
                (latest.evidence(f"{self.analyte.name}: {latest.problem}"),),
            )
        value = latest.value
        flags: list[Flag] = []
        limit_text = ""
        if self.relative_to is not None:
            limit = latest.uln if self.relative_to == "uln" else latest.lln
            assumed = latest.uln_assumed if self.relative_to == "uln" else latest.lln_assumed
            if limit is None or limit <= 0:
                return Outcome(
                    UNKNOWN,
                    f"{self.analyte.name}: no reference limit and no default",
                    (latest.evidence(f"{self.analyte.name} without {self.relative_to.upper()}"),),
                )
            if assumed:
                flags.append(Flag.ULN_ASSUMED if self.relative_to == "uln" else Flag.LLN_ASSUMED)
            value = value.scaled(1 / limit)
            limit_text = f" ({self.relative_to.upper()} {fmt(limit)} {self.analyte.unit}" + (
                ", site default)" if assumed else ")"
            )
        decided = value.test(self.op, self.threshold)
        shown = latest.value.text()
        desc = f"{self.analyte.name} {shown} {self.analyte.unit}{limit_text}"
        ev = (latest.evidence(desc, tuple(flags)),)
        if decided is None:
            return Outcome(UNKNOWN, f"{desc}: comparator value cannot settle {self.describe()}", ev)
        verb = "meets" if decided else "does not meet"
        return Outcome(MET if decided else NOT_MET, f"{desc} on {latest.when} {verb} {self.describe()}", ev)


def ckd_epi_2021(scr_mg_dl: float, age: int, female: bool) -> float:
    """CKD-EPI 2021 race-free creatinine equation, mL/min/1.73 m2."""
    kappa = 0.7 if female else 0.9
    alpha = -0.241 if female else -0.302
    ratio = scr_mg_dl / kappa
    egfr = 142 * min(ratio, 1) ** alpha * max(ratio, 1) ** -1.200 * 0.9938**age
    if female:
        egfr *= 1.012
    return round(float(egfr), 1)


def egfr_from_creatinine(ctx: Context, creatinine: Analyte, window_days: int) -> tuple[float, Evidence] | None:
    """eGFR (CKD-EPI 2021) from the latest creatinine in the window, with its DERIVED evidence; None
    when it cannot be computed exactly (no usable creatinine, a range or comparator value, unknown
    sex for clinical use, an inexact birth date)."""
    p = ctx.record.patient
    results = ctx.labs(creatinine, window_days)
    sex = clinical_sex(p).sex
    if p is None or not results or results[0].value is None or sex is None:
        return None
    birth = span(p.birthDate)
    lv = results[0]
    assert lv.value is not None
    if birth is None or not birth.exact or lv.value.lo != lv.value.hi:
        return None
    egfr = ckd_epi_2021(lv.value.lo, age_on(birth.earliest, lv.when), sex == "female")
    ev = Evidence(
        lv.ref,
        f"eGFR {fmt(egfr)} mL/min/{{1.73_m2}} derived (CKD-EPI 2021) from creatinine {lv.original}",
        value=fmt(egfr),
        unit="mL/min/{1.73_m2}",
        date=lv.when.isoformat(),
        original=lv.original,
        flags=(Flag.DERIVED,),
    )
    return egfr, ev


@dataclass(frozen=True)
class Pregnancy:
    """Pregnancy or breastfeeding. Male -> not_met. Otherwise an active pregnancy/breastfeeding
    condition or a positive test in the window -> met; a negative test/status in the window ->
    not_met; else unknown (the protocol requires a screening test)."""

    pregnancy_conditions: ValueSet
    breastfeeding: ValueSet
    tests: Analyte  # hCG / pregnancy status observations (coded values)
    positive_codes: frozenset[str]
    negative_codes: frozenset[str]
    window_days: int  # a pregnancy test or status counts within this many days
    max_pregnancy_days: int = 300

    def evaluate(self, ctx: Context) -> Outcome:
        p = ctx.record.patient
        sex = clinical_sex(p)
        if p is not None and sex.sex == "male":
            return Outcome(NOT_MET, "male patient", (Evidence(f"Patient/{p.id}", "; ".join(sex.sources)),))
        sex_note: tuple[Evidence, ...] = ()
        if p is not None and sex.conflicting:
            sex_note = (
                Evidence(
                    f"Patient/{p.id}",
                    f"sex recorded inconsistently ({'; '.join(sex.sources)}): treated as possibly pregnant",
                    flags=(Flag.NEEDS_REVIEW,),
                ),
            )
        unconfirmed: list[ConditionFact] = []
        if "Condition" in ctx.record.searched:
            recent = ctx.as_of - timedelta(days=self.max_pregnancy_days)
            preg = [
                c
                for c in ctx.conditions(self.pregnancy_conditions)
                if c.active and (c.onset is None or c.onset.latest >= recent)
            ]
            bf = [c for c in ctx.conditions(self.breastfeeding) if c.active]
            confirmed = [c for c in preg + bf if not c.unconfirmed]
            unconfirmed = [c for c in preg + bf if c.unconfirmed]
            if confirmed:
                return Outcome(MET, "pregnancy or breastfeeding recorded", tuple(c.evidence() for c in confirmed))
        if "Observation" in ctx.record.searched:
            tests = ctx.labs(self.tests, self.window_days)
            for lv in tests:
                if lv.qualitative == "positive" or set(lv.coded) & self.positive_codes:
                    return Outcome(
                        MET,
                        f"positive pregnancy test on {lv.when}",
                        (lv.evidence("pregnancy test positive"),),
                    )
            if unconfirmed:
                return Outcome(
                    UNKNOWN,
                    "pregnancy or breastfeeding coded but not confirmed: needs review",
                    tuple(c.evidence() for c in unconfirmed) + sex_note,
                )
            if tests:
                latest = tests[0]
                if latest.qualitative == "negative" or set(latest.coded) & self.negative_codes:
                    return Outcome(
                        NOT_MET,
                        f"negative pregnancy test on {latest.when}; no pregnancy or breastfeeding recorded",
                        (latest.evidence("pregnancy test negative"), *sex_note),
                    )
                return Outcome(
                    UNKNOWN,
                    f"latest pregnancy test on {latest.when} is not readable as positive or negative",
                    (latest.evidence(f"pregnancy test: {latest.problem or 'not understood'}"), *sex_note),
                )
        if unconfirmed:
            return Outcome(
                UNKNOWN,
                "pregnancy or breastfeeding coded but not confirmed: needs review",
                tuple(c.evidence() for c in unconfirmed) + sex_note,
            )
        return Outcome(
            UNKNOWN,
            f"no pregnancy test in the last {self.window_days} days",
            (Evidence("Observation", "no recent pregnancy test or status"), *sex_note),
        )


# ---------------------------------------------------------------------------------------------
# Medication rules
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrugExposure:
    """Exclusion: exposure to any of `drugs` by one of `routes`, within `days` (None = ever).

    `allergy`: a matching non-refuted AllergyIntolerance also excludes. `injectable_is_iv`: an
    injectable product with no stated route counts as intravenous.
    """

    drugs: tuple[Drug, ...]
    label: str
    days: int | None = None
    routes: frozenset[RouteClass] = SYSTEMIC_ROUTES | {RouteClass.UNKNOWN}
    allergy: ValueSet | None = None
    review_procedures: ValueSet | None = None
    # Routes that neither count nor rule out (e.g. IVIG with no route: it may be subcutaneous).
    review_routes: frozenset[RouteClass] = frozenset()

    def _review_reason(self, ctx: Context, exp: Exposure) -> str | None:
        """Why an exposure in the window goes to review instead of counting (None: it counts)."""
        if exp.route in self.review_routes:
            return f"route {exp.route.value}: cannot tell whether it is {self.label}"
        return None

    def evaluate(self, ctx: Context) -> Outcome:
        window_start = ctx.as_of - timedelta(days=self.days) if self.days is not None else date.min
        met: list[Evidence] = []
        unknown: list[Evidence] = []
        for exp in ctx.exposures(self.drugs):
            if exp.route not in self.routes and exp.route not in self.review_routes:
                continue
            overlap = exp.overlaps(window_start, ctx.as_of, ctx.policy.max_undated_course_days)
            if overlap and (why := self._review_reason(ctx, exp)) is not None:
                unknown.append(exp.evidence(why, (Flag.NEEDS_REVIEW,)))
            elif overlap:
                met.append(exp.evidence())
            elif overlap is None:
                unknown.append(exp.evidence("stop date not recorded", (Flag.NEEDS_REVIEW,)))
        span_text = f"within {self.days} days" if self.days is not None else "ever"
        if self.allergy is not None and "AllergyIntolerance" in ctx.record.searched:
            for ref, m, display in facts.allergies(ctx.record, self.allergy):
                met.append(Evidence(ref, f"allergy: {display} ({m})"))
        if met:
            return Outcome(MET, f"{self.label} {span_text}", tuple(met))
        if unknown:
            return Outcome(UNKNOWN, f"{self.label}: cannot tell whether taken {span_text}", tuple(unknown))
        if self.review_procedures is not None and "Procedure" in ctx.record.searched:
            procs = [
                p
                for p in facts.procedures(ctx.record, self.review_procedures, ctx.as_of)
                if p.when is not None and p.when.latest >= window_start
            ]
            if procs:
                return Outcome(
                    UNKNOWN,
                    f"procedure that may involve {self.label} {span_text}: agent not recorded",
                    tuple(p.evidence((Flag.NEEDS_REVIEW,)) for p in procs),
                )
        current, ev = ctx.med_list_current()
        if not current:
            return Outcome(UNKNOWN, f"cannot rule out {self.label}: medication list not current", (ev,))
        return Outcome(NOT_MET, f"no {self.label} {span_text} on the medication record", (ev,))


_PROPHYLAXIS_TEXT = re.compile(r"prophyla|prevent|suppressi|\bPJP\b|\bPCP\b", re.I)


@dataclass(frozen=True)
class AntiInfectiveTreatment(DrugExposure):
    """Exclusion "infection requiring antibiotics / antivirals": an anti-infective given to TREAT an
    infection in the window. Prophylaxis is not treatment: an exposure whose reason names
    prophylaxis, or (with no reason and no infection recorded) a prophylactic regimen - dosed less
    than daily (e.g. TMP-SMX three times a week) or taken continuously for `long_term_days` or
    more - goes to review (unknown), never met."""

    infections: ValueSet | None = None
    long_term_days: int = 90

    def _review_reason(self, ctx: Context, exp: Exposure) -> str | None:
        base = DrugExposure._review_reason(self, ctx, exp)
        if base is not None:
            return base
        reason_texts = [t for rc in exp.reason_codes for t in (rc.text, *[c.display for c in rc.coding or []]) if t]
        if any(_PROPHYLAXIS_TEXT.search(t) for t in reason_texts):
            return "given as prophylaxis (reason), not treatment of an infection: needs review"
        if reason_texts or exp.reason_refs:
            return None  # a stated indication: treatment
        if self.infections is not None and any(c.active for c in ctx.conditions(self.infections)):
            return None
        if exp.frequency is not None and exp.frequency < 1:
            return "intermittent (prophylactic-type) regimen and no infection recorded: needs review"
        begin = exp.start or exp.anchor
        if (ctx.as_of - begin).days >= self.long_term_days and (exp.ongoing or (exp.end or begin) >= ctx.as_of):
            return f"taken for {self.long_term_days}+ days with no infection recorded (prophylaxis?): needs review"
        return None


@dataclass(frozen=True)
class SteroidDoseAbove:
    """Exclusion: any day with systemic prednisone-equivalent dose > limit within `days`."""

    steroids: tuple[Drug, ...]
    limit_mg_per_day: float
    days: int

    def evaluate(self, ctx: Context) -> Outcome:
        window_start = ctx.as_of - timedelta(days=self.days)
        met: list[Evidence] = []
        unknown: list[Evidence] = []
        for exp in ctx.exposures(self.steroids):
            if exp.route not in SYSTEMIC_ROUTES and exp.route is not RouteClass.UNKNOWN:
                continue
            overlap = exp.overlaps(window_start, ctx.as_of, ctx.policy.max_undated_course_days)
            if overlap is False:
                continue
            factor = exp.drug.prednisone_factor or 0.0
            if exp.daily_mg is None:
                if exp.route in (RouteClass.INTRAVENOUS, RouteClass.OTHER_SYSTEMIC) or overlap is None:
                    unknown.append(exp.evidence("parenteral or undated steroid, dose unknown", (Flag.NEEDS_REVIEW,)))
                elif exp.daily_mg is None:
                    unknown.append(exp.evidence("dose unknown", (Flag.NEEDS_REVIEW,)))
                continue
            high = exp.daily_mg[1] * factor
            if high > self.limit_mg_per_day and overlap:
                met.append(exp.evidence(f"{fmt(high)} mg/day prednisone-equivalent"))
            elif overlap is None and high > self.limit_mg_per_day:
                unknown.append(exp.evidence("stop date not recorded", (Flag.NEEDS_REVIEW,)))
        if met:
            return Outcome(
                MET,
                f"prednisone-equivalent > {fmt(self.limit_mg_per_day)} mg/day within {self.days} days",
                tuple(met),
            )
        if unknown:
            return Outcome(UNKNOWN, "steroid dose in the window cannot be computed", tuple(unknown))
        current, ev = ctx.med_list_current()
        if not current:
            return Outcome(UNKNOWN, "cannot rule out high-dose steroids: medication list not current", (ev,))
        return Outcome(NOT_MET, f"no steroid dose > {fmt(self.limit_mg_per_day)} mg/day within {self.days} days", (ev,))


@dataclass(frozen=True)
class DoseCap:
    drugs: tuple[Drug, ...]
    max_mg: float
    per: str  # "day" | "week"
    label: str


@dataclass(frozen=True)
class StableRegimen:
    """Inclusion: drugs of these classes are either not taken, or taken at an unchanged dose for the
    whole window, within the caps. Not taking counts as stable only when the med list is current.

    `total_cap` (mg/day prednisone-equivalent, using Drug.prednisone_factor) caps the sum;
    `caps` cap single drugs (mg/day or mg/week).
    """

    drugs: tuple[Drug, ...]
    label: str
    days: int
    routes: frozenset[RouteClass]
    total_cap: float | None = None
    caps: tuple[DoseCap, ...] = ()

    def evaluate(self, ctx: Context) -> Outcome:
        window_start = ctx.as_of - timedelta(days=self.days)
        policy = ctx.policy
        relevant: list[Exposure] = []
        for exp in ctx.exposures(self.drugs):
            if exp.route not in self.routes:
                continue
            overlap = exp.overlaps(window_start, ctx.as_of, policy.max_undated_course_days)
            if overlap is None:
                return Outcome(
                    UNKNOWN,
                    f"{self.label}: stop date of {exp.label} not recorded",
                    (exp.evidence("stop date not recorded", (Flag.NEEDS_REVIEW,)),),
                )
            if overlap:
                relevant.append(exp)
        if not relevant:
            current, ev = ctx.med_list_current()
            if current:
                return Outcome(MET, f"no {self.label} in the last {self.days} days (none counts as stable)", (ev,))
            return Outcome(UNKNOWN, f"{self.label}: medication list not current", (ev,))
        evidence = tuple(e.evidence(e.dose_text()) for e in relevant)
        by_drug: dict[str, list[Exposure]] = defaultdict(list)
        for e in relevant:
            by_drug[e.drug.name].append(e)
        problems: list[str] = []
        unknowns: list[str] = []
        daily_by_drug: dict[str, float] = {}
        for name, exps in by_drug.items():
            verdict = _stability(exps, window_start, ctx.as_of, policy.renewal_grace_days)
            if verdict.status is NOT_MET:
                problems.append(f"{name}: {verdict.reason}")
            elif verdict.status is UNKNOWN:
                unknowns.append(f"{name}: {verdict.reason}")
            else:
                daily_by_drug[name] = verdict.daily
        # Caps are checked on every exposure with a known dose, even if stability is unknown.
        over: list[str] = []
        for cap in self.caps:
            names = {d.name for d in cap.drugs}
            for e in relevant:
                if e.drug.name in names and e.daily_mg is not None:
                    amount = e.daily_mg[1] * (7 if cap.per == "week" else 1)
                    if amount > cap.max_mg + 1e-9:
                        over.append(f"{e.drug.name} {fmt(amount)} mg/{cap.per} > {fmt(cap.max_mg)} mg/{cap.per}")
        if self.total_cap is not None:
            total = sum(
                e.daily_mg[1] * (e.drug.prednisone_factor or 0)
                for e in relevant
                if e.daily_mg is not None and (e.ongoing or (e.end is not None and e.end >= ctx.as_of))
            )
            if total > self.total_cap + 1e-9:
                over.append(f"{fmt(total)} mg/day prednisone-equivalent > {fmt(self.total_cap)}")
        if over or problems:
            return Outcome(NOT_MET, f"{self.label} not eligible: " + "; ".join(over + problems), evidence)
        if unknowns:
            return Outcome(UNKNOWN, f"{self.label}: " + "; ".join(unknowns), evidence)
        doses = ", ".join(f"{n} {fmt(d)} mg/day" for n, d in sorted(daily_by_drug.items()))
        return Outcome(MET, f"{self.label} stable for >= {self.days} days ({doses})", evidence)


@dataclass(frozen=True, slots=True)
class _Stability:
    status: Status
    reason: str
    daily: float = math.nan


def _stability(exps: Sequence[Exposure], window_start: date, as_of: date, grace_days: int) -> _Stability:
    """One ingredient's exposures overlapping the window: unchanged dose from before the window to now?

    Timing is checked first (a start, gap or stop inside the window fails whatever the dose), then
    the dose (as-needed or not computable -> unknown; two different doses -> changed).
    """
    ordered = sorted(exps, key=lambda e: e.start or e.anchor)
    first = ordered[0]
    begin = first.start or first.anchor
    if begin > window_start:
        return _Stability(NOT_MET, f"started {begin}, within the window")
    # Continuity: each next segment must begin within the grace period after the previous ends.
    covered_until: date | None = None
    for e in ordered:
        b = e.start or e.anchor
        if covered_until is not None and b > covered_until + timedelta(days=grace_days):
            return _Stability(NOT_MET, f"interrupted before {b}")
        end = as_of if e.ongoing else e.end
        if end is None:
            return _Stability(UNKNOWN, "stop date not recorded")
        covered_until = end if covered_until is None else max(covered_until, end)
    assert covered_until is not None
    if covered_until < as_of - timedelta(days=grace_days):
        return _Stability(NOT_MET, f"stopped {covered_until}, within the window")
    if any(e.as_needed for e in exps):
        return _Stability(UNKNOWN, "taken as needed: a PRN regimen cannot be shown stable")
    # A fill without dosage instructions shows use (continuity above), not the dose.
    dosed = [e for e in exps if not (e.ref.startswith("MedicationDispense/") and e.daily_mg is None)]
    exps = dosed or exps
    if any(e.daily_mg is None for e in exps):
        problem = next(e.dose_problem for e in exps if e.daily_mg is None)
        return _Stability(UNKNOWN, f"dose not computable ({problem})")
    doses = {e.daily_mg for e in exps if e.daily_mg is not None}
    if len(doses) > 1:
        return _Stability(NOT_MET, "dose changed within the window")
    low, high = next(iter(doses))
    if low != high:
        return _Stability(UNKNOWN, "dose given as a range")
    return _Stability(MET, "stable", low)


@dataclass(frozen=True)
class RecentSurgery:
    """Exclusion: major surgery within `days`. A procedure in `major` -> met; any other surgical
    procedure (code or category in `surgical`) -> unknown (major vs minor is a judgment call)."""

    major: ValueSet
    surgical: ValueSet
    days: int

    def evaluate(self, ctx: Context) -> Outcome:
        if (missing := missing_types(ctx, "Procedure")) is not None:
            return Outcome(UNKNOWN, "procedures not available", (missing,))
        start = ctx.as_of - timedelta(days=self.days)

        def recent(vs: ValueSet) -> list[facts.ProcedureFact]:
            return [
                p for p in facts.procedures(ctx.record, vs, ctx.as_of) if p.when is not None and p.when.latest >= start
            ]

        major = recent(self.major)
        if major:
            return Outcome(MET, f"major surgery within {self.days} days", tuple(p.evidence() for p in major))
        surgical = recent(self.surgical)
        surgical += [
            p
            for p in facts.surgical_by_category(ctx.record, self.surgical, ctx.as_of)
            if p.when is not None and p.when.latest >= start and p.ref not in {s.ref for s in surgical}
        ]
        if surgical:
            return Outcome(
                UNKNOWN,
                f"surgery within {self.days} days: major or minor needs review",
                tuple(p.evidence((Flag.NEEDS_REVIEW,)) for p in surgical),
            )
        undated = [p for p in facts.procedures(ctx.record, self.surgical | self.major, ctx.as_of) if p.when is None]
        if undated:
            return Outcome(UNKNOWN, "surgical procedure without a date", tuple(p.evidence() for p in undated))
        return Outcome(
            NOT_MET,
            f"no surgery recorded within {self.days} days",
            (Evidence("Procedure", f"{ctx.record.count('Procedure')} procedures searched"),),
        )


@dataclass(frozen=True)
class SteroidRequiringCondition:
    """Exclusion: a condition that may need repeated systemic steroid courses.

    Active condition in `conditions` plus >= `min_courses` systemic steroid courses within `days`
    given for it (reasonCode in the value set, or reasonReference to the condition) -> met;
    the condition alone -> unknown (whether it is uncontrolled is not coded); none -> not_met.
    """

    conditions: ValueSet
    steroids: tuple[Drug, ...]
    min_courses: int
    days: int

    def evaluate(self, ctx: Context) -> Outcome:
        if (missing := missing_types(ctx, "Condition")) is not None:
            return Outcome(UNKNOWN, "conditions not available", (missing,))
        active_any = [c for c in ctx.conditions(self.conditions) if c.active]
        if not active_any:
            return Outcome(
                NOT_MET,
                f"no active {self.conditions.name} recorded",
                (Evidence("Condition", f"no active {self.conditions.name}"),),
            )
        active = [c for c in active_any if not c.unconfirmed]
        if not active:
            return Outcome(
                UNKNOWN,
                f"{self.conditions.name} coded but not confirmed: needs review",
                tuple(c.evidence(flags=(Flag.NEEDS_REVIEW,)) for c in active_any),
            )
        refs = {c.ref for c in active}
        start = ctx.as_of - timedelta(days=self.days)
        courses: list[Exposure] = []
        for exp in ctx.exposures(self.steroids):
            if exp.route not in SYSTEMIC_ROUTES or exp.anchor < start:
                continue
            for_condition = any(f"Condition/{r.rsplit('/', 1)[-1]}" in refs for r in exp.reason_refs) or any(
                self.conditions.match(rc) is not None for rc in exp.reason_codes
            )
            if for_condition:
                courses.append(exp)
        starts = sorted({(e.start or e.anchor) for e in courses})
        ev = tuple(c.evidence() for c in active) + tuple(e.evidence("steroid course for it") for e in courses)
        if len(starts) >= self.min_courses:
            return Outcome(
                MET,
                f"{self.conditions.name} with {len(starts)} systemic steroid courses in {self.days} days",
                ev,
            )
        return Outcome(
            UNKNOWN,
            f"{self.conditions.name} recorded: whether it needs repeated steroid courses needs review",
            tuple(c.evidence(flags=(Flag.NEEDS_REVIEW,)) for c in active) + ev[len(active) :],
        )
