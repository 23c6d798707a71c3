"""Lab-derived clinical SLEDAI-2K lower bound: items, boundaries, window edges, the renal-domain
view, and `inc-sledai` with no recorded total, an Observation total and a QuestionnaireResponse."""

from __future__ import annotations

from typing import Any

import pytest

from cds.engine import evaluate
from cds.engine.model import Flag, Status
from cds.engine.rules import Context
from cds.trials.lupus.sledai import points, sledai_items
from cds.trials.nct04582136 import SLEDAI_DAYS, TRIAL
from cds.trials.nct04582136.sle_items import SLEDAI
from tests.engine import builders as b

MET, NOT, UNK = Status.MET, Status.NOT_MET, Status.UNKNOWN
Res = list[dict[str, Any]]
WINDOW = SLEDAI_DAYS


pytestmark = pytest.mark.usefixtures("strict_engine")


def ctx_of(resources: Res) -> Context:
    return b.rule_context(resources, TRIAL.policy)


def item(resources: Res, item_id: str) -> Any:
    (found,) = [i for i in sledai_items(ctx_of(resources), SLEDAI, WINDOW) if i.id == item_id]
    return found


CASES: list[tuple[str, str, Res, Status]] = [
    ("hematuria", "6 RBC/HPF", [b.obs("13945-1", 6, "/[HPF]", 5)], MET),
    ("hematuria", "5 RBC/HPF", [b.obs("13945-1", 5, "/[HPF]", 5)], NOT),
    ("hematuria", "spelled /HPF", [b.obs("13945-1", 8, "/HPF", 5)], MET),
    ("hematuria", "not examined", [], UNK),
    ("pyuria", "6 WBC/HPF", [b.obs("5821-4", 6, "/[HPF]", 5)], MET),
    ("pyuria", "5 WBC/HPF", [b.obs("5821-4", 5, "/[HPF]", 5)], NOT),
    ("pyuria", "not examined", [], UNK),
    ("proteinuria", "0.52 g/24 h", [b.obs("2889-4", 0.52, "g/(24.h)", 5)], MET),
    ("proteinuria", "0.50 g/24 h", [b.obs("2889-4", 0.50, "g/(24.h)", 5)], NOT),
    ("proteinuria", "UPCR 520 mg/g", [b.obs("2890-2", 520, "mg/g", 5)], MET),
    ("proteinuria", "UPCR 500 mg/g", [b.obs("2890-2", 500, "mg/g", 5)], NOT),
    ("proteinuria", "UPCR 60 mg/mmol (= 530 mg/g)", [b.obs("2890-2", 60, "mg/mmol", 5)], MET),
    ("proteinuria", "not measured", [], UNK),
    ("urinary-casts", "RBC casts 1 /HPF", [b.obs("51790-4", 1, "/[HPF]", 5)], MET),
    ("urinary-casts", "RBC casts 0 /HPF", [b.obs("51790-4", 0, "/[HPF]", 5)], NOT),
    ("urinary-casts", "not examined", [], UNK),
    ("thrombocytopenia", "platelets 99", [b.obs("777-3", 99, "10*3/uL", 5)], MET),
    ("thrombocytopenia", "platelets 100", [b.obs("777-3", 100, "10*3/uL", 5)], NOT),
    ("thrombocytopenia", "not counted", [], UNK),
    ("leukopenia", "WBC 2.9", [b.obs("6690-2", 2.9, "10*3/uL", 5)], MET),
    ("leukopenia", "WBC 3.0", [b.obs("6690-2", 3.0, "10*3/uL", 5)], NOT),
    ("leukopenia", "not counted", [], UNK),
    ("fever", "38.1 Cel", [b.obs("8310-5", 38.1, "Cel", 5)], MET),
    ("fever", "38.0 Cel", [b.obs("8310-5", 38.0, "Cel", 5)], NOT),
    ("fever", "100.5 degF (38.06 Cel)", [b.obs("8310-5", 100.5, "[degF]", 5)], MET),
    ("fever", "not measured", [], UNK),
    # window edges: the window is [as_of - 30 days, as_of], both ends included
    ("hematuria", f"on day -{WINDOW} (in)", [b.obs("13945-1", 20, "/[HPF]", WINDOW)], MET),
    ("hematuria", f"on day -{WINDOW + 1} (out)", [b.obs("13945-1", 20, "/[HPF]", WINDOW + 1)], UNK),
    ("hematuria", "on the as-of date (in)", [b.obs("13945-1", 20, "/[HPF]", 0)], MET),
    ("hematuria", "after the as-of date (out)", [b.obs("13945-1", 20, "/[HPF]", -1)], UNK),
]


@pytest.mark.parametrize(("item_id", "case", "resources", "expected"), CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_sledai_item(item_id: str, case: str, resources: Res, expected: Status) -> None:
    result = item(resources, item_id)
    assert result.status is expected, result.reason
    assert result.evidence


def test_items_have_points_and_domains_and_exclude_serology() -> None:
    items = sledai_items(ctx_of([]), SLEDAI, WINDOW)
    assert {(i.id, i.points, i.group) for i in items} == {
        ("urinary-casts", 4, "renal"),
        ("hematuria", 4, "renal"),
        ("proteinuria", 4, "renal"),
        ("pyuria", 4, "renal"),
        ("thrombocytopenia", 1, "hematologic"),
        ("leukopenia", 1, "hematologic"),
        ("fever", 1, "constitutional"),
    }
    assert not any("dsdna" in i.id or "complement" in i.id for i in items)


def test_renal_domain_view_for_a_no_renal_points_criterion() -> None:
    res = [b.obs("13945-1", 2, "/[HPF]", 5), b.obs("777-3", 50, "10*3/uL", 5)]
    renal = sledai_items(ctx_of(res), SLEDAI, WINDOW, domains={"renal"})
    assert {i.group for i in renal} == {"renal"}
    assert len(renal) == 4
    assert points(renal)[0] == 0  # thrombocytopenia's point is not renal
    assert points(sledai_items(ctx_of(res), SLEDAI, WINDOW))[0] == 1


def test_met_urine_items_carry_the_caveat_to_verify() -> None:
    result = item([b.obs("13945-1", 12, "/[HPF]", 5)], "hematuria")
    assert "exclude infection or stone: to verify" in result.reason
    assert Flag.NEEDS_REVIEW in result.evidence[0].flags


# --------------------------------------------------------------------------- inc-sledai


def run(resources: Res) -> Any:
    return evaluate([b.patient(), b.condition("55464009"), *resources], patient_id=b.PID, as_of=b.AS_OF).by_id(
        "inc-sledai"
    )


def test_no_total_lower_bound_4_is_derived_met() -> None:
    result = run([b.obs("13945-1", 12, "/[HPF]", 5)])
    assert result.status is MET, result.reason
    assert "lab-derived clinical SLEDAI-2K >= 4" in result.reason
    assert "exclude infection or stone" in result.reason
    assert all(Flag.DERIVED in e.flags for e in result.evidence)
    assert len(result.items) == 7


def test_no_total_lower_bound_below_4_is_unknown() -> None:
    result = run([b.obs("777-3", 60, "10*3/uL", 5), b.obs("6690-2", 2.0, "10*3/uL", 5), b.obs("8310-5", 39, "Cel", 5)])
    assert result.status is UNK
    assert "lower bound 3" in result.reason


def test_no_total_and_normal_labs_stays_unknown() -> None:
    assert run([b.obs("13945-1", 1, "/[HPF]", 5)]).status is UNK


def test_recorded_total_still_decides() -> None:
    assert run([b.sledai(10)]).status is MET
    assert run([b.sledai(2), b.obs("13945-1", 12, "/[HPF]", 5)]).status is NOT  # the clinician's score wins


def test_recorded_total_4_to_7_with_unknown_serology_is_settled_by_the_labs() -> None:
    assert run([b.sledai(6)]).status is UNK
    assert run([b.sledai(6), b.obs("2890-2", 900, "mg/g", 5)]).status is MET


def questionnaire(items: list[tuple[str, float]], days_ago: int = 5, status: str = "completed") -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": b.nid("qr"),
        "status": status,
        "questionnaire": "https://github.com/nct04582136-cds/Questionnaire/sledai-2k",
        "subject": {"reference": f"Patient/{b.PID}"},
        "authored": b.ago(days_ago),
        "item": [{"linkId": link, "answer": [{"valueInteger": int(v)}]} for link, v in items],
    }


def test_questionnaire_item_scores_exclude_the_serology_items() -> None:
    assert run([questionnaire([("arthritis", 4), ("anti-dsDNA", 2), ("low-complement", 2)])]).status is MET
    assert run([questionnaire([("rash", 2), ("anti-dsDNA", 2), ("low-complement", 2)])]).status is NOT


def test_questionnaire_total_only_uses_the_total_rules() -> None:
    assert run([questionnaire([("total", 10)])]).status is MET
    assert run([questionnaire([("total", 3)])]).status is NOT


def test_questionnaire_outside_window_or_in_progress_is_ignored() -> None:
    assert run([questionnaire([("arthritis", 4)], days_ago=WINDOW + 1)]).status is UNK
    assert run([questionnaire([("arthritis", 4)], status="in-progress")]).status is UNK


def test_questionnaire_response_is_read_not_a_data_issue() -> None:
    report = evaluate(
        [b.patient(), b.condition("55464009"), questionnaire([("arthritis", 4)])],
        patient_id=b.PID,
        as_of=b.AS_OF,
    )
    assert not report.data_issues


def test_two_equal_sledai_totals_at_the_same_instant_no_longer_depend_on_record_order() -> None:
    """Regression (found by the whole-vs-retrieved property test): two agreeing SLEDAI-2K totals on
    the same day were shown with whichever came first in the record, so the service's query order
    (code query, then category query) changed the report's evidence."""
    first, second = b.sledai(0, days_ago=0), b.sledai(0, days_ago=0)
    forward = evaluate([b.patient(), first, second], patient_id=b.PID, as_of=b.AS_OF)
    backward = evaluate([b.patient(), second, first], patient_id=b.PID, as_of=b.AS_OF)
    assert forward.by_id("inc-sledai") == backward.by_id("inc-sledai")
    assert forward == backward
