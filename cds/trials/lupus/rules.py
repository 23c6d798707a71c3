"""Lupus rules shared by the lupus trials: serological activity and severe lupus nephritis.

Windows and thresholds are constructor parameters set by each trial definition; what each rule
reads is registered below (`cds.engine.reads`), so the trial derives its Observation look-back,
prefetch and queries from them. SLEDAI-2K is in `cds.trials.lupus.sledai`, SLICC 2012 in
`cds.trials.lupus.slicc`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cds.engine.definition import Analyte, Policy
from cds.engine.facts import fmt
from cds.engine.model import Status
from cds.engine.reads import Read, labs, reads, types
from cds.engine.rules import Context, LabTest, Outcome, egfr_from_creatinine

MET, NOT_MET, UNKNOWN = Status.MET, Status.NOT_MET, Status.UNKNOWN


@dataclass(frozen=True)
class Serology:
    """Inclusion: anti-dsDNA > threshold (IU only) OR C3 < threshold; both negative -> not_met."""

    dsdna: Analyte
    dsdna_threshold: float
    c3: Analyte
    c3_threshold: float
    window_days: int  # the latest result of each within this many days

    def evaluate(self, ctx: Context) -> Outcome:
        a = LabTest(self.dsdna, ">", self.dsdna_threshold, self.window_days).evaluate(ctx)
        b = LabTest(self.c3, "<", self.c3_threshold, self.window_days).evaluate(ctx)
        ev = a.evidence + b.evidence
        if MET in (a.status, b.status):
            pos = [o.reason for o in (a, b) if o.status is MET]
            return Outcome(MET, "serologically active: " + "; ".join(pos), ev)
        if a.status is NOT_MET and b.status is NOT_MET:
            return Outcome(NOT_MET, "not serologically active: " + a.reason + "; " + b.reason, ev)
        return Outcome(UNKNOWN, "serology not settled: " + "; ".join(o.reason for o in (a, b)), ev)


@dataclass(frozen=True)
class RenalSeverity:
    """Severe nephritis: 24-h protein >= p24, or UPCR > upcr, or eGFR < egfr (CKD-EPI 2021 derived
    from creatinine when no eGFR). not_met needs eGFR and a proteinuria measure, both negative."""

    protein_24h: Analyte
    upcr: Analyte
    egfr: Analyte
    creatinine: Analyte
    p24_threshold: float
    upcr_threshold: float
    egfr_threshold: float
    window_days: int  # the latest result of each measure within this many days

    def _derived_egfr(self, ctx: Context) -> Outcome | None:
        derived = egfr_from_creatinine(ctx, self.creatinine, self.window_days)
        if derived is None:
            return None
        egfr, ev = derived
        decided = egfr < self.egfr_threshold
        verb = "<" if decided else ">="
        return Outcome(
            MET if decided else NOT_MET, f"derived eGFR {fmt(egfr)} {verb} {fmt(self.egfr_threshold)}", (ev,)
        )

    def evaluate(self, ctx: Context) -> Outcome:
        p24 = LabTest(self.protein_24h, ">=", self.p24_threshold, self.window_days).evaluate(ctx)
        upcr = LabTest(self.upcr, ">", self.upcr_threshold, self.window_days).evaluate(ctx)
        egfr = LabTest(self.egfr, "<", self.egfr_threshold, self.window_days).evaluate(ctx)
        if egfr.status is UNKNOWN and not ctx.labs(self.egfr, self.window_days):
            egfr = self._derived_egfr(ctx) or egfr
        parts = (p24, upcr, egfr)
        met = [o for o in parts if o.status is MET]
        ev = tuple(e for o in parts for e in o.evidence)
        if met:
            return Outcome(MET, "; ".join(o.reason for o in met), tuple(e for o in met for e in o.evidence))
        protein_ok = NOT_MET in (p24.status, upcr.status)
        if (
            egfr.status is NOT_MET
            and protein_ok
            and UNKNOWN not in (o.status for o in parts if o.evidence and o.evidence[0].value is not None)
        ):
            return Outcome(NOT_MET, "; ".join(o.reason for o in parts if o.status is NOT_MET), ev)
        return Outcome(UNKNOWN, "renal criteria not settled: " + "; ".join(o.reason for o in parts), ev)


@reads.register
def _(rule: Serology, policy: Policy) -> tuple[Read, ...]:
    return labs((rule.dsdna, rule.c3), rule.window_days, policy)


@reads.register
def _(rule: RenalSeverity, policy: Policy) -> tuple[Read, ...]:
    analytes = (rule.protein_24h, rule.upcr, rule.egfr, rule.creatinine)
    return (*types("Patient"), *labs(analytes, rule.window_days, policy))
