"""ICD-10-CM value sets come from the maintained tabular list (PyPI simple-icd-10-cm), not hand lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cds.engine import evaluate, icd10cm
from cds.engine.definition import ICD10CM, ValueSet
from cds.engine.model import Status
from cds.trials import terminology
from cds.trials.nct04582136 import TRIAL
from cds.trials.nct04582136.terminology import VALUE_SETS
from tests.engine import builders as b
from tests.trials.test_nct04582136 import all_codes


def test_committed_expansion_equals_a_fresh_expansion_from_the_package() -> None:
    assert terminology.main(["--check"]) == 0


def test_every_declared_icd10cm_item_is_valid_in_the_tabular_list() -> None:
    for name, items in VALUE_SETS.items.items():
        for item in items:
            assert icd10cm.expand_item(item), (name, item)


def test_every_icd10cm_code_the_trial_matches_is_a_code_of_the_tabular_list() -> None:
    icd = {code for system, code in all_codes() if system == ICD10CM}
    assert len(icd) > 5000
    invalid = sorted(c for c in icd if not icd10cm.is_valid_code(c))
    assert invalid == []


@pytest.mark.parametrize(
    ("name", "inside", "outside"),
    [
        ("pregnancy", ["O00.00", "O09.511", "O36.5930", "O9A.111", "Z33.1", "Z3A.20", "Z34.00"], ["Z33.2", "P00"]),
        ("malignant", ["C00.0", "C4A.9", "C7A.00", "C96.9", "D06.9", "C50.911"], ["D10.0", "D47.Z1", "C97"]),
        ("lymphoproliferative", ["C81.90", "C83.30", "C91.10", "D47.Z1"], ["C92.00", "C44.91"]),
        ("malignancy-exceptions", ["C44.91", "C44.311", "C44.92", "C44.321", "D04.9", "D06.9"], ["C44.90", "C43.9"]),
        ("infection-active", ["A15.0", "A19.9", "B16.9", "B18.1", "B18.2", "B19.20", "A41.9"], ["A16", "B15.9"]),
        ("steroid-requiring", ["J43.9", "J44.1", "J45.909", "J45.51"], ["J47.9", "J4A"]),
        ("sle", ["M32.10", "M32.14", "M32.8", "M32.9"], ["M32.0", "M32"]),
        ("splenectomy-history", ["Z90.81"], ["Z90.89"]),
        ("stem-cell-transplant", ["Z94.81", "Z94.84"], ["Z94.0"]),
        ("malignancy-history", ["Z85.3", "Z85.828"], ["Z86.0"]),
    ],
)
def test_blocks_are_expanded_from_the_hierarchy(name: str, inside: list[str], outside: list[str]) -> None:
    codes = VALUE_SETS.codes(name)
    for code in inside:
        assert code in codes, code
    for code in outside:
        assert code not in codes, code


def test_items_that_are_not_icd10cm_are_refused() -> None:
    for bad in ("A16", "X99.99", "O00-P00", "C44~no such description", "15"):
        with pytest.raises(ValueError, match="ICD-10-CM"):
            icd10cm.expand_item(bad)


def test_a_stale_expansion_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"value_sets": {"a": {"items": ["J45"], "codes": ["J45"]}}}), encoding="utf-8")
    assert icd10cm.load_expansions(path, {"a": ("J45",)}) == {"a": frozenset({"J45"})}
    with pytest.raises(icd10cm.StaleExpansion):
        icd10cm.load_expansions(path, {"a": ("J45", "J44")})


def test_an_icd10cm_code_sent_without_its_dot_is_read_as_the_dotted_code() -> None:
    vs = ValueSet.of("x", [(ICD10CM, "O09.511")])
    assert vs.match_codings([(ICD10CM, "O09511")]) is not None
    assert vs.match_codings([("http://snomed.info/sct", "O09511")]) is None


def _status(criterion: str, *extra: dict[str, object]) -> Status:
    report = evaluate([*b.base_record(), *extra], patient_id=b.PID, as_of=b.AS_OF)
    return next(c.status for c in report.criteria if c.id == criterion)


@pytest.mark.parametrize(
    ("criterion", "code", "onset", "expected"),
    [
        ("exc-pregnancy", "O09.511", b.ago(60), Status.MET),
        ("exc-pregnancy", "Z3A.20", b.ago(30), Status.MET),
        ("exc-pregnancy", "Z33.1", b.ago(30), Status.MET),
        ("exc-splenectomy", "Z90.81", "2015-06-01", Status.MET),
        ("exc-stem-cell-transplant", "Z94.84", "2019-01-01", Status.MET),
        ("exc-malignancy", "C50.911", b.ago(400), Status.MET),
        ("exc-malignancy", "Z85.3", "2012-01-01", Status.UNKNOWN),
        ("exc-steroid-requiring-condition", "J45.909", "2010-01-01", Status.UNKNOWN),
        ("exc-steroid-requiring-condition", "J44.9", "2010-01-01", Status.UNKNOWN),
        ("exc-infection", "B18.1", b.ago(20), Status.MET),
        ("exc-infection", "Z22.7", "2020-01-01", Status.UNKNOWN),
        ("exc-other-ctd", "M35.1", "2020-01-01", Status.MET),
    ],
)
def test_diagnoses_coded_only_in_icd10cm_are_read(criterion: str, code: str, onset: str, expected: Status) -> None:
    assert _status(criterion) is Status.NOT_MET  # the base record
    assert _status(criterion, b.condition(code, system=b.ICD, onset=onset)) is expected


def test_snomed_codes_verified_since_the_reference_note_are_read() -> None:
    assert _status("exc-steroid-requiring-condition", b.condition("13645005", onset="2010-01-01")) is Status.UNKNOWN
    assert _status("exc-malignancy", b.condition("363346000", onset=b.ago(400))) is Status.MET
    treated_scc = b.condition("254651007", onset="2024-01-01", clinical="resolved", abatementDateTime="2024-02-01")
    assert _status("exc-malignancy", treated_scc) is Status.NOT_MET


def test_trial_applicability_uses_the_expanded_sle_codes() -> None:
    assert TRIAL.applicability is not None
    assert TRIAL.applicability.match_codings([(ICD10CM, "M32.14")]) is not None
    assert TRIAL.applicability.match_codings([(ICD10CM, "M32.1")]) is not None
