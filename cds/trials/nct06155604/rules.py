"""NCT06155604's disease-specific rules: what the generic rules of `cds.engine.rules` do not cover.

* `BiopsyProvenLupusNephritis`: an ISN/RPS (WHO) class code is a biopsy finding; an LN diagnosis
  counts only with a kidney biopsy on record and no class code saying otherwise.
* `LabInRange`: the latest result of an analyte inside a closed range (eGFR 15-60), with a
  creatinine-derived fallback (CKD-EPI 2021, flagged DERIVED).
* `QuiescentSledai`: SLEDAI-2K below a threshold with no renal-domain points.
* `MaintenanceRegimen`: a required glucocorticoid at a dose RANGE (minimum and maximum), optionally
  with one companion drug under a cap, unchanged for the window; any other immunosuppressant fails.
* `RenalReplacement`: stage 5 CKD / ESKD on dialysis or with a kidney transplant.
* `RecurrentInfection`: frequent infections counted as distinct episodes within windows.

Each rule declares what it reads (registered for `cds.engine.reads.reads` at the end).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

from cds.engine import facts
from cds.engine.definition import SYSTEMIC_ROUTES, Analyte, Drug, Policy, RouteClass, ValueSet
from cds.engine.facts import ConditionFact, Exposure, LabValue, fmt
from cds.engine.model import Evidence, Flag, Status
from cds.engine.reads import Read, labs, matching, medications, observations, reads
from cds.engine.record import MEDICATION_TYPES
from cds.engine.rules import (
    Context,
    DoseCap,
    DrugExposure,
    Outcome,
    StableRegimen,
    egfr_from_creatinine,
)
from cds.engine.timeutil import span
from cds.trials.lupus.sledai import ClinicalSledai, SledaiData, questionnaire_scores, sledai_items

MET, NOT_MET, UNKNOWN = Status.MET, Status.NOT_MET, Status.UNKNOWN

_REPORT_USABLE = frozenset({"final", "amended", "corrected", "appended"})


def _searched(ctx: Context, *types: str) -> Evidence | None:
    missing = [t for t in types if t not in ctx.record.searched]
    if not missing:
        return None
    return Evidence(", ".join(missing), "data not available (not searched or could not be read)")


def _usable(conds: list[ConditionFact]) -> list[ConditionFact]:
    return [c for c in conds if not c.unconfirmed]


# ---------------------------------------------------------------------------------------------
# Biopsy-proven lupus nephritis of a given class
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Report:
    ref: str
    when: str | None
    qualifying: bool  # its conclusion names a qualifying class
    other_class: bool  # its conclusion names another class
    biopsy: bool  # it is a kidney biopsy report


@dataclass(frozen=True)
class BiopsyProvenLupusNephritis:
    """Inclusion: biopsy-proven lupus nephritis of a qualifying class.

    A confirmed qualifying class code (a class is a biopsy finding), or a kidney biopsy report whose
    conclusion names one -> met. Only other classes coded -> not_met. An LN diagnosis with a kidney
    biopsy (Procedure or report) and no class code -> met (the class is the biopsy's; flagged PROXY);
    an LN diagnosis without biopsy evidence -> unknown; no LN at all -> not_met. Unconfirmed codes
    never prove anything: they send the patient to review.
    """

    qualifying: ValueSet  # class III / IV / V
    other_class: ValueSet  # class I / II / VI
    nephritis: ValueSet  # lupus nephritis of any or no class
    biopsy: ValueSet  # kidney biopsy (Procedure code, DiagnosticReport code)
    label: str

    def _reports(self, ctx: Context) -> list[_Report]:
        out: list[_Report] = []
        for r in ctx.record.of("DiagnosticReport"):
            if r.status not in _REPORT_USABLE:
                continue
            concepts = list(r.conclusionCode or [])
            qualifying = any(self.qualifying.match(c) is not None for c in concepts) or (
                self.qualifying.match_text([r.conclusion]) is not None
            )
            other = any(self.other_class.match(c) is not None for c in concepts) or (
                self.other_class.match_text([r.conclusion]) is not None
            )
            is_biopsy = self.biopsy.match(r.code) is not None
            if not (qualifying or other or is_biopsy):
                continue
            when = span(r.effectiveDateTime) if r.effectiveDateTime is not None else span(r.issued)
            if when is not None and when.earliest > ctx.as_of:
                continue
            out.append(_Report(f"DiagnosticReport/{r.id}", when.iso() if when else None, qualifying, other, is_biopsy))
        return out

    def evaluate(self, ctx: Context) -> Outcome:
        if (missing := _searched(ctx, "Condition")) is not None:
            return Outcome(UNKNOWN, "conditions not available", (missing,))
        reports = self._reports(ctx) if "DiagnosticReport" in ctx.record.searched else []
        coded = ctx.conditions(self.qualifying)
        if confirmed := _usable(coded):
            return Outcome(
                MET,
                f"{self.label} coded (an ISN/RPS class is a kidney biopsy finding)",
                tuple(c.evidence() for c in confirmed),
            )
        if qualifying_reports := [r for r in reports if r.qualifying and not r.other_class]:
            return Outcome(
                MET,
                f"kidney biopsy report concludes {self.label}",
                tuple(Evidence(r.ref, "kidney biopsy report naming a qualifying class", date=r.when)
                      for r in qualifying_reports),
            )  # fmt: skip
        if coded:
            return Outcome(
                UNKNOWN,
                f"{self.label} coded but not confirmed: needs review",
                tuple(c.evidence(flags=(Flag.NEEDS_REVIEW,)) for c in coded),
            )
        other = ctx.conditions(self.other_class)
        other_reports = [r for r in reports if r.other_class]
        if _usable(other) or other_reports:
            ev = tuple(c.evidence() for c in _usable(other)) + tuple(
                Evidence(r.ref, "kidney biopsy report naming another class", date=r.when) for r in other_reports
            )
            return Outcome(NOT_MET, "only ISN/RPS class I, II or VI lupus nephritis recorded", ev)
        nephritis = ctx.conditions(self.nephritis) + other
        if not nephritis:
            return Outcome(
                NOT_MET,
                "no lupus nephritis recorded",
                (Evidence("Condition", f"{ctx.record.count('Condition')} conditions searched, none match"),),
            )
        ln = _usable(nephritis)
        if not ln:
            return Outcome(
                UNKNOWN,
                "lupus nephritis coded but not confirmed: needs review",
                tuple(c.evidence(flags=(Flag.NEEDS_REVIEW,)) for c in nephritis),
            )
        biopsies: list[Evidence] = []
        if "Procedure" in ctx.record.searched:
            biopsies += [p.evidence((Flag.PROXY,)) for p in facts.procedures(ctx.record, self.biopsy, ctx.as_of)]
        biopsies += [
            Evidence(r.ref, "kidney biopsy report (no class coded)", date=r.when, flags=(Flag.PROXY,))
            for r in reports
            if r.biopsy
        ]
        ln_ev = tuple(c.evidence() for c in ln)
        if biopsies:
            return Outcome(
                MET,
                "lupus nephritis with a kidney biopsy on record and no class code saying otherwise "
                "(class to confirm from the biopsy)",
                ln_ev + tuple(biopsies),
            )
        if (missing := _searched(ctx, "Procedure")) is not None:
            return Outcome(
                UNKNOWN, "lupus nephritis coded; procedures not available to show a biopsy", (*ln_ev, missing)
            )
        return Outcome(
            UNKNOWN,
            "lupus nephritis coded without biopsy evidence (no class, no kidney biopsy on record)",
            tuple(replace(e, flags=(Flag.NEEDS_REVIEW,)) for e in ln_ev),
        )


# ---------------------------------------------------------------------------------------------
# A lab value inside a closed range
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabInRange:
    """Inclusion: the latest result of `analyte` within `days` lies in [low, high] (both ends
    included). Without any result, `derived_from` (serum creatinine) gives an eGFR by CKD-EPI 2021
    (flagged DERIVED) when sex and an exact birth date are known. Comparator values that straddle a
    limit, unusable results and disagreeing simultaneous results -> unknown."""

    analyte: Analyte
    low: float
    high: float
    days: int
    derived_from: Analyte | None = None

    def describe(self) -> str:
        return f"{fmt(self.low)} <= {self.analyte.name} <= {fmt(self.high)} {self.analyte.unit}"

    def _judge(self, value: facts.Interval) -> Status:
        above_low = value.test(">=", self.low)
        below_high = value.test("<=", self.high)
        if above_low is False or below_high is False:
            return NOT_MET
        if above_low and below_high:
            return MET
        return UNKNOWN

    def _outcome(self, lv: LabValue) -> Outcome:
        if lv.value is None:
            return Outcome(
                UNKNOWN,
                f"latest {self.analyte.name} is not usable ({lv.problem})",
                (lv.evidence(f"{self.analyte.name}: {lv.problem}"),),
            )
        desc = f"{self.analyte.name} {lv.value.text()} {self.analyte.unit}"
        status = self._judge(lv.value)
        verb = {MET: "within", NOT_MET: "outside", UNKNOWN: "cannot be placed against"}[status]
        return Outcome(status, f"{desc} on {lv.when} is {verb} {self.describe()}", (lv.evidence(desc),))

    def evaluate(self, ctx: Context) -> Outcome:
        if (missing := _searched(ctx, "Observation")) is not None:
            return Outcome(UNKNOWN, f"{self.analyte.name}: observations not available", (missing,))
        results = ctx.labs(self.analyte, self.days)
        if results:
            outcome = self._outcome(results[0])
            for tie in results[1:]:
                if tie.order_key != results[0].order_key:
                    break
                other = self._outcome(tie)
                if other.status is not outcome.status:
                    return Outcome(
                        UNKNOWN,
                        f"two {self.analyte.name} results at the same time disagree",
                        outcome.evidence + other.evidence,
                    )
            return outcome
        derived = self._derived(ctx) if self.derived_from is not None else None
        if derived is not None:
            return derived
        return Outcome(
            UNKNOWN,
            f"no {self.analyte.name} result in the last {self.days} days",
            (Evidence("Observation", f"no usable {self.analyte.name} result within {self.days} days"),),
        )

    def _derived(self, ctx: Context) -> Outcome | None:
        assert self.derived_from is not None
        derived = egfr_from_creatinine(ctx, self.derived_from, self.days)
        if derived is None:
            return None
        egfr, ev = derived
        status = self._judge(facts.Interval.point(egfr))
        verb = "within" if status is MET else "outside"
        return Outcome(status, f"derived eGFR {fmt(egfr)} on {ev.date} is {verb} {self.describe()}", (ev,))


# ---------------------------------------------------------------------------------------------
# Quiescent disease: SLEDAI-2K < threshold with no renal-domain points
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuiescentSledai:
    """Inclusion: SLEDAI-2K < `below` with no point in the renal domain.

    The total is the latest recorded SLEDAI-2K in the SLEDAI window (Observation, as
    `ClinicalSledai` reads it, or a QuestionnaireResponse total / item sum). The renal domain is
    read from the lab-derived SLEDAI-2K items (`sledai_items(..., domains={"renal"})`: casts,
    hematuria, proteinuria, pyuria):

    * total >= `below` -> not_met; a renal item met with no caveat (proteinuria) -> not_met;
    * total < `below` and every renal item evaluated and not met -> met;
    * a renal item met with a caveat (casts, hematuria, pyuria: exclude infection or stone) ->
      unknown; a renal item not tested (unknown) -> unknown (a total < `below` cannot show the
      renal domain is empty); no recorded total -> unknown.
    """

    score: ClinicalSledai  # the recorded total (score codes; threshold and serology unused)
    data: SledaiData
    below: int
    renal_domains: Collection[str] = ("renal",)

    def _total(self, ctx: Context) -> tuple[float, Evidence] | None:
        if "Observation" in ctx.record.searched:
            # serology_max 0 and threshold `below`: the recorded total itself decides the outcome
            recorded = self.score.recorded_outcome(ctx)
            if recorded is not None:
                ev = recorded.evidence[0]
                assert ev.value is not None
                return float(ev.value), ev
        if "QuestionnaireResponse" in ctx.record.searched:
            for form in questionnaire_scores(ctx, self.data, self.score.window_days):
                total = form.total
                if total is None and form.clinical is not None:
                    total = form.clinical + (form.serology or 0)
                if total is not None:
                    ev = Evidence(form.ref, "SLEDAI-2K questionnaire total", value=fmt(total), unit="{score}",
                                  date=form.when.isoformat())  # fmt: skip
                    return total, ev
        return None

    def evaluate(self, ctx: Context) -> Outcome:
        if (missing := _searched(ctx, "Observation")) is not None:
            return Outcome(UNKNOWN, "observations not available", (missing,))
        window = self.score.window_days
        items = sledai_items(ctx, self.data, window, domains=self.renal_domains)
        met = [i for i in items if i.status is MET]
        hard = [i for i in met if "to verify" not in i.reason]
        untested = [i for i in items if i.status is UNKNOWN]
        recorded = self._total(ctx)
        item_ev = tuple(e for i in met for e in i.evidence)
        if recorded is not None and recorded[0] >= self.below:
            total, ev = recorded
            return Outcome(NOT_MET, f"SLEDAI-2K {fmt(total)} >= {self.below}: not quiescent", (ev,), items)
        if hard:
            return Outcome(
                NOT_MET,
                "renal-domain SLEDAI-2K points: " + "; ".join(f"{i.id} ({i.reason})" for i in hard),
                item_ev,
                items,
            )
        if met:
            return Outcome(
                UNKNOWN,
                "renal-domain item found that may have another cause: " + "; ".join(i.reason for i in met),
                item_ev,
                items,
            )
        if recorded is None:
            return Outcome(
                UNKNOWN,
                f"no SLEDAI-2K total recorded in the last {window} days",
                (Evidence("Observation", "no SLEDAI-2K score observation or questionnaire"),),
                items,
            )
        total, ev = recorded
        if untested:
            return Outcome(
                UNKNOWN,
                f"SLEDAI-2K {fmt(total)} < {self.below}, but renal-domain items not tested in {window} days: "
                + ", ".join(i.id for i in untested),
                (ev,),
                items,
            )
        return Outcome(
            MET,
            f"SLEDAI-2K {fmt(total)} < {self.below} and no renal-domain item (casts, hematuria, proteinuria, "
            f"pyuria) in {window} days",
            (ev, *(e for i in items for e in i.evidence)),
            items,
        )


# ---------------------------------------------------------------------------------------------
# A maintenance regimen: steroid dose range, optional companion under a cap, nothing else
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaintenanceRegimen:
    """Inclusion: `steroids` (oral) at a total of `min_mg`-`max_mg` mg/day, alone or with at most
    one of `companions` (each under its cap), every dose unchanged for `days`.

    No steroid in the window -> not_met when the medication list is current, else unknown. A drug
    of `forbidden` (any other immunosuppressant) in the window -> not_met; of `review` (a drug the
    protocol may accept as equivalent, e.g. mycophenolic acid, another glucocorticoid) -> unknown.
    Stability (unchanged dose, started before the window, no gap) is `StableRegimen`'s.
    """

    steroids: tuple[Drug, ...]
    min_mg: float
    max_mg: float
    companions: tuple[DoseCap, ...]
    forbidden: tuple[Drug, ...]
    review: tuple[Drug, ...]
    days: int
    label: str

    def _window(self, ctx: Context, drugs: tuple[Drug, ...], routes: frozenset[RouteClass]) -> list[Exposure]:
        start = ctx.as_of - timedelta(days=self.days)
        out = []
        for exp in ctx.exposures(drugs):
            if exp.route in routes and exp.overlaps(start, ctx.as_of, ctx.policy.max_undated_course_days) is not False:
                out.append(exp)
        return out

    def evaluate(self, ctx: Context) -> Outcome:
        oral = frozenset({RouteClass.ORAL})
        systemic = SYSTEMIC_ROUTES | {RouteClass.UNKNOWN}
        steroid_exposures = self._window(ctx, self.steroids, oral | {RouteClass.UNKNOWN})
        current, list_ev = ctx.med_list_current()
        if not steroid_exposures:
            if current:
                return Outcome(NOT_MET, f"no {self.steroids[0].name} or {self.steroids[1].name} in the last "
                                        f"{self.days} days", (list_ev,))  # fmt: skip
            return Outcome(UNKNOWN, f"{self.label}: medication list not current", (list_ev,))
        fails: list[str] = []
        unknowns: list[str] = []
        evidence: list[Evidence] = []

        forbidden = DrugExposure(self.forbidden, "other immunosuppressant", self.days, systemic).evaluate(ctx)
        if forbidden.status is MET:
            fails.append(forbidden.reason)
            evidence += forbidden.evidence
        elif forbidden.status is UNKNOWN:
            unknowns.append(forbidden.reason)
            evidence += forbidden.evidence
        if self.review:
            review = DrugExposure(self.review, "drug the protocol may or may not accept", self.days, systemic)
            rv = review.evaluate(ctx)
            if rv.status is not NOT_MET:
                unknowns.append(rv.reason + " (needs review)")
                evidence += [replace(e, flags=(*e.flags, Flag.NEEDS_REVIEW)) for e in rv.evidence]

        companion_drugs = tuple(d for cap in self.companions for d in cap.drugs)
        taken = {e.drug.name for e in self._window(ctx, companion_drugs, systemic)}
        if len(taken) > 1:
            fails.append(f"more than one of {', '.join(sorted(taken))}: not a listed regimen")

        steroid = StableRegimen(self.steroids, "glucocorticoid", self.days, oral | {RouteClass.UNKNOWN},
                                total_cap=self.max_mg).evaluate(ctx)  # fmt: skip
        companions = StableRegimen(companion_drugs, "MMF/AZA", self.days, systemic, caps=self.companions).evaluate(ctx)
        for part in (steroid, companions):
            if part.status is NOT_MET:
                fails.append(part.reason)
            elif part.status is UNKNOWN:
                unknowns.append(part.reason)
            evidence += [e for e in part.evidence if e not in evidence]

        doses = [e.daily_mg for e in steroid_exposures if e.ongoing or (e.end is not None and e.end >= ctx.as_of)]
        if doses and all(d is not None for d in doses):
            total_low = sum(d[0] * 1.0 for d in doses if d is not None)
            if total_low < self.min_mg - 1e-9:
                fails.append(f"glucocorticoid {fmt(total_low)} mg/day < {fmt(self.min_mg)} mg/day")
        elif not doses and not fails:
            unknowns.append("glucocorticoid not taken on the as-of date or its stop date is unrecorded")

        if fails:
            return Outcome(NOT_MET, f"{self.label} not met: " + "; ".join(fails), tuple(evidence))
        if unknowns:
            return Outcome(UNKNOWN, f"{self.label}: " + "; ".join(unknowns), tuple(evidence))
        return Outcome(
            MET,
            f"{self.label}: {steroid.reason}; {companions.reason}",
            tuple(evidence),
        )


# ---------------------------------------------------------------------------------------------
# Stage 5 CKD / ESKD on renal replacement therapy
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenalReplacement:
    """Exclusion: stage 5 CKD or ESKD on renal replacement therapy.

    met: a kidney transplant (status code or procedure, ever), a dialysis status code that is
    active, or a dialysis procedure within `recent_days`. unknown: a stage 5 / ESKD code without
    RRT evidence (the eGFR inclusion decides stage 5 by value); dialysis only longer ago (acute
    dialysis that may have ended); unconfirmed codes. not_met: none of these, with Conditions and
    Procedures searched.
    """

    ckd5: ValueSet
    dialysis_status: ValueSet
    transplant_status: ValueSet
    dialysis_procedures: ValueSet
    transplant_procedures: ValueSet
    recent_days: int

    def evaluate(self, ctx: Context) -> Outcome:
        met: list[Evidence] = []
        review: list[Evidence] = []
        reasons: list[str] = []
        if "Condition" in ctx.record.searched:
            transplant = ctx.conditions(self.transplant_status)
            dialysis = ctx.conditions(self.dialysis_status)
            met += [c.evidence() for c in _usable(transplant)]
            met += [c.evidence() for c in _usable(dialysis) if c.active]
            review += [c.evidence(flags=(Flag.NEEDS_REVIEW,)) for c in transplant + dialysis if c.unconfirmed]
            review += [c.evidence(flags=(Flag.NEEDS_REVIEW,)) for c in _usable(dialysis) if not c.active]
            ckd5 = ctx.conditions(self.ckd5)
            if ckd5:
                reasons.append("stage 5 CKD / ESKD coded without renal replacement therapy on record")
                review += [c.evidence(flags=(Flag.NEEDS_REVIEW,)) for c in ckd5]
        if "Procedure" in ctx.record.searched:
            met += [p.evidence() for p in facts.procedures(ctx.record, self.transplant_procedures, ctx.as_of)]
            start = ctx.as_of - timedelta(days=self.recent_days)
            for p in facts.procedures(ctx.record, self.dialysis_procedures, ctx.as_of):
                if p.when is not None and p.when.latest >= start:
                    met.append(p.evidence())
                else:
                    reasons.append(f"dialysis more than {self.recent_days} days ago (or undated): ongoing?")
                    review.append(p.evidence((Flag.NEEDS_REVIEW,)))
        if met:
            return Outcome(MET, "renal replacement therapy (dialysis or kidney transplant) recorded", tuple(met))
        if review:
            reason = "; ".join(dict.fromkeys(reasons)) or "renal replacement therapy coded but not confirmed"
            return Outcome(UNKNOWN, reason + ": needs review", tuple(review))
        if (missing := _searched(ctx, "Condition", "Procedure")) is not None:
            return Outcome(UNKNOWN, "cannot rule out renal replacement therapy: data not available", (missing,))
        return Outcome(
            NOT_MET,
            "no stage 5 CKD, ESKD, dialysis or kidney transplant recorded",
            (Evidence("Condition/Procedure", "searched Condition, Procedure: no matching record"),),
        )


# ---------------------------------------------------------------------------------------------
# Frequent infections: distinct episodes counted within windows
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecurrentInfection:
    """Exclusion: frequent infections, read as the standard recurrent-infection definition: at least
    `count` episodes within `days` for each (count, days) of `thresholds` (e.g. >= 2 in 183 days
    or >= 3 in 365 days).

    Episodes are distinct usable `infections` Condition onsets, and courses of `treatments` whose
    reasonCode is in `infections` (or whose reasonReference is such a Condition); events starting
    within `episode_days` of an episode's first event are the same episode. A `recurrent` code
    (e.g. "recurrent UTI") -> met. Unconfirmed or undated records that could reach a threshold, or a
    `history` code (personal history, uncounted) -> unknown.
    """

    infections: ValueSet
    treatments: tuple[Drug, ...]
    thresholds: tuple[tuple[int, int], ...]
    label: str
    recurrent: ValueSet | None = None
    history: ValueSet | None = None
    episode_days: int = 14

    @property
    def lookback(self) -> int:
        return max(days for _, days in self.thresholds)

    def _episodes(self, dates: list[date]) -> list[date]:
        starts: list[date] = []
        for d in sorted(dates):
            if not starts or (d - starts[-1]).days > self.episode_days:
                starts.append(d)
        return starts

    def _reached(self, episodes: list[date], as_of: date) -> tuple[int, int] | None:
        for count, days in self.thresholds:
            if sum(1 for d in episodes if as_of - timedelta(days=days) <= d <= as_of) >= count:
                return count, days
        return None

    def evaluate(self, ctx: Context) -> Outcome:
        if (missing := _searched(ctx, "Condition")) is not None:
            return Outcome(UNKNOWN, f"cannot count {self.label}: conditions not available", (missing,))
        if self.recurrent is not None:
            coded = ctx.conditions(self.recurrent)
            if _usable(coded):
                return Outcome(MET, f"recurrent {self.label} coded", tuple(c.evidence() for c in _usable(coded)))
        start = ctx.as_of - timedelta(days=self.lookback)
        conds = ctx.conditions(self.infections)
        certain: list[tuple[date, Evidence]] = []
        possible: list[tuple[date, Evidence]] = []
        undated: list[Evidence] = []
        refs = {c.ref for c in conds}
        for c in conds:
            when = c.onset or c.recorded
            if when is None:
                undated.append(c.evidence(flags=(Flag.NEEDS_REVIEW,)))
                continue
            if when.latest < start:
                continue
            (possible if c.unconfirmed or not when.exact else certain).append((when.latest, c.evidence()))
        for exp in ctx.exposures(self.treatments):
            begin = exp.start or exp.anchor
            if begin < start or begin > ctx.as_of:
                continue
            for_infection = any(self.infections.match(rc) is not None for rc in exp.reason_codes) or any(
                f"Condition/{r.rsplit('/', 1)[-1]}" in refs for r in exp.reason_refs
            )
            if for_infection:
                certain.append((begin, exp.evidence(f"treatment course for {self.label}")))
        episodes = self._episodes([d for d, _ in certain])
        ev = tuple(e for _, e in sorted(certain, key=lambda t: t[0]))
        rule = " or ".join(f">= {n} in {d} days" for n, d in self.thresholds)
        if (hit := self._reached(episodes, ctx.as_of)) is not None:
            return Outcome(MET, f"{hit[0]} or more {self.label} episodes within {hit[1]} days ({rule})", ev)
        widened = self._episodes([d for d, _ in certain + possible])
        review = tuple(e for _, e in possible) + tuple(undated)
        history = ctx.conditions(self.history) if self.history is not None else []
        if self._reached(widened, ctx.as_of) is not None or undated:
            return Outcome(
                UNKNOWN,
                f"unconfirmed or undated {self.label} records could reach the threshold ({rule}): needs review",
                ev + review,
            )
        if history:
            return Outcome(
                UNKNOWN,
                f"personal history of {self.label} (not dated or counted): needs review",
                ev + tuple(c.evidence(flags=(Flag.NEEDS_REVIEW,)) for c in history),
            )
        if not ctx.record.has_searched_any(*MEDICATION_TYPES):
            return Outcome(
                UNKNOWN,
                f"{len(episodes)} {self.label} episode(s) coded; treatment courses not available to count",
                ev + (Evidence("MedicationStatement/MedicationRequest", "medication data not available"),),
            )
        counts = ", ".join(
            f"{sum(1 for d in episodes if d >= ctx.as_of - timedelta(days=days))} in {days} days"
            for _, days in self.thresholds
        )
        return Outcome(
            NOT_MET,
            f"{self.label} episodes below the threshold ({counts}; frequent = {rule})",
            ev or (Evidence("Condition", f"no {self.label} within {self.lookback} days"),),
        )


# ---------------------------------------------------------------------------------------------
# What each rule reads
# ---------------------------------------------------------------------------------------------


def _types(*types: str) -> tuple[Read, ...]:
    return tuple(Read(t) for t in types)


@reads.register
def _(rule: BiopsyProvenLupusNephritis, policy: Policy) -> tuple[Read, ...]:
    # reports: by code (a kidney biopsy) or by a class in their conclusion (codes or text)
    return (*_types("Patient"), *matching(rule, "Condition", "Procedure", "DiagnosticReport"))


@reads.register
def _(rule: LabInRange, policy: Policy) -> tuple[Read, ...]:
    analytes = (rule.analyte,) if rule.derived_from is None else (rule.analyte, rule.derived_from)
    return (*_types("Patient"), *labs(analytes, rule.days, policy))


@reads.register
def _(rule: QuiescentSledai, policy: Policy) -> tuple[Read, ...]:
    days = rule.score.window_days
    score = rule.score.score | ValueSet.of("SLEDAI-2K site codes", policy.sledai_local_codes)
    d = rule.data
    renal = (d.urine_rbc, d.urine_wbc, d.protein_24h, d.upcr)
    casts = Read("Observation", codes=d.rbc_casts.codes.codes, lookback_days=days)
    form = Read("QuestionnaireResponse", lookback_days=days)  # a SLEDAI-2K form's total
    return (observations(score, days, policy), casts, *labs(renal, days, policy), form)


@reads.register
def _(rule: MaintenanceRegimen, policy: Policy) -> tuple[Read, ...]:
    return medications(rule)


@reads.register
def _(rule: RenalReplacement, policy: Policy) -> tuple[Read, ...]:
    return matching(rule, "Condition", "Procedure")


@reads.register
def _(rule: RecurrentInfection, policy: Policy) -> tuple[Read, ...]:
    return (*matching(rule, "Condition"), *medications(rule))


RULE_TYPES: tuple[type[Any], ...] = (
    BiopsyProvenLupusNephritis,
    LabInRange,
    QuiescentSledai,
    MaintenanceRegimen,
    RenalReplacement,
    RecurrentInfection,
)
