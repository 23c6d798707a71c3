"""SLICC 2012 computed from the chart: every item met / not_met / unknown, the rule, and the
`inc-sle-diagnosis` criterion on a Synthea-shaped lupus chart (generic SNOMED 200936003 + labs)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cds.engine import evaluate
from cds.engine.model import Flag, Status
from cds.engine.rules import Context
from cds.trials.lupus.slicc import breakdown, classify, slicc_items
from cds.trials.nct04582136 import TRIAL
from cds.trials.nct04582136.sle_items import SLICC
from tests.engine import builders as b

MET, NOT, UNK = Status.MET, Status.NOT_MET, Status.UNKNOWN
Res = list[dict[str, Any]]


pytestmark = pytest.mark.usefixtures("strict_engine")


def ctx_of(resources: Res) -> Context:
    return b.rule_context(resources, TRIAL.policy)


def item(resources: Res, item_id: str) -> Any:
    (found,) = [i for i in slicc_items(ctx_of(resources), SLICC) if i.id == item_id]
    return found


def named(text: str, days_ago: int = 400) -> dict[str, Any]:
    """A Condition coded only by text (findings matched by name)."""
    c = b.condition("0", onset=b.ago(days_ago))
    c["code"] = {"text": text}
    return c


def text_obs(loinc: str, value: str, days_ago: int = 400, range_text: str | None = None) -> dict[str, Any]:
    o = b.obs(loinc, None, "", days_ago)
    o["valueString"] = value
    if range_text is not None:
        o["referenceRange"] = [{"text": range_text}]
    return o


def coded_obs(loinc: str, positive: bool, days_ago: int = 400) -> dict[str, Any]:
    return b.obs(loinc, None, "", days_ago, coded="10828004" if positive else "260385009")


CASES: list[tuple[str, str, Res, Status]] = [
    # coded clinical findings: a code (or name) -> met; no code -> unknown (absence is not proof)
    ("acute-cutaneous", "SCLE SNOMED", [b.condition("239891002")], MET),
    ("acute-cutaneous", "malar rash by name", [named("Malar rash")], MET),
    ("acute-cutaneous", "none coded", [], UNK),
    ("acute-cutaneous", "only unconfirmed", [b.condition("239891002", verification="provisional")], UNK),
    ("chronic-cutaneous", "DLE ICD-10-CM L93.0", [b.condition("L93.0", system=b.ICD)], MET),
    ("chronic-cutaneous", "refuted DLE ignored", [b.condition("200938002", verification="refuted")], UNK),
    ("oral-nasal-ulcers", "oral ulcers", [named("Recurrent oral ulcers")], MET),
    ("oral-nasal-ulcers", "none", [], UNK),
    ("alopecia", "non-scarring alopecia", [named("Non-scarring alopecia")], MET),
    ("alopecia", "scarring alopecia is not the item", [named("Scarring alopecia")], UNK),
    ("synovitis", "synovitis", [named("Synovitis of both knees")], MET),
    ("synovitis", "none", [], UNK),
    ("serositis", "SLE with pericarditis", [b.condition("309762007")], MET),
    ("serositis", "pleurisy by name", [named("Pleurisy")], MET),
    ("serositis", "none", [], UNK),
    ("neurologic", "seizure", [named("Seizure disorder")], MET),
    ("neurologic", "none", [], UNK),
    ("hemolytic-anemia", "D59.1x", [b.condition("D59.11", system=b.ICD)], MET),
    ("hemolytic-anemia", "none", [], UNK),
    # renal: proteinuria >= 500 mg/24 h (UPCR mg/g read as mg/24 h) or RBC casts, cumulative
    ("renal", "UPCR 520 mg/g years ago", [b.obs("2890-2", 520, "mg/g", 900)], MET),
    ("renal", "24-h protein 500 mg", [b.obs("2889-4", 500, "mg/(24.h)", 60)], MET),
    ("renal", "RBC casts 2 /HPF", [b.obs("51790-4", 2, "/[HPF]", 60)], MET),
    ("renal", "coded lupus nephritis", [b.condition("M32.14", system=b.ICD)], MET),
    (
        "renal",
        "UPCR 300 and no RBC casts",
        [b.obs("2890-2", 300, "mg/g", 60), b.obs("51790-4", 0, "/[HPF]", 60)],
        NOT,
    ),
    ("renal", "UPCR 300, casts never examined", [b.obs("2890-2", 300, "mg/g", 60)], UNK),
    ("renal", "nothing tested", [], UNK),
    # hematologic, at least once over the record
    ("leukopenia", "WBC 3.9 once, years ago", [b.obs("6690-2", 3.9, "10*3/uL", 2000)], MET),
    ("leukopenia", "lymphocytes 0.9", [b.obs("731-0", 0.9, "10*3/uL", 100)], MET),
    (
        "leukopenia",
        "WBC 4.0 and lymphocytes 1.0 (boundaries)",
        [b.obs("6690-2", 4.0, "10*3/uL", 100), b.obs("731-0", 1.0, "10*3/uL", 100)],
        NOT,
    ),
    ("leukopenia", "WBC normal, lymphocytes never tested", [b.obs("6690-2", 6.0, "10*3/uL", 100)], UNK),
    ("thrombocytopenia", "platelets 99", [b.obs("777-3", 99, "10*3/uL", 700)], MET),
    ("thrombocytopenia", "platelets 100", [b.obs("777-3", 100, "10*3/uL", 700)], NOT),
    ("thrombocytopenia", "never counted", [], UNK),
    # immunologic: against the laboratory's own range
    ("ana", "titre 1:640, no range (default 1:80)", [text_obs("8061-4", "1:640")], MET),
    ("ana", "titre 1:80 vs range <1:80", [text_obs("42254-3", "1:80", range_text="<1:80")], MET),
    ("ana", "titre 1:40 vs range <1:80", [text_obs("42254-3", "1:40", range_text="<1:80")], NOT),
    ("ana", "negative", [text_obs("8061-4", "Negative")], NOT),
    ("ana", "index without range or flag", [b.obs("8061-4", 2.1, "{index}", 30)], UNK),
    ("ana", "never tested", [], UNK),
    ("anti-dsdna", "ELISA 45 vs ULN 10 (> 2x)", [b.obs("33799-8", 45, "[IU]/mL", 300, high=10)], MET),
    ("anti-dsdna", "ELISA 15 vs ULN 10 (< 2x)", [b.obs("33799-8", 15, "[IU]/mL", 300, high=10)], UNK),
    ("anti-dsdna", "Farr 12 vs ULN 10", [b.obs("47299-3", 12, "[IU]/mL", 300, high=10)], MET),
    ("anti-dsdna", "Farr 5 vs ULN 10", [b.obs("47299-3", 5, "[IU]/mL", 300, high=10)], NOT),
    ("anti-sm", "positive", [coded_obs("11090-8", True)], MET),
    ("anti-sm", "negative", [coded_obs("11090-8", False)], NOT),
    ("anti-sm", "never tested", [], UNK),
    ("antiphospholipid", "lupus anticoagulant detected", [text_obs("3281-3", "Detected")], MET),
    ("antiphospholipid", "anti-b2GPI IgG 12 vs ULN 15", [b.obs("44448-9", 12, "{SGU}", 300, high=15)], NOT),
    ("antiphospholipid", "never tested", [], UNK),
    ("low-complement", "C3 75 vs LLN 90", [b.obs("4485-9", 75, "mg/dL", 300, low=90)], MET),
    ("low-complement", "C3 95 vs LLN 90", [b.obs("4485-9", 95, "mg/dL", 300, low=90)], NOT),
    ("low-complement", "C3 75 without a range", [b.obs("4485-9", 75, "mg/dL", 300)], UNK),
    ("direct-coombs", "positive, no hemolytic anemia", [coded_obs("1007-4", True)], MET),
    (
        "direct-coombs",
        "positive WITH hemolytic anemia",
        [coded_obs("1007-4", True), b.condition("D59.9", system=b.ICD)],
        NOT,
    ),
    ("direct-coombs", "negative", [coded_obs("13946-9", False)], NOT),
    ("direct-coombs", "never tested", [], UNK),
]


@pytest.mark.parametrize(("item_id", "case", "resources", "expected"), CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_slicc_item(item_id: str, case: str, resources: Res, expected: Status) -> None:
    result = item(resources, item_id)
    assert result.status is expected, result.reason
    assert result.evidence, "every item names its evidence (or the data searched)"


def test_every_item_has_a_met_and_an_unknown_case_and_17_items() -> None:
    ids = [i.id for i in slicc_items(ctx_of([]), SLICC)]
    assert len(ids) == 17
    assert len(set(ids)) == 17
    for item_id in ids:
        assert {MET, UNK} <= {c[3] for c in CASES if c[0] == item_id}, item_id
    groups = [i.group for i in slicc_items(ctx_of([]), SLICC)]
    assert groups.count("clinical") == 11
    assert groups.count("immunologic") == 6


def test_default_ana_cutoff_is_flagged() -> None:
    result = item([text_obs("8061-4", "1:640")], "ana")
    assert Flag.ULN_ASSUMED in result.evidence[0].flags
    assert "default cut-off 1:80" in result.evidence[0].description


def test_items_ignore_results_after_the_as_of_date_and_entered_in_error() -> None:
    future = b.obs("777-3", 50, "10*3/uL", -3)
    withdrawn = b.obs("777-3", 50, "10*3/uL", 30, status="entered-in-error")
    assert item([future, withdrawn], "thrombocytopenia").status is UNK


# --------------------------------------------------------------------------- the rule


def _all_immunologic_negative() -> Res:
    return [
        text_obs("8061-4", "Negative"),
        b.obs("47299-3", 3, "[IU]/mL", 60, high=10),
        coded_obs("11090-8", False),
        text_obs("3281-3", "Not detected"),
        b.obs("4485-9", 110, "mg/dL", 60, low=90),
        coded_obs("1007-4", False),
    ]


def test_rule_met_with_four_items_clinical_and_immunologic() -> None:
    res = [
        b.obs("777-3", 80, "10*3/uL", 500),
        b.obs("6690-2", 3.2, "10*3/uL", 500),
        text_obs("8061-4", "1:320"),
        b.obs("4485-9", 60, "mg/dL", 500, low=90),
    ]
    result = classify(ctx_of(res), SLICC)
    assert result.status is MET, result.reason
    assert set(result.met_ids()) == {"thrombocytopenia", "leukopenia", "ana", "low-complement"}


def test_rule_not_met_when_four_items_cannot_include_an_immunologic_one() -> None:
    res = [*_all_immunologic_negative(), b.obs("777-3", 80, "10*3/uL", 500), named("Malar rash"), named("Pleurisy")]
    result = classify(ctx_of(res), SLICC)
    assert result.status is NOT, result.reason


def test_rule_unknown_with_three_items() -> None:
    res = [b.obs("777-3", 80, "10*3/uL", 500), text_obs("8061-4", "1:320"), named("Malar rash")]
    assert classify(ctx_of(res), SLICC).status is UNK


def test_rule_met_by_biopsy_proven_nephritis_with_ana() -> None:
    res = [b.condition("76521009"), text_obs("8061-4", "1:160", range_text="<1:80")]
    result = classify(ctx_of(res), SLICC)
    assert result.status is MET
    assert "biopsy-proven" in result.reason


def test_rule_biopsy_without_antibody_is_not_enough() -> None:
    res = [b.condition("76521009"), text_obs("8061-4", "Negative"), b.obs("47299-3", 3, "[IU]/mL", 60, high=10)]
    assert classify(ctx_of(res), SLICC).status is UNK


# --------------------------------------------------------------------------- inc-sle-diagnosis


def synthea_lupus_chart() -> Res:
    """Shaped like Synthea's lupus module output (generic SNOMED 200936003 + wellness CBCs as
    valueQuantity with UCUM code = unit and no referenceRange), plus the serology a rheumatology
    work-up would add (ANA titre as text, anti-dsDNA and C3 with ranges)."""
    lupus = b.condition("200936003", onset="2019-06-14T10:12:45-05:00")
    lupus["code"]["coding"][0]["display"] = "Lupus erythematosus (disorder)"
    anemia = b.condition("271737000", onset="2019-07-14T10:12:45-05:00")
    cbc = [
        b.obs("6690-2", 3.6, "10*3/uL", 800),
        b.obs("777-3", 142, "10*3/uL", 800),
        b.obs("6690-2", 5.2, "10*3/uL", 400),
        b.obs("777-3", 96, "10*3/uL", 400),
        b.obs("6690-2", 6.1, "10*3/uL", 20),
        b.obs("777-3", 210, "10*3/uL", 20),
    ]
    serology = [
        text_obs("8061-4", "1:640", days_ago=800),
        b.obs("33799-8", 85, "[IU]/mL", 800, high=10),
        b.obs("4485-9", 72, "mg/dL", 800, low=90),
    ]
    return [lupus, anemia, *cbc, *serology]


def run(resources: Res) -> Any:
    return evaluate([b.patient(), *resources], patient_id=b.PID, as_of=b.AS_OF)


def test_synthea_lupus_chart_gets_a_slicc_breakdown_and_a_derived_diagnosis() -> None:
    report = run(synthea_lupus_chart())
    result = report.by_id("inc-sle-diagnosis")
    assert result.status is MET, result.reason
    assert "SLICC 2012" in result.reason
    assert Flag.DERIVED in result.evidence[0].flags
    met = {i.id for i in result.items if i.status is MET}
    assert met == {"leukopenia", "thrombocytopenia", "ana", "anti-dsdna", "low-complement"}
    out = json.loads(json.dumps(report.to_json()))
    (criterion,) = [c for c in out["criteria"] if c["id"] == "inc-sle-diagnosis"]
    assert [i["id"] for i in criterion["items"]][:2] == ["acute-cutaneous", "chronic-cutaneous"]
    assert {i["status"] for i in criterion["items"]} == {"met", "unknown"}
    text = breakdown(classify(ctx_of(synthea_lupus_chart()), SLICC))
    assert "[    met] clin thrombocytopenia < 100 x10^9/L" in text
    assert "[unknown] immu anti-Sm positive: anti-Sm not tested in the record" in text


def test_generic_code_without_enough_items_stays_unknown_with_items() -> None:
    result = run([b.condition("200936003"), b.obs("777-3", 96, "10*3/uL", 400)]).by_id("inc-sle-diagnosis")
    assert result.status is UNK
    assert "items met: thrombocytopenia" in result.reason
    assert len(result.items) == 17


def test_specific_sle_code_stays_a_proxy() -> None:
    result = run([b.condition("55464009")]).by_id("inc-sle-diagnosis")
    assert result.status is MET
    assert Flag.PROXY in result.evidence[0].flags


def test_no_lupus_code_stays_not_met_even_with_lupus_like_labs() -> None:
    labs = [x for x in synthea_lupus_chart() if x["resourceType"] == "Observation"]
    result = run([b.condition("38341003"), *labs]).by_id("inc-sle-diagnosis")  # hypertension only
    assert result.status is NOT
    assert not result.items


def test_refuted_generic_code_does_not_count() -> None:
    chart = [x for x in synthea_lupus_chart() if x["resourceType"] == "Observation"]
    result = run([b.condition("200936003", verification="refuted"), *chart]).by_id("inc-sle-diagnosis")
    assert result.status is NOT
