"""The trial definition: exact criterion ids, no unverified codes, docs generated from it."""

from __future__ import annotations

from pathlib import Path

from cds.engine.model import Kind
from cds.trials.docs import criteria_markdown
from cds.trials.nct04582136 import TRIAL, UNVERIFIED_LEFT_OUT

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


def _all_codes() -> set[str]:
    """Every code the definition matches on: value sets, analytes, drug products and ingredients."""
    import cds.trials.nct04582136 as mod
    from cds.engine.definition import Analyte, Drug, ValueSet

    codes: set[str] = set()
    for value in vars(mod).values():
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, ValueSet):
                codes |= {c for _, c in item.codes}
            elif isinstance(item, Analyte):
                codes |= {c for _, c in item.codes.codes}
            elif isinstance(item, Drug):
                codes |= {c for _, c in item.value_set.codes}
    return codes


def test_unverified_codes_are_left_out() -> None:
    codes = _all_codes()
    for unverified in ("13645005", "363346000", "254651007", "26643006", "47625008", "413712001", "9061",
                       "27169", "14927-8", "M35.1"):  # fmt: skip
        assert unverified not in codes, unverified
    assert "COPD 13645005" in UNVERIFIED_LEFT_OUT["SNOMED"]


def test_readme_carries_the_generated_criteria_table() -> None:
    readme = Path(__file__).resolve().parents[2] / "README.md"
    table = criteria_markdown()
    assert table in readme.read_text(encoding="utf-8")
    for c in TRIAL.criteria:
        assert f"| `{c.id}` |" in table


def test_observation_query_codes_cover_every_analyte() -> None:
    codes = set(TRIAL.observation_codes)
    for analyte in TRIAL.analytes:
        assert analyte.codes.codes <= codes
    assert ("https://github.com/nct04582136-cds/CodeSystem/disease-activity", "SLEDAI-2K") in codes
