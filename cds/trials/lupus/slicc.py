"""SLICC 2012 classification of SLE computed from the chart (Petri et al., Arthritis Rheum 2012).

17 items, 11 clinical and 6 immunologic, each met / not_met / unknown with its evidence
(`cds.engine.items` conventions). Items are CUMULATIVE over the record, as the criteria are
("criteria need not be present at the same time"): a result from any date up to the as-of date
counts. In the FHIR service the record holds what the service read (its Observation search is
bounded by the trial's lookback), so older results can be missing there: a missing test makes an
item `unknown`, never `not_met`.

Rule: >= 4 items with >= 1 clinical and >= 1 immunologic, or biopsy-proven lupus nephritis with a
positive ANA or anti-dsDNA. The classification is `met` when the rule holds on met items; `not_met`
only when, counting every unknown item as met, it still cannot hold; otherwise `unknown`.

`SliccDiagnosis` is the rule behind a "fulfils SLICC" criterion: a specific SLE code stays `met`
(flagged PROXY); a generic lupus code becomes `met` when the computed SLICC holds (flagged
DERIVED), else stays `unknown`; no lupus code stays `not_met` (see `CodedDiagnosis`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from cds.engine import items as it
from cds.engine.definition import Analyte, Policy, ValueSet
from cds.engine.model import Evidence, Flag, ItemResult, Status
from cds.engine.reads import Read, matching, observation_codes_of, reads
from cds.engine.rules import CodedDiagnosis, Context, Outcome

MET, NOT_MET, UNKNOWN = Status.MET, Status.NOT_MET, Status.UNKNOWN
CLINICAL, IMMUNOLOGIC = "clinical", "immunologic"
ATTRIBUTION = "attribution to lupus to verify"  # a coded finding counts; that lupus caused it is the reviewer's
# SLICC 2012: anti-dsDNA above the range, twice the range when measured by ELISA (`RangeTest.fold_note`).
DSDNA_FOLD_NOTE = "SLICC: 2x when measured by ELISA; method not recorded"


@dataclass(frozen=True)
class SliccData:
    """The trial's codes and cut-offs for the 17 items (see `cds.trials.nct04582136.sle_items`)."""

    acute_cutaneous: ValueSet
    chronic_cutaneous: ValueSet
    oral_nasal_ulcers: ValueSet
    alopecia: ValueSet
    synovitis: ValueSet
    serositis: ValueSet
    neurologic: ValueSet
    hemolytic_anemia: ValueSet
    lupus_nephritis: ValueSet  # coded lupus nephritis: the renal item
    lupus_nephritis_biopsy: ValueSet  # biopsy-classified (ISN/RPS / WHO class): the alternative rule
    protein_24h: Analyte
    upcr: Analyte
    rbc_casts: it.RangeTest
    wbc: Analyte
    lymphocytes: Analyte
    platelets: Analyte
    ana: tuple[it.RangeTest, ...]
    dsdna: tuple[it.RangeTest, ...]
    anti_sm: tuple[it.RangeTest, ...]
    antiphospholipid: tuple[it.RangeTest, ...]
    complement: tuple[it.RangeTest, ...]
    coombs: tuple[it.RangeTest, ...]


@dataclass(frozen=True, slots=True)
class SliccResult:
    status: Status
    reason: str
    items: tuple[ItemResult, ...]

    def met_ids(self) -> list[str]:
        return [i.id for i in self.items if i.status is MET]


def _item(id_: str, label: str, group: str, judged: tuple[Status, str, tuple[Evidence, ...]]) -> ItemResult:
    return ItemResult(id_, label, group, judged[0], judged[1], judged[2])


def slicc_items(ctx: Context, d: SliccData) -> tuple[ItemResult, ...]:
    """The 17 SLICC 2012 items, cumulative over the record (cached per context)."""
    result: tuple[ItemResult, ...] = ctx.cached(("slicc-items", id(d)), lambda: _slicc_items(ctx, d))
    return result


def _slicc_items(ctx: Context, d: SliccData) -> tuple[ItemResult, ...]:
    whole = None

    def coded(id_: str, label: str, vs: ValueSet) -> ItemResult:
        return _item(id_, label, CLINICAL, it.judge_coded(ctx, vs, label, whole, ATTRIBUTION))

    renal = it.any_of(
        (
            _proteinuria(ctx, d),
            it.judge_out_of_range(ctx, (d.rbc_casts,), whole),
        )
    )
    nephritis = it.judge_coded(ctx, d.lupus_nephritis, "lupus nephritis", whole, ATTRIBUTION)
    if nephritis[0] is MET and renal[0] is not MET:
        renal = (MET, f"{nephritis[1]}; {renal[1]}", nephritis[2])
    hemolytic = it.judge_coded(ctx, d.hemolytic_anemia, "hemolytic anemia", whole, ATTRIBUTION)
    low_counts = it.any_of(
        (
            it.judge_threshold(ctx, (d.wbc,), "<", 4.0, whole),
            it.judge_threshold(ctx, (d.lymphocytes,), "<", 1.0, whole),
        )
    )
    coombs = it.judge_out_of_range(ctx, d.coombs, whole)
    if coombs[0] is MET and hemolytic[0] is MET:
        coombs = (NOT_MET, "direct Coombs positive WITH hemolytic anemia: counted as hemolytic anemia", coombs[2])
    elif coombs[0] is MET:
        coombs = (coombs[0], coombs[1] + " (no hemolytic anemia coded: to verify)", coombs[2])
    return (
        coded("acute-cutaneous", "acute or subacute cutaneous lupus", d.acute_cutaneous),
        coded("chronic-cutaneous", "chronic cutaneous lupus", d.chronic_cutaneous),
        coded("oral-nasal-ulcers", "oral or nasal ulcers", d.oral_nasal_ulcers),
        coded("alopecia", "non-scarring alopecia", d.alopecia),
        coded("synovitis", "synovitis (>= 2 joints)", d.synovitis),
        coded("serositis", "serositis (pleurisy or pericarditis)", d.serositis),
        _item("renal", "renal: proteinuria >= 500 mg/24 h or RBC casts", CLINICAL, renal),
        coded("neurologic", "neurologic (seizures, psychosis, mononeuritis, myelitis, neuropathy)", d.neurologic),
        _item("hemolytic-anemia", "hemolytic anemia", CLINICAL, hemolytic),
        _item("leukopenia", "leukopenia < 4 x10^9/L or lymphopenia < 1 x10^9/L", CLINICAL, low_counts),
        _item(
            "thrombocytopenia",
            "thrombocytopenia < 100 x10^9/L",
            CLINICAL,
            it.judge_threshold(ctx, (d.platelets,), "<", 100.0, whole),
        ),
        _item("ana", "ANA above the laboratory reference range", IMMUNOLOGIC, it.judge_out_of_range(ctx, d.ana, whole)),
        _item(
            "anti-dsdna",
            "anti-dsDNA above the reference range (2x if ELISA)",
            IMMUNOLOGIC,
            it.judge_out_of_range(ctx, d.dsdna, whole),
        ),
        _item("anti-sm", "anti-Sm positive", IMMUNOLOGIC, it.judge_out_of_range(ctx, d.anti_sm, whole)),
        _item(
            "antiphospholipid",
            "antiphospholipid antibody (lupus anticoagulant, anticardiolipin, anti-beta2-glycoprotein I)",
            IMMUNOLOGIC,
            it.judge_out_of_range(ctx, d.antiphospholipid, whole),
        ),
        _item(
            "low-complement",
            "low complement (C3, C4 or CH50 below range)",
            IMMUNOLOGIC,
            it.judge_out_of_range(ctx, d.complement, whole),
        ),
        _item("direct-coombs", "direct Coombs positive without hemolytic anemia", IMMUNOLOGIC, coombs),
    )


def _proteinuria(ctx: Context, d: SliccData) -> tuple[Status, str, tuple[Evidence, ...]]:
    """UPCR or 24-h protein >= 500 mg/24 h, at least once. UPCR in mg/g reads as mg/24 h (about 1 g
    of creatinine is excreted a day: SLICC's "representing 500 mg protein/24 h"). Either measure
    settles it: one measured below the threshold (and none above) is not_met."""
    return it.any_measure(
        (
            it.judge_threshold(ctx, (d.protein_24h,), ">=", 500, None),
            it.judge_threshold(ctx, (d.upcr,), ">=", 500, None),
        )
    )


def classify(ctx: Context, d: SliccData) -> SliccResult:
    items = slicc_items(ctx, d)
    return SliccResult(*_rule(ctx, d, items), items)


def _holds(statuses: Sequence[tuple[str, bool]], nephritis_with_antibody: bool) -> bool:
    groups = [g for g, ok in statuses if ok]
    return nephritis_with_antibody or (len(groups) >= 4 and CLINICAL in groups and IMMUNOLOGIC in groups)


def _rule(ctx: Context, d: SliccData, items: tuple[ItemResult, ...]) -> tuple[Status, str]:
    by_id = {i.id: i for i in items}
    biopsy = it.judge_coded(ctx, d.lupus_nephritis_biopsy, "biopsy-proven lupus nephritis", None)[0]
    antibody = [by_id["ana"].status, by_id["anti-dsdna"].status]
    sure = _holds([(i.group, i.status is MET) for i in items], biopsy is MET and MET in antibody)
    possible = _holds(
        [(i.group, i.status is not NOT_MET) for i in items],
        biopsy is not NOT_MET and any(s is not NOT_MET for s in antibody),
    )
    met = [i for i in items if i.status is MET]
    clinical = sum(1 for i in met if i.group == CLINICAL)
    immunologic = len(met) - clinical
    unknown = sum(1 for i in items if i.status is UNKNOWN)
    counts = f"{len(met)} of 17 items met ({clinical} clinical, {immunologic} immunologic), {unknown} unknown"
    if sure:
        how = (
            "biopsy-proven lupus nephritis with ANA or anti-dsDNA"
            if biopsy is MET and MET in antibody
            else ">= 4 items with >= 1 clinical and >= 1 immunologic"
        )
        return MET, f"SLICC 2012 met from the chart ({how}): {counts}"
    if not possible:
        return NOT_MET, f"SLICC 2012 cannot be met even if every unknown item were present: {counts}"
    return UNKNOWN, f"SLICC 2012 not established: {counts}"


def breakdown(result: SliccResult) -> str:
    """A plain-text SLICC breakdown (one line per item), e.g. for notes and tests."""
    lines = [result.reason]
    for i in result.items:
        lines.append(f"  [{i.status.value:>7}] {i.group[:4]} {i.label}: {i.reason}")
    return "\n".join(lines)


@dataclass(frozen=True)
class SliccDiagnosis:
    """Required SLE diagnosis judged by SLICC 2012: `CodedDiagnosis` plus the computed SLICC.

    A specific SLE code: `met` (PROXY), the SLICC items shown alongside. Only a generic lupus code
    (e.g. SNOMED 200936003, which Synthea emits): `met` (DERIVED) when the computed SLICC holds,
    else `unknown`. No lupus code, or only cutaneous lupus: as `CodedDiagnosis` says (`not_met`).
    """

    coded: CodedDiagnosis
    data: SliccData

    def evaluate(self, ctx: Context) -> Outcome:
        base = self.coded.evaluate(ctx)
        if "Condition" not in ctx.record.searched or base.status is NOT_MET:
            return base
        generic = [c for c in ctx.conditions(self.coded.review) if not c.unconfirmed]
        if base.status is MET and not generic:
            return base  # a specific SLE code: the proxy holds; SLICC adds nothing to decide
        result = classify(ctx, self.data)
        found = ", ".join(result.met_ids()) or "none"
        if base.status is MET:
            return Outcome(MET, f"{base.reason}; computed: {result.reason}", base.evidence, result.items)
        if not generic:
            return Outcome(base.status, base.reason, base.evidence, result.items)
        if result.status is MET:
            ev = tuple(
                replace(e, flags=(*(f for f in e.flags if f is not Flag.NEEDS_REVIEW), Flag.DERIVED))
                for e in base.evidence
            )
            summary = Evidence("SLICC 2012", f"items met: {found}", flags=(Flag.DERIVED,))
            return Outcome(
                MET,
                f"generic lupus code; SLE by SLICC 2012 computed from the chart: {result.reason}",
                (*ev, summary),
                result.items,
            )
        return Outcome(
            UNKNOWN,
            f"{base.reason}; {result.reason} (items met: {found})",
            base.evidence,
            result.items,
        )


@reads.register
def _(rule: SliccDiagnosis, policy: Policy) -> tuple[Read, ...]:
    # SLICC items are cumulative over the record: their tests are read whatever their date
    history = Read("Observation", codes=observation_codes_of(rule.data), lookback_days=None)
    return (*reads(rule.coded, policy), *matching(rule, "Condition"), history)
