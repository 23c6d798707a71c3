"""Card wording is trial data (`cards.wording`, ``cds/trials/<id>/card.py``)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from report_builders import AGE, SLEDAI, report

import cds.trials
from cards.markdown import escape
from cards.render import detail_bullets, render_cards, wording_of
from cards.wording import PLAIN_WORDING, CardWording, Highlight, SinceFact
from cds.engine.model import Evidence, Status
from tests.fake_trial import FAKE_ID, register_fake_trial


@pytest.mark.parametrize("key", cds.trials.REGISTERED)
def test_every_registered_trials_wording_names_only_its_own_criteria(key: str) -> None:
    wording = cds.trials.card_wording(key)
    ids = {c.id for c in cds.trials.get(key).criteria}
    assert wording.criterion_ids <= ids, sorted(wording.criterion_ids - ids)


def test_nct04582136_highlights_sle_since_disease_activity_and_serology() -> None:
    wording = cds.trials.card_wording("NCT04582136")
    assert wording.since == SinceFact("SLE", "inc-sle-diagnosis", ("inc-sle-duration", "inc-sle-diagnosis"))
    assert [h.label for h in wording.highlights] == ["Disease activity", "Serology"]


def test_a_trial_folder_without_card_py_gets_the_plain_wording(monkeypatch: pytest.MonkeyPatch) -> None:
    trial = register_fake_trial(monkeypatch)
    assert cds.trials.card_wording(FAKE_ID) == PLAIN_WORDING
    assert wording_of(trial) == PLAIN_WORDING


def test_unregistered_trials_are_refused_by_the_registry_and_rendered_plain() -> None:
    with pytest.raises(cds.trials.UnknownTrial):
        cds.trials.card_wording("NCT99999999")

    class Other:
        id = "NCT99999999"
        title = "Other"
        url = "https://clinicaltrials.gov/study/NCT99999999"

    assert wording_of(Other()) == PLAIN_WORDING


def test_highlights_come_from_the_wording_not_from_fixed_criterion_ids() -> None:
    met = replace(
        SLEDAI,
        status=Status.MET,
        evidence=(Evidence(reference="Observation/s1", description="SLEDAI-2K", value="8", date="2026-10-01"),),
    )
    rep = report(AGE, met)
    assert not any("Activity" in b for b in detail_bullets(rep, PLAIN_WORDING))
    custom = CardWording(highlights=(Highlight(met.id, "Activity <score>"),))
    (bullet,) = [b for b in detail_bullets(rep, custom) if "Activity" in b]
    label = escape("Activity <score>")  # the label is made inert like chart text
    assert label != "Activity <score>"
    assert bullet.startswith(f"- **{label}:** SLEDAI-2K 8")
    (card,) = render_cards(rep, cds.trials.get("NCT04582136"), wording=custom)
    assert f"**{label}:**" in (card.detail or "")
