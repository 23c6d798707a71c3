"""The trial definition: exact criterion ids, verified codes used (with their sources), docs generated from it."""

from __future__ import annotations

from pathlib import Path

from cds.engine.model import Kind
from cds.trials.docs import criteria_markdown
from cds.trials.nct04582136 import TRIAL, UNVERIFIED_LEFT_OUT, VERIFIED_NOT_READ

INCLUSION = [
    "inc-age", "inc-sle-diagnosis", "inc-sle-duration", "inc-sledai", "inc-serology", "inc-steroid-stable",
    "inc-immunosuppressant-stable", "inc-other-meds-stable",
]  # fmt: skip
EXCLUSION = [
    "exc-other-ctd", "exc-npsle", "exc-severe-nephritis", "exc-pregnancy", "exc-sirolimus",
    "exc-iv-cyclophosphamide", "exc-ivig-high-dose-steroid", "exc-calcineurin", "exc-tripterygium",
    "exc-infection", "exc-leukopenia", "exc-liver-enzymes", "exc-bilirubin-lipids",
    "exc-steroid-requiring-condition", "exc-major-surgery", "exc-malignancy", "exc-stem-cell-transplant",
    "exc-splenectomy", "exc-investigator-judgment",
]  # fmt: skip


def test_criterion_ids_and_kinds_are_exactly_the_issue_list() -> None:
    assert [c.id for c in TRIAL.criteria if c.kind is Kind.INCLUSION] == INCLUSION
    assert [c.id for c in TRIAL.criteria if c.kind is Kind.EXCLUSION] == EXCLUSION
    assert [c.id for c in TRIAL.criteria if not c.settleable] == ["exc-investigator-judgment"]


def all_codes() -> set[tuple[str, str]]:
    """Every (system, code) the definition matches on: value sets, analytes, drug products and ingredients."""
    import cds.trials.nct04582136 as mod
    from cds.engine.definition import Analyte, Drug, ValueSet

    codes: set[tuple[str, str]] = set()
    for value in vars(mod).values():
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, ValueSet):
                codes |= item.codes
            elif isinstance(item, Analyte):
                codes |= item.codes.codes
            elif isinstance(item, Drug):
                codes |= item.value_set.codes
    for criterion in TRIAL.criteria:
        codes |= {code for read in TRIAL.reads_of(criterion) for code in read.codes}
    return codes


def test_codes_verified_since_the_reference_note_are_used() -> None:
    codes = {c for _, c in all_codes()}
    for verified in ("13645005", "363346000", "254651007", "27169", "14927-8", "1743-4", "30239-8", "34366-5",
                     "M35.1", "Z90.81", "Z94.81", "Z94.84", "Z33.1", "O09.511", "Z85.3", "J44.9", "B18.1"):  # fmt: skip
        assert verified in codes, verified


def test_only_codes_no_public_source_confirmed_are_left_out() -> None:
    codes = {c for _, c in all_codes()}
    for unverified in ("9061",):
        assert unverified in " ".join(UNVERIFIED_LEFT_OUT.values())
        assert unverified not in codes, unverified
    # route codes verified against the FHIR route-codes value set (cds.engine.routes)
    for verified_elsewhere in (
        "13645005",
        "363346000",
        "14927-8",
        "27169",
        "M35.1",
        "Z85",
        "B16",
        "26643006",
        "47625008",
    ):
        assert verified_elsewhere not in " ".join(UNVERIFIED_LEFT_OUT.values()), verified_elsewhere
    for key in VERIFIED_NOT_READ:  # verified, but not a code the rules read
        assert key.split()[-1] not in codes, key


def test_readme_carries_the_generated_criteria_table() -> None:
    readme = Path(__file__).resolve().parents[2] / "README.md"
    table = criteria_markdown()
    assert table in readme.read_text(encoding="utf-8")
    for c in TRIAL.criteria:
        assert f"| `{c.id}` |" in table


def test_observation_query_codes_cover_every_analyte() -> None:
    codes = set(TRIAL.observation_codes) | set(TRIAL.observation_history_codes)  # windowed, or whole record
    for analyte in TRIAL.analytes:
        assert analyte.codes.codes <= codes
    assert ("https://github.com/nct04582136-cds/CodeSystem/disease-activity", "SLEDAI-2K") in codes


def test_hepatitis_screens_are_read_and_fetched_at_any_date() -> None:
    """HBsAg 5196-1 and HCV Ab 13955-0 (issue 10: verified codes are used): read by exc-infection as
    qualitative results at any date, so the service's undated history query asks for them."""
    loinc = "http://loinc.org"
    assert (loinc, "5196-1") in TRIAL.observation_history_codes
    assert (loinc, "13955-0") in TRIAL.observation_history_codes
    assert "LOINC 5196-1" not in VERIFIED_NOT_READ
    assert "LOINC 13955-0" not in VERIFIED_NOT_READ
