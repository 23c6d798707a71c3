from __future__ import annotations

import itertools
import re
import uuid
from typing import Any

import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest
from report_builders import AGE, C3, EXCLUDED, LIKELY, POSSIBLE, SLEDAI, TRIAL, criterion, report

from cards.codes import OVERRIDE_REASON_SYSTEM, REPORT_EXTENSION_KEY, card_topic
from cards.models import SUMMARY_MAX, Card, CdsResponse
from cards.render import DETAIL_MAX, ReportLink, render_cards
from cds.engine.model import Kind, Status, Verdict


def _walk_no_empty(value: Any, path: str = "card") -> None:
    assert value is not None, f"null at {path}"
    assert value not in ("", [], {}), f"empty value at {path}"
    if isinstance(value, dict):
        for key, item in value.items():
            if path == "card" and key == "extension":
                continue  # the engine report, verbatim (checked separately)
            _walk_no_empty(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk_no_empty(item, f"{path}[{i}]")


def _card(rep: Any = POSSIBLE, **kwargs: Any) -> Card:
    cards = render_cards(rep, TRIAL, **kwargs)
    assert len(cards) == 1
    return cards[0]


@pytest.mark.parametrize("rep", [POSSIBLE, LIKELY, report(AGE, SLEDAI, incomplete=("Observation",))])
def test_candidate_card_validates_and_has_no_null_or_empty_values(rep: Any) -> None:
    card = _card(rep)
    data = card.to_json()
    _walk_no_empty(data)
    assert Card.model_validate(data).to_json() == data
    assert CdsResponse(cards=[card]).to_json() == {"cards": [data]}
    assert data["indicator"] == "info"
    uuid.UUID(data["uuid"])
    assert data["extension"][REPORT_EXTENSION_KEY] == rep.to_json()


def test_summary_says_possible_candidate_never_eligible_and_no_phi() -> None:
    for rep in (POSSIBLE, LIKELY, report(AGE, SLEDAI, incomplete=("MedicationStatement",))):
        summary = _card(rep).summary
        assert len(summary) < 140
        assert "possible candidate" in summary.lower()
        assert "eligible" not in summary.lower()
        for phi in ("p1", "Patient/", "1990", "age", "C3", "0.8"):
            assert phi not in summary
    assert _card(POSSIBLE).summary.endswith(": 1 to verify")
    assert "all checkable criteria met" in _card(LIKELY).summary


def test_incomplete_report_says_so_in_summary_and_detail() -> None:
    card = _card(report(AGE, SLEDAI, incomplete=("MedicationStatement", "Procedure")))
    assert card.summary.lower().startswith("possible candidate — data incomplete")
    assert card.detail is not None
    assert "Data incomplete" in card.detail
    assert "medication statements" in card.detail
    assert "procedures" in card.detail
    assert "data incomplete" not in _card(POSSIBLE).summary


def test_long_trial_titles_keep_the_summary_short() -> None:
    class LongTrial:
        id = "NCT04582136"
        title = "A very long title " * 10
        url = "https://clinicaltrials.gov/study/NCT04582136"

    card = render_cards(report(AGE, SLEDAI, incomplete=("Observation",)), LongTrial())[0]
    assert len(card.summary) <= SUMMARY_MAX
    assert "NCT04582136" in card.summary


def test_detail_is_a_verdict_line_then_at_most_five_bullets_most_decisive_first() -> None:
    detail = _card(POSSIBLE).detail
    assert detail is not None
    line, bullets = detail.split("\n\n")
    assert line.startswith("**Possible candidate: 1 to verify.**")
    items = bullets.splitlines()
    assert 1 <= len(items) <= 5
    assert all(item.startswith("- ") for item in items)
    assert items[0].startswith("- **To verify (1):** Clinical SLEDAI-2K >= 4 (no SLEDAI-2K recorded)")
    excluded = _card(EXCLUDED, show_excluded=True).detail or ""
    assert excluded.split("\n\n")[1].startswith("- **Against (1):** Age 18-65")
    assert "|" not in detail, "no table: the full table is on the report page"


def test_detail_names_criteria_by_title_never_by_internal_id_or_code_system_uri() -> None:
    for rep in (POSSIBLE, LIKELY, EXCLUDED):
        detail = _card(rep, show_excluded=True).detail or ""
        assert not re.search(r"\b(inc|exc)-[a-z]", detail), detail
        assert "://" not in detail
        assert "investigator" not in detail.lower(), "the always-open judgment criterion is not a to-verify item"


def test_summary_and_detail_count_the_same_criteria_to_verify() -> None:
    open_items = [criterion(f"inc-{i}", Status.UNKNOWN, title=f"T{i}") for i in range(7)]
    rep = report(AGE, *open_items)
    card = _card(rep)
    assert card.summary.endswith(": 7 to verify")
    assert "**Possible candidate: 7 to verify.**" in (card.detail or "")
    assert "**To verify (7):**" in (card.detail or "")


def test_text_from_data_is_markdown_escaped_and_link_free() -> None:
    nasty = criterion(
        "inc-x",
        Status.UNKNOWN,
        title="T",
        reason="a|b *bold* [link](http://x.example) <script>",
    )
    hosts = criterion("inc-y", Status.UNKNOWN, title="U", reason="www.evil.example me@evil.example")
    detail = _card(report(AGE, nasty, hosts)).detail or ""
    assert r"a\|b \*bold\* \[link\](http\[:\]/\[/\]x\[.\]example) \<script>" in detail
    assert r"www\[.\]evil\[.\]example me\[at\]evil\[.\]example" in detail
    assert not re.search(r"(?<!\\)<script", detail)


def test_detail_stays_within_1500_characters_however_much_is_open() -> None:
    many = [
        criterion(f"inc-{i}", Status.UNKNOWN, title="A long criterion title " * 3, reason="a long reason " * 20)
        for i in range(40)
    ]
    fails = [
        criterion(f"exc-{i}", Status.MET, Kind.EXCLUSION, title="Exclusion " * 5, reason="r " * 80) for i in range(9)
    ]
    card = _card(report(AGE, *many, *fails), show_excluded=True)
    assert len(card.detail or "") <= DETAIL_MAX
    assert "more in the full report" in (card.detail or "")


def test_source_topic_is_static_and_links_point_to_the_report_and_the_trial() -> None:
    first, second = _card(POSSIBLE), _card(LIKELY)
    assert first.source.topic == second.source.topic == card_topic(TRIAL.id)
    assert first.uuid != second.uuid
    assert first.source.url == TRIAL.url
    assert first.links is not None
    assert [(link.url, link.type, link.autoLaunchable) for link in first.links] == [(TRIAL.url, "absolute", False)]
    page = ReportLink("https://cds.example/report/tok", "smart")
    linked = render_cards(POSSIBLE, TRIAL, report_link=page)[0]
    assert linked.links is not None
    assert [(link.url, link.type) for link in linked.links] == [(page.url, "smart"), (TRIAL.url, "absolute")]
    for link in linked.to_json()["links"]:
        assert link["autoLaunchable"] is False
        assert link["autolaunchable"] is False  # the 2.0 spelling too


def test_override_reasons_are_our_codings_with_display() -> None:
    reasons = _card().overrideReasons
    assert reasons is not None
    assert {r.code for r in reasons} == {"already-screened", "patient-declined", "not-a-candidate", "will-refer"}
    assert all(r.system == OVERRIDE_REASON_SYSTEM and r.display for r in reasons)


@pytest.mark.parametrize("rep", [POSSIBLE, LIKELY, report(AGE, SLEDAI, incomplete=("Observation",))])
def test_suggestion_creates_a_valid_r4_service_request(rep: Any) -> None:
    card = _card(rep)
    assert card.selectionBehavior == "any"
    assert card.suggestions is not None
    assert len(card.suggestions) == 1
    suggestion = card.suggestions[0]
    assert suggestion.isRecommended is False
    uuid.UUID(suggestion.uuid or "")
    assert suggestion.uuid != card.uuid
    assert suggestion.actions is not None
    action = suggestion.actions[0]
    assert action.type == "create"
    resource = action.resource
    assert resource is not None
    model = ServiceRequest.model_validate(resource)
    assert model.status == "draft"
    assert model.intent == "order"
    assert model.subject.reference == "Patient/p1"
    assert model.reasonCode[0].coding[0].code == rep.verdict.value
    assert "not an eligibility decision" in model.note[0].text.lower()
    _walk_no_empty(resource, "resource")


def test_excluded_gives_no_card_unless_configured() -> None:
    assert EXCLUDED.verdict is Verdict.EXCLUDED
    assert render_cards(EXCLUDED, TRIAL) == []
    card = _card(EXCLUDED, show_excluded=True)
    assert card.summary.startswith("Not a candidate")
    assert card.suggestions is None
    assert card.selectionBehavior is None
    _walk_no_empty(card.to_json())


def test_deterministic_uuids_when_injected() -> None:
    counter = itertools.count()

    def new_uuid() -> str:
        return str(uuid.UUID(int=next(counter)))

    card = render_cards(POSSIBLE, TRIAL, new_uuid=new_uuid)[0]
    assert card.suggestions is not None
    assert {card.uuid, card.suggestions[0].uuid} == {str(uuid.UUID(int=0)), str(uuid.UUID(int=1))}


def test_data_issues_are_mentioned() -> None:
    detail = _card(report(AGE, C3, SLEDAI, issues=2)).detail or ""
    assert "2 record(s) could not be used" in detail


def test_computed_items_are_on_the_report_page_by_status_and_escaped() -> None:
    """The card stays short; the SLICC / SLEDAI items (found, missing, absent) are on the report page."""
    from dataclasses import replace

    from cds.engine.model import ItemResult
    from cds.service.report_page import report_html

    items = (
        ItemResult("hematuria", "hematuria", "renal", Status.MET, "12 RBC/HPF <a href='http://chart'>x</a>", points=4),
        ItemResult("fever", "fever", "constitutional", Status.UNKNOWN, "not measured"),
        ItemResult("leukopenia", "leukopenia", "hematologic", Status.NOT_MET, "WBC 6"),
    )
    page = report_html(report(AGE, replace(SLEDAI, items=items)), TRIAL)
    found, missing, absent = (page.index(s) for s in ("found:", "not found / to verify:", "absent:"))
    assert found < page.index("hematuria (renal, 4 points)") < missing < page.index("fever (constitutional)") < absent
    assert page.index("leukopenia (hematologic)") > absent
    assert "<a href='http://chart'>" not in page  # chart text is escaped
    assert "&lt;a href=" in page
    detail = _card(report(AGE, replace(SLEDAI, items=items))).detail or ""
    assert "http://chart" not in detail
