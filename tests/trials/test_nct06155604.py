"""NCT06155604 as data: exact criterion ids, every fixture's designed result, valid codes, registration."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import date
from pathlib import Path

import pytest

from cds import trials
from cds.bundles import read_bundle_file
from cds.engine import evaluate, icd10cm
from cds.engine.definition import ICD10CM, Analyte, Drug, ValueSet
from cds.engine.model import Flag, Kind, Report, Status
from cds.engine.reads import reads
from cds.engine.trial import set_strict
from cds.trials import nct06155604 as mod
from cds.trials.docs import criteria_markdown
from cds.trials.nct06155604 import TRIAL, UNVERIFIED_LEFT_OUT
from cds.trials.nct06155604.rules import RULE_TYPES
from cds.trials.nct06155604.terminology import VALUE_SETS

ROOT = Path(__file__).resolve().parents[2] / "fixtures" / "nct06155604"
AS_OF = date(2026, 11, 1)
EXPECTED: dict[str, dict[str, object]] = json.loads((ROOT / "expected.json").read_text(encoding="utf-8"))

INCLUSION = ["inc-age", "inc-ln-biopsy", "inc-ckd", "inc-quiescent", "inc-stable-regimen"]
EXCLUSION = ["exc-other-gn", "exc-t1dm", "exc-ckd5-rrt", "exc-frequent-uti", "exc-ketoacidosis"]


def fixture_report(patient_id: str) -> Report:
    set_strict(True)
    try:
        contents = read_bundle_file(ROOT / "patients" / f"{patient_id}.json")
        (p,) = contents.patients
        return evaluate(p.resources, patient_id=p.patient_id, as_of=AS_OF, searched=contents.searched, trial=TRIAL)
    finally:
        set_strict(False)


def test_criterion_ids_and_kinds_are_exactly_the_issue_list() -> None:
    assert [c.id for c in TRIAL.criteria if c.kind is Kind.INCLUSION] == INCLUSION
    assert [c.id for c in TRIAL.criteria if c.kind is Kind.EXCLUSION] == EXCLUSION
    assert all(c.settleable for c in TRIAL.criteria)


def test_the_trial_is_registered_after_the_default() -> None:
    assert trials.REGISTERED == ("nct04582136", "nct06155604")
    assert trials.DEFAULT_TRIAL == "nct04582136"
    assert trials.get("NCT06155604") is TRIAL
    assert [t.id for t in trials.get_all()] == ["NCT04582136", "NCT06155604"]


@pytest.mark.parametrize("patient_id", sorted(EXPECTED))
def test_fixture_patient(patient_id: str) -> None:
    report = fixture_report(patient_id)
    expected = EXPECTED[patient_id]
    criteria = expected["criteria"]
    assert isinstance(criteria, dict)
    got = {cid: report.by_id(cid).status.value for cid in criteria}
    assert got == criteria, expected["about"]
    assert report.verdict.value == expected["verdict"]
    assert report.trial == "NCT06155604"
    assert not report.data_issues


def test_the_base_candidate_lists_every_criterion_favourably() -> None:
    base = EXPECTED["ln-base-candidate"]
    assert base["verdict"] == "likely-candidate"
    assert base["criteria"] == dict.fromkeys(INCLUSION, "met") | dict.fromkeys(EXCLUSION, "not_met")


@pytest.mark.parametrize("criterion", INCLUSION + EXCLUSION)
def test_fixtures_cover_met_not_met_and_unknown_of_every_criterion(criterion: str) -> None:
    seen = set()
    for entry in EXPECTED.values():
        criteria = entry["criteria"]
        assert isinstance(criteria, dict)
        if criterion in criteria:
            seen.add(criteria[criterion])
    assert seen == {"met", "not_met", "unknown"}


def test_fixtures_cover_every_verdict() -> None:
    assert {e["verdict"] for e in EXPECTED.values()} == {"excluded", "likely-candidate", "possible-candidate"}


@pytest.mark.parametrize(
    ("low", "high", "criterion"),
    [
        ("ln-var-egfr-15", "ln-var-egfr-14-9", "inc-ckd"),
        ("ln-var-egfr-60", "ln-var-egfr-60-1", "inc-ckd"),
        ("ln-var-age-18-today", "ln-var-age-18-tomorrow", "inc-age"),
        ("ln-var-prednisone-5", "ln-var-prednisone-4-9", "inc-stable-regimen"),
        ("ln-var-prednisone-7-5", "ln-var-prednisone-7-6", "inc-stable-regimen"),
        ("ln-var-mmf-1-5g", "ln-var-mmf-1-6g", "inc-stable-regimen"),
        ("ln-var-aza-150", "ln-var-aza-175", "inc-stable-regimen"),
        ("ln-var-sledai-3", "ln-var-sledai-4", "inc-quiescent"),
        ("ln-var-regimen-changed-92d", "ln-var-regimen-changed-90d", "inc-stable-regimen"),
    ],
)
def test_boundary_pairs_fall_on_either_side(low: str, high: str, criterion: str) -> None:
    assert fixture_report(low).by_id(criterion).status is Status.MET
    assert fixture_report(high).by_id(criterion).status is Status.NOT_MET


def test_uti_count_at_and_below_the_threshold() -> None:
    assert fixture_report("ln-var-uti-2-in-6m").by_id("exc-frequent-uti").status is Status.MET
    assert fixture_report("ln-var-uti-1-in-6m").by_id("exc-frequent-uti").status is Status.NOT_MET
    assert fixture_report("ln-var-uti-3-in-12m").by_id("exc-frequent-uti").status is Status.MET


@pytest.mark.parametrize(
    ("patient_id", "key", "criterion", "status"),
    [
        ("ln-var-ln-class-refuted", "ln", "inc-ln-biopsy", Status.NOT_MET),
        ("ln-var-iga-refuted", "iga", "exc-other-gn", Status.NOT_MET),
        ("ln-var-t1dm-entered-in-error", "t1dm", "exc-t1dm", Status.NOT_MET),
        ("ln-var-egfr-entered-in-error", "egfr-error", "inc-ckd", Status.MET),
        ("ln-var-prednisone-entered-in-error", "pred-error", "inc-stable-regimen", Status.MET),
        ("ln-var-uti-2-in-6m-one-refuted", "uti-1", "exc-frequent-uti", Status.NOT_MET),
    ],
)
def test_non_usable_records_are_ignored(patient_id: str, key: str, criterion: str, status: Status) -> None:
    result = fixture_report(patient_id).by_id(criterion)
    assert result.status is status
    assert all(not e.reference.endswith(f"/{patient_id}-{key}") for e in result.evidence)


def test_a_derived_egfr_is_flagged() -> None:
    result = fixture_report("ln-var-egfr-derived").by_id("inc-ckd")
    assert result.status is Status.MET
    assert Flag.DERIVED in result.evidence[0].flags


def test_every_result_names_its_evidence() -> None:
    for patient_id in ("ln-base-candidate", "ln-var-ln-unclassified-no-biopsy", "ln-var-sledai-missing"):
        for result in fixture_report(patient_id).criteria:
            assert result.evidence, (patient_id, result.id)


# ------------------------------------------------------------------ terminology


def all_codes() -> set[tuple[str, str]]:
    codes: set[tuple[str, str]] = set()
    for value in vars(mod).values():
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, ValueSet):
                codes |= item.codes
            elif isinstance(item, Analyte):
                codes |= item.codes.codes
            elif isinstance(item, Drug):
                codes |= item.value_set.codes
    for criterion in TRIAL.criteria:
        codes |= {code for read in TRIAL.reads_of(criterion) for code in read.codes}
    return codes


def test_every_declared_icd10cm_item_is_valid_in_the_tabular_list() -> None:
    for name, items in VALUE_SETS.items.items():
        for item in items:
            assert icd10cm.expand_item(item), (name, item)


def test_every_icd10cm_code_the_trial_matches_is_a_code_of_the_tabular_list() -> None:
    icd = {code for system, code in all_codes() if system == ICD10CM}
    assert {"M32.14", "N02.B1", "Q61.2", "E10.9", "E11.10", "N18.6", "Z99.2", "Z94.0", "N39.0"} <= icd
    assert sorted(c for c in icd if not icd10cm.is_valid_code(c)) == []


@pytest.mark.parametrize(
    ("name", "inside", "outside"),
    [
        ("other-gn", ["N02.B1", "N04.21", "N06.21", "N03.A", "N05.6"], ["N04.22", "N05.4", "N08", "M32.14"]),
        ("hereditary-kidney", ["N07.9", "Q61.2", "Q61.19", "Q87.81"], ["Q61.0", "Q61.4"]),
        ("t1dm", ["E10.9", "E10.65", "O24.011"], ["E11.9", "E13.9"]),
        ("ketoacidosis", ["E10.10", "E11.11", "E13.10"], ["E87.20", "E10.9"]),
        ("ckd5", ["N18.5", "N18.6"], ["N18.4", "N18.30"]),
        ("dialysis-status", ["Z99.2", "Z49.01", "Z49.31", "Z91.151"], ["Z99.89"]),
        ("uti", ["N39.0", "N30.00", "N30.91", "N10"], ["N30.10", "N11.9"]),
    ],
)
def test_blocks_are_expanded_from_the_hierarchy(name: str, inside: list[str], outside: list[str]) -> None:
    codes = VALUE_SETS.codes(name)
    for code in inside:
        assert code in codes, code
    for code in outside:
        assert code not in codes, code


def test_codes_shared_with_the_first_trial_are_reused() -> None:
    codes = {c for _, c in all_codes()}
    # eGFR / creatinine LOINC, the SLEDAI renal items, prednisone / prednisolone / MMF / AZA RxNorm
    for shared in ("98979-8", "33914-3", "2160-0", "13945-1", "5821-4", "2890-2", "51790-4", "8640", "8638", "68149",
                   "1256", "312617", "198142", "200060", "197388", "36402006", "68815009"):  # fmt: skip
        assert shared in codes, shared


def test_unverified_codes_are_left_out() -> None:
    codes = {c for _, c in all_codes()}
    for unverified in ("50200", "90935", "50360"):
        assert unverified in " ".join(UNVERIFIED_LEFT_OUT.values())
        assert unverified not in codes


@pytest.mark.parametrize(
    ("text", "qualifying", "other"),
    [
        ("Lupus nephritis, ISN/RPS class IV-G (A)", True, False),
        ("lupus nephritis class III + V", True, False),
        ("LN class V", True, False),
        ("Lupus nephritis class II", False, True),
        ("lupus nephritis class VI", False, True),
        ("NYHA class III heart failure", False, False),
    ],
)
def test_class_names_are_read_only_next_to_lupus_nephritis(text: str, qualifying: bool, other: bool) -> None:
    assert (mod.LN_CLASS_III_IV_V.match_text([text]) is not None) is qualifying
    assert (mod.LN_CLASS_OTHER.match_text([text]) is not None) is other


# ------------------------------------------------------------------ declarations and docs


def test_every_rule_type_of_the_trial_declares_what_it_reads() -> None:
    for rule_type in RULE_TYPES:
        assert rule_type in reads.registry, rule_type.__name__


def test_the_egfr_window_lengthens_the_observation_lookback() -> None:
    assert TRIAL.observation_lookback_days == mod.EGFR_WINDOW_DAYS
    assert ("http://loinc.org", "98979-8") in TRIAL.observation_codes
    assert ("http://loinc.org", "2160-0") in TRIAL.observation_codes
    assert {"Condition", "Procedure", "DiagnosticReport", "MedicationStatement"} <= set(TRIAL.resource_types)


def test_the_criteria_table_is_generated_from_the_definition() -> None:
    table = criteria_markdown(TRIAL)
    for c in TRIAL.criteria:
        assert f"`{c.id}`" in table
    assert "from NCT06155604" in table


def test_every_first_trial_fixture_evaluates_without_a_rule_error() -> None:
    """Robustness: 145 varied records (real export shapes, units, dose forms) through the new rules,
    re-raising any rule error instead of reporting it as unknown."""
    verdicts = set()
    for path in sorted((ROOT.parent / "patients").glob("*.json")):
        contents = read_bundle_file(path)
        set_strict(True)
        try:
            for p in contents.patients:
                report = evaluate(
                    p.resources, patient_id=p.patient_id, as_of=AS_OF, searched=contents.searched, trial=TRIAL
                )
                verdicts.add(report.verdict.value)
        finally:
            set_strict(False)
    assert verdicts == {"excluded"}  # none of them has lupus nephritis with CKD and a biopsy


def test_committed_fixtures_equal_a_fresh_build() -> None:
    spec = importlib.util.spec_from_file_location("fixtures_nct06155604_build", ROOT / "build.py")
    assert spec is not None
    assert spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = builder  # dataclasses need the module registered
    spec.loader.exec_module(builder)
    assert builder.self_test(ROOT, validate=False) == []
