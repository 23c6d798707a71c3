"""Clinical SLEDAI-2K lower bound from labs and vitals (Gladman et al., J Rheumatol 2002).

Seven SLEDAI-2K descriptors can be read from results inside the SLEDAI window
(`Policy.sledai_window_days`, ending on the as-of date, both ends included):

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

`sledai_items(..., domains={"renal"})` gives a renal-domain-only view (e.g. a "no renal-domain
points" criterion).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from cds.engine import items as it
from cds.engine.definition import Analyte, ValueSet
from cds.engine.facts import fmt
from cds.engine.model import Evidence, Flag, ItemResult, Status
from cds.engine.rules import ClinicalSledai, Context, Outcome
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


def sledai_items(ctx: Context, d: SledaiData, domains: Collection[str] | None = None) -> tuple[ItemResult, ...]:
    """The lab-derivable SLEDAI-2K items in the SLEDAI window, with points and domain.

    `domains`: only items of these domains (e.g. {"renal"}); None: all seven.
    """
    every: tuple[ItemResult, ...] = ctx.cached(("sledai-items", id(d)), lambda: _items(ctx, d))
    return every if domains is None else tuple(i for i in every if i.group in domains)


def _items(ctx: Context, d: SledaiData) -> tuple[ItemResult, ...]:
    days = ctx.policy.sledai_window_days

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


def questionnaire_scores(ctx: Context, d: SledaiData) -> list[QuestionnaireScore]:
    """Completed SLEDAI-2K QuestionnaireResponses authored in the SLEDAI window, newest first."""
    days = ctx.policy.sledai_window_days
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
    out.sort(key=lambda q: q.when, reverse=True)
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
            forms = questionnaire_scores(ctx, self.data)
            recorded = self._from_form(ctx, forms[0], threshold) if forms else None
        if recorded is not None and recorded.status is not UNKNOWN:
            return recorded  # the recorded score settles it (the clinician's score wins over the labs)
        items = sledai_items(ctx, self.data)
        low, high = points(items)
        if recorded is not None:
            if low >= threshold:
                return Outcome(
                    MET, f"{recorded.reason}; lab-derived clinical SLEDAI-2K >= {low}", recorded.evidence, items
                )
            return Outcome(recorded.status, recorded.reason, recorded.evidence, items)
        window = ctx.policy.sledai_window_days
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
