"""Clinical SLEDAI-2K lower bound from labs and vitals (Gladman et al., J Rheumatol 2002).

`ClinicalSledai` reads a recorded SLEDAI-2K total; `DerivedClinicalSledai` falls back on seven
SLEDAI-2K descriptors that can be read from results inside the SLEDAI window (the rule's
`window_days`, ending on the as-of date, both ends included):

=====================  ======  ===============  =========================================
descriptor             points  domain           read as
=====================  ======  ===============  =========================================
urinary casts             4    renal            RBC casts (/HPF > 0, or positive)
hematuria                 4    renal            urine sediment RBC > 5 /HPF
proteinuria               4    renal            24-h protein > 500 mg/24 h, or UPCR > 500 mg/g
pyuria                    4    renal            urine sediment WBC > 5 /HPF
thrombocytopenia          1    hematologic      platelets < 100 x10^9/L
leukopenia                1    hematologic      WBC < 3 x10^9/L
fever                     1    constitutional   body temperature > 38 Cel
=====================  ======  ===============  =========================================

UPCR maps to g/24 h by the usual spot-urine convention: X mg protein per g creatinine ~ X mg per
24 h (about 1 g creatinine is excreted a day), so "> 0.5 g/24 h" is UPCR > 500 mg/g (56.5 mg/mmol:
results in mg/mmol are converted with creatinine's molar mass). Anti-dsDNA and complement are
excluded, as the trial's clinical SLEDAI says. The sum of met items is a LOWER BOUND on the clinical
SLEDAI-2K: the other 17 clinical descriptors (seizure, rash, arthritis, ...) need examination.
Each met renal or hematologic item carries its SLEDAI caveat ("exclude infection or stone",
"exclude drug causes") as something to verify.

`sledai_items(ctx, data, window_days, domains={"renal"})` gives a renal-domain-only view (e.g. a "no renal-domain
points" criterion).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cds.engine import facts, observations
from cds.engine import items as it
from cds.engine.definition import Analyte, Policy, ValueSet
from cds.engine.facts import fmt
from cds.engine.model import Evidence, Flag, ItemResult, Status
from cds.engine.reads import Read, labs, observation_codes_of, reads
from cds.engine.reads import observations as observation_reads
from cds.engine.rules import Context, Outcome, missing_types
from cds.engine.timeutil import span

MET, NOT_MET, UNKNOWN = Status.MET, Status.NOT_MET, Status.UNKNOWN
RENAL, HEMATOLOGIC, CONSTITUTIONAL = "renal", "hematologic", "constitutional"


@dataclass(frozen=True)
class SledaiData:
    """The trial's codes for the lab-derivable descriptors (see `cds.trials.nct04582136.sle_items`)."""

    rbc_casts: it.RangeTest
    urine_rbc: Analyte  # /[HPF]
    urine_wbc: Analyte  # /[HPF]
    protein_24h: Analyte  # mg/(24.h)
    upcr: Analyte  # mg/g
    platelets: Analyte  # 10*9/L
    wbc: Analyte  # 10*9/L
    temperature: Analyte  # Cel
    questionnaire: ValueSet  # Questionnaire canonical URLs / codes of a SLEDAI-2K form
    serology_item: re.Pattern[str]  # QuestionnaireResponse items that are the two serology items


_URINE_CAVEAT = "exclude infection or stone"
_DRUG_CAVEAT = "exclude drug causes"


def sledai_items(
    ctx: Context, d: SledaiData, window_days: int, domains: Collection[str] | None = None
) -> tuple[ItemResult, ...]:
    """The lab-derivable SLEDAI-2K items in the last `window_days` days, with points and domain.

    `domains`: only items of these domains (e.g. {"renal"}); None: all seven.
    """
    every: tuple[ItemResult, ...] = ctx.cached(
        ("sledai-items", id(d), window_days), lambda: _items(ctx, d, window_days)
    )
    return every if domains is None else tuple(i for i in every if i.group in domains)


def _items(ctx: Context, d: SledaiData, days: int) -> tuple[ItemResult, ...]:

    def item(id_: str, label: str, group: str, points: int, judged: tuple[Status, str, tuple[Evidence, ...]],
             caveat: str = "") -> ItemResult:  # fmt: skip
        status, reason, ev = judged
        if status is MET and caveat:
            reason = f"{reason} ({caveat}: to verify)"
            ev = tuple(replace(e, flags=tuple(dict.fromkeys((*e.flags, Flag.NEEDS_REVIEW)))) for e in ev)
        return ItemResult(id_, label, group, status, reason, ev, points)

    return (
        item("urinary-casts", "urinary casts (heme-granular or RBC)", RENAL, 4,
             it.judge_out_of_range(ctx, (d.rbc_casts,), days), _URINE_CAVEAT),
        item("hematuria", "hematuria > 5 RBC/HPF", RENAL, 4,
             it.judge_threshold(ctx, (d.urine_rbc,), ">", 5, days), _URINE_CAVEAT),
        item("proteinuria", "proteinuria > 0.5 g/24 h (24-h protein, or UPCR > 500 mg/g)", RENAL, 4,
             it.any_measure((it.judge_threshold(ctx, (d.protein_24h,), ">", 500, days),
                             it.judge_threshold(ctx, (d.upcr,), ">", 500, days)))),
        item("pyuria", "pyuria > 5 WBC/HPF", RENAL, 4,
             it.judge_threshold(ctx, (d.urine_wbc,), ">", 5, days), "exclude infection"),
        item("thrombocytopenia", "thrombocytopenia < 100 x10^9/L", HEMATOLOGIC, 1,
             it.judge_threshold(ctx, (d.platelets,), "<", 100, days), _DRUG_CAVEAT),
        item("leukopenia", "leukopenia < 3 x10^9/L", HEMATOLOGIC, 1,
             it.judge_threshold(ctx, (d.wbc,), "<", 3, days), _DRUG_CAVEAT),
        item("fever", "fever > 38 Cel", CONSTITUTIONAL, 1,
             it.judge_threshold(ctx, (d.temperature,), ">", 38, days), "exclude infection"),
    )  # fmt: skip


def points(items: tuple[ItemResult, ...]) -> tuple[int, int]:
    """(lower bound, upper bound) of the items' points: met items; met plus unknown items."""
    low = sum(i.points or 0 for i in items if i.status is MET)
    high = low + sum(i.points or 0 for i in items if i.status is UNKNOWN)
    return low, high


# ---------------------------------------------------------------------------------------------
# A SLEDAI-2K recorded as a QuestionnaireResponse (item scores, or a total)
# ---------------------------------------------------------------------------------------------

_QR_USABLE = frozenset({"completed", "amended"})
_TOTAL = re.compile(r"\btotal\b", re.I)


@dataclass(frozen=True, slots=True)
class QuestionnaireScore:
    ref: str
    when: date
    total: float | None  # the recorded total, when the form has one
    clinical: float | None  # sum of the item scores other than the serology items, when itemised
    serology: float | None


def _answer_number(item: Any) -> float | None:
    for a in item.answer or []:
        for attr in ("valueInteger", "valueDecimal"):
            v = getattr(a, attr, None)
            if v is not None and not isinstance(v, bool):
                return float(v)
        coding = getattr(a, "valueCoding", None)
        if coding is not None and coding.code is not None and re.fullmatch(r"\d+", str(coding.code)):
            return float(coding.code)
    return None


def _leaves(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for i in items or []:
        if i.item:
            out += _leaves(i.item)
        else:
            out.append(i)
    return out


def questionnaire_scores(ctx: Context, d: SledaiData, days: int) -> list[QuestionnaireScore]:
    """Completed SLEDAI-2K QuestionnaireResponses authored in the last `days` days, newest first."""
    start = it.window_start(ctx, days)
    out: list[QuestionnaireScore] = []
    for qr in ctx.record.of("QuestionnaireResponse"):
        if qr.status not in _QR_USABLE or not _is_sledai(qr, d):
            continue
        authored = span(qr.authored)
        if authored is None or authored.latest > ctx.as_of or authored.latest < start:
            continue
        total = clinical = serology = None
        for leaf in _leaves(qr.item or []):
            value = _answer_number(leaf)
            if value is None:
                continue
            name = f"{leaf.linkId or ''} {leaf.text or ''}"
            if _TOTAL.search(name):
                total = value
            elif d.serology_item.search(name):
                serology = (serology or 0) + value
            else:
                clinical = (clinical or 0) + value
        out.append(QuestionnaireScore(f"QuestionnaireResponse/{qr.id}", authored.latest, total, clinical, serology))
    out.sort(key=lambda q: (q.when, q.ref), reverse=True)  # ties by reference: order-independent
    return out


def _is_sledai(qr: Any, d: SledaiData) -> bool:
    q = str(qr.questionnaire or "")
    if any(code == q or q.startswith(code + "|") for _, code in d.questionnaire.codes):
        return True
    return d.questionnaire.match_text([q]) is not None


# ---------------------------------------------------------------------------------------------
# The criterion: clinical SLEDAI-2K >= threshold
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClinicalSledai:
    """Clinical SLEDAI-2K (total minus the anti-dsDNA and low-complement items) >= threshold.

    Reads a recorded SLEDAI-2K total. The two serology items add at most `serology_max` points:
    total >= threshold + serology_max -> met; total < threshold -> not_met; in between, the
    serology points are computed from dsDNA (above the lab's ULN) and C3/C4 (below LLN) in the
    window (`window_days`, ending on the as-of date); if they cannot be determined -> unknown. Site
    codes for the total: `Policy.sledai_local_codes`.
    """

    score: ValueSet
    threshold: int
    serology_max: int
    dsdna: tuple[Analyte, ...]
    complement: tuple[Analyte, ...]
    window_days: int  # the SLEDAI-2K window: a total, and the labs behind its serology points

    def _scores(self, ctx: Context) -> list[tuple[str, date, float, str]]:
        days = self.window_days
        local = ValueSet.of("SLEDAI local", ctx.policy.sledai_local_codes)
        out: list[tuple[str, date, float, str, tuple[date, datetime] | None]] = []
        for o in ctx.record.of("Observation"):
            if o.status not in ("final", "amended", "corrected"):
                continue
            if self.score.match(o.code) is None and local.match(o.code) is None:
                continue
            when = facts.obs_date(o)
            if when is None or when > ctx.as_of or when < ctx.as_of - timedelta(days=days):
                continue
            raw = observations.read_value(o)
            if raw.number is None or raw.comparator or raw.titre:
                continue
            out.append((f"Observation/{o.id}", when, raw.number, raw.text, facts.obs_time(o)))
        # latest first; ties (same instant) by reference, so the record's order never decides
        out.sort(key=lambda t: (t[4] or (t[1], datetime.min.replace(tzinfo=UTC)), t[0]), reverse=True)
        return [(ref, when, value, text) for ref, when, value, text, _ in out]

    def _serology_points(self, ctx: Context) -> tuple[int, int, list[Evidence]]:
        """(min, max) points the serology items can contribute, with the evidence used."""
        days = self.window_days
        low = high = 0
        ev: list[Evidence] = []
        for analytes, op, item_points in ((self.dsdna, ">", 2), (self.complement, "<", 2)):
            decided: list[bool | None] = []
            for analyte in analytes:
                results = ctx.labs(analyte, days)
                if not results or results[0].value is None:
                    continue
                lv = results[0]
                limit = lv.uln if op == ">" else lv.lln
                assumed = lv.uln_assumed if op == ">" else lv.lln_assumed
                if limit is None or assumed:
                    decided.append(None)  # "above the lab's normal range" needs the lab's own range
                    ev.append(lv.evidence(f"{analyte.name}: no laboratory reference range"))
                    continue
                assert lv.value is not None
                decided.append(lv.value.test(op, limit))
                ev.append(lv.evidence(f"{analyte.name} vs reference {'ULN' if op == '>' else 'LLN'} {fmt(limit)}"))
            if True in decided:
                low += item_points
                high += item_points
            elif not decided or None in decided:
                high += item_points  # not measured or undecidable: 0 or all of the item's points
        return low, high, ev

    def evaluate(self, ctx: Context) -> Outcome:
        if (missing := missing_types(ctx, "Observation")) is not None:
            return Outcome(UNKNOWN, "observations not available", (missing,))
        recorded = self.recorded_outcome(ctx)
        if recorded is None:
            return Outcome(
                UNKNOWN,
                f"no SLEDAI-2K total recorded in the last {self.window_days} days",
                (Evidence("Observation", "no SLEDAI-2K score observation"),),
            )
        return recorded

    def recorded_outcome(self, ctx: Context) -> Outcome | None:
        """The criterion from the latest SLEDAI-2K total Observation in the window; None: no total."""
        scores = self._scores(ctx)
        if not scores:
            return None
        ref, when, total, original = scores[0]
        ev = Evidence(
            ref, "SLEDAI-2K total", value=fmt(total), unit="{score}", date=when.isoformat(), original=original
        )
        return self.judge_total(ctx, ev, total)

    def judge_total(self, ctx: Context, ev: Evidence, total: float) -> Outcome:
        """The criterion from a recorded SLEDAI-2K total (`ev` names where it was recorded)."""
        if total >= self.threshold + self.serology_max:
            return Outcome(
                MET,
                f"SLEDAI-2K {fmt(total)} >= {self.threshold + self.serology_max}: clinical score >= "
                f"{self.threshold} whatever the serology items",
                (ev,),
            )
        if total < self.threshold:
            return Outcome(NOT_MET, f"SLEDAI-2K {fmt(total)} < {self.threshold}", (ev,))
        low, high, sev = self._serology_points(ctx)
        ev_all = (ev, *sev)
        best, worst = total - low, total - high
        if worst >= self.threshold:
            return Outcome(MET, f"clinical SLEDAI-2K >= {fmt(worst)} (total {fmt(total)} - {high} serology)", ev_all)
        if best < self.threshold:
            return Outcome(
                NOT_MET,
                f"clinical SLEDAI-2K {fmt(best)} (total {fmt(total)} - {low} serology) < {self.threshold}",
                ev_all,
            )
        return Outcome(
            UNKNOWN,
            f"SLEDAI-2K {fmt(total)}: clinical score {fmt(worst)}-{fmt(best)} depending on serology points "
            "that cannot be determined",
            ev_all,
        )


@dataclass(frozen=True)
class DerivedClinicalSledai:
    """Clinical SLEDAI-2K >= threshold: a recorded total first (Observation, as `ClinicalSledai`
    reads it, or a QuestionnaireResponse), else the lab-derived lower bound.

    With no recorded total: lower bound >= threshold -> met (DERIVED; the renal and hematologic
    caveats shown as to verify); below -> unknown (the descriptors that need examination are not in
    the chart). The lab-derived items are shown with every result.
    """

    recorded: ClinicalSledai
    data: SledaiData

    def evaluate(self, ctx: Context) -> Outcome:
        if "Observation" not in ctx.record.searched and "QuestionnaireResponse" not in ctx.record.searched:
            return self.recorded.evaluate(ctx)
        threshold = self.recorded.threshold
        recorded = self.recorded.recorded_outcome(ctx) if "Observation" in ctx.record.searched else None
        if recorded is None and "QuestionnaireResponse" in ctx.record.searched:
            forms = questionnaire_scores(ctx, self.data, self.recorded.window_days)
            recorded = self._from_form(ctx, forms[0], threshold) if forms else None
        if recorded is not None and recorded.status is not UNKNOWN:
            return recorded  # the recorded score settles it (the clinician's score wins over the labs)
        items = sledai_items(ctx, self.data, self.recorded.window_days)
        low, high = points(items)
        if recorded is not None:
            if low >= threshold:
                return Outcome(
                    MET, f"{recorded.reason}; lab-derived clinical SLEDAI-2K >= {low}", recorded.evidence, items
                )
            return Outcome(recorded.status, recorded.reason, recorded.evidence, items)
        window = self.recorded.window_days
        found = [i for i in items if i.status is MET]
        if low >= threshold:
            ev = tuple(
                replace(e, flags=tuple(dict.fromkeys((*e.flags, Flag.DERIVED)))) for i in found for e in i.evidence
            )
            caveats = "; ".join(
                sorted({i.reason.rsplit("(", 1)[-1].rstrip(")") for i in found if "to verify" in i.reason})
            )
            return Outcome(
                MET,
                f"no SLEDAI-2K total recorded in {window} days; lab-derived clinical SLEDAI-2K >= {low} "
                f"({', '.join(f'{i.id} {i.points}' for i in found)})" + (f"; {caveats}" if caveats else ""),
                ev,
                items,
            )
        return Outcome(
            UNKNOWN,
            f"no SLEDAI-2K total recorded in {window} days; lab-derived clinical SLEDAI-2K lower bound {low} "
            f"(lab items up to {high}); the other descriptors need examination",
            (Evidence("Observation", "no SLEDAI-2K score observation or questionnaire"),),
            items,
        )

    def _from_form(self, ctx: Context, form: QuestionnaireScore, threshold: int) -> Outcome | None:
        ev = Evidence(form.ref, "SLEDAI-2K questionnaire", date=form.when.isoformat())
        if form.clinical is not None:
            clinical = form.clinical
            ev = replace(ev, description="SLEDAI-2K questionnaire item scores (serology items excluded)",
                         value=fmt(clinical), unit="{score}")  # fmt: skip
            if clinical >= threshold:
                return Outcome(MET, f"clinical SLEDAI-2K {fmt(clinical)} >= {threshold} (questionnaire items)", (ev,))
            return Outcome(NOT_MET, f"clinical SLEDAI-2K {fmt(clinical)} < {threshold} (questionnaire items)", (ev,))
        if form.total is not None:
            return self.recorded.judge_total(ctx, replace(ev, value=fmt(form.total), unit="{score}"), form.total)
        return None


# ---------------------------------------------------------------------------------------------
# What the SLEDAI-2K rules read (see `cds.engine.reads`)
# ---------------------------------------------------------------------------------------------


@reads.register
def _(rule: ClinicalSledai, policy: Policy) -> tuple[Read, ...]:
    days = rule.window_days
    score = rule.score | ValueSet.of("SLEDAI-2K site codes", policy.sledai_local_codes)
    return (observation_reads(score, days, policy), *labs((*rule.dsdna, *rule.complement), days, policy))


@reads.register
def _(rule: DerivedClinicalSledai, policy: Policy) -> tuple[Read, ...]:
    days = rule.recorded.window_days
    window = Read("Observation", codes=observation_codes_of(rule.data), lookback_days=days)
    # a recorded total may also be a SLEDAI-2K form (`questionnaire_scores`)
    return (*reads(rule.recorded, policy), window, Read("QuestionnaireResponse", lookback_days=days))
