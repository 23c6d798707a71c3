"""The trial registry in the service and the CLI: one CDS service per trial, answering for its own
trial only; card, report, report page, log line and feedback all name the same trial."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from service_helpers import AS_OF, full_prefetch, hook_request

import cds.trials
from cards.codes import REPORT_EXTENSION_KEY
from cds.cli import main
from cds.config import Settings
from cds.engine.model import Report
from cds.engine.trial import Trial
from cds.service.alerts import GATE_QUERIES
from cds.service.demo import build_request, load_bundle, prefetch_from_bundle
from cds.service.prefetch import queries_for
from cds.service.state import default_evaluator
from cds.trials.nct04582136 import TRIAL as NCT04582136
from tests.fake_trial import FAKE_ID, fake_trial, register_fake_trial

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "patients" / "base-candidate.json"


def _request(trial: Trial) -> dict[str, Any]:
    """A patient-view call for the fixture chart, prefetched as `trial`'s service asks for it."""
    bundle = load_bundle(FIXTURE)
    request = build_request(bundle, fhir_server=None)
    request["prefetch"] = prefetch_from_bundle(bundle, (*queries_for(trial), *GATE_QUERIES), "base-candidate")
    return request


def _settings(settings: Settings, *trial_ids: str) -> Settings:
    # every verdict gets a card (so every trial's card can be checked on one fixture chart)
    return settings.model_copy(update={"enabled_trials": list(trial_ids), "show_excluded_card": True})


def _report(card: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(json.dumps(card["extension"][REPORT_EXTENSION_KEY]))
    return report


@pytest.mark.parametrize("key", cds.trials.REGISTERED)
async def test_card_report_page_log_and_feedback_name_the_same_trial_for_every_registered_trial(
    key: str, make_client: Any, settings: Settings, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    trial = cds.trials.get(key)
    service = f"{key}-prescreen"
    caplog.set_level(logging.INFO, logger="cds")
    async with make_client(_settings(settings, trial.id), evaluator=None) as client:  # the real engine
        services = (await client.get("/cds-services")).json()["services"]
        assert [s["id"] for s in services] == [service]
        assert trial.id in services[0]["title"]

        response = await client.post(f"/cds-services/{service}", json=_request(trial))
        assert response.status_code == 200, response.text
        (card,) = response.json()["cards"]
        assert card["source"]["label"] == f"{trial.id} prescreen"
        assert card["source"]["url"] == trial.url
        assert card["source"]["topic"]["code"] == service
        assert _report(card)["trial"] == trial.id
        assert trial.id in card["summary"]

        page_url = card["links"][0]["url"]
        page = await client.get(page_url.removeprefix("http://cds.test"))
        assert page.status_code == 200
        assert f"<title>{trial.id} prescreen report" in page.text

        feedback = {"feedback": [{"card": card["uuid"], "outcome": "accepted"}]}
        assert (await client.post(f"/cds-services/{service}/feedback", json=feedback)).status_code == 200
        (row,) = (await client.get(f"/cds-services/{service}/feedback")).json()["feedback"]
        assert row["serviceId"] == service
        assert row["trial"] == trial.id

        # the referral made from the card: the next call's quiet card names the same trial
        referred = await client.post(f"/cds-services/{service}", json=_request(trial))
        (quiet,) = referred.json()["cards"]
        assert quiet["summary"].startswith(f"Referred to the {trial.id} study team on ")
        health = (await client.get("/health")).json()
        assert health["services"] == [{"id": service, "trial": trial.id}]
    hook_lines = [r for r in caplog.records if getattr(r, "event", None) == "hook"]
    assert len(hook_lines) == 2
    assert {getattr(r, "trial", None) for r in hook_lines} == {trial.id}
    assert {getattr(r, "service", None) for r in hook_lines} == {service}

    capsys.readouterr()
    assert main(["screen", str(FIXTURE), "--trial", key, "--as-of", "2026-11-01", "--format", "jsonl"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["trial"] == trial.id
    assert main(["criteria", "--trial", trial.id]) == 0
    assert f"from {trial.id};" in capsys.readouterr().out


async def test_two_enabled_trials_each_service_answers_for_its_own_trial_only(
    make_client: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = register_fake_trial(monkeypatch)
    first, second = "nct04582136-prescreen", f"{FAKE_ID.lower()}-prescreen"
    async with make_client(_settings(settings), evaluator=None) as client:  # default: every registered trial
        services = (await client.get("/cds-services")).json()["services"]
        assert [s["id"] for s in services] == [
            f"{t}-prescreen" for t in cds.trials.REGISTERED
        ]  # the fake one registered last
        assert services[-1]["id"] == second
        cards = {}
        for service, trial in ((first, NCT04582136), (second, fake)):
            response = await client.post(f"/cds-services/{service}", json=_request(trial))
            assert response.status_code == 200, response.text
            (cards[service],) = response.json()["cards"]
            assert _report(cards[service])["trial"] == trial.id
            assert cards[service]["source"]["label"] == f"{trial.id} prescreen"
        # the card wording is the trial's: NCT04582136's names SLE, the fake trial has none
        assert "**SLE** coded since" in cards[first]["detail"]
        assert "coded since" not in cards[second]["detail"]

        # feedback sent to one service neither lists nor snoozes the other's cards
        dismiss = {"feedback": [{"card": cards[second]["uuid"], "outcome": "overridden"}]}
        assert (await client.post(f"/cds-services/{first}/feedback", json=dismiss)).status_code == 200
        assert (await client.get(f"/cds-services/{second}/feedback")).json()["total"] == 0
        again = await client.post(f"/cds-services/{second}", json=_request(fake))
        assert len(again.json()["cards"]) == 1, "another service's feedback must not snooze this card"
        dismissed = await client.post(f"/cds-services/{second}/feedback", json=dismiss)
        assert dismissed.status_code == 200
        assert (await client.post(f"/cds-services/{second}", json=_request(fake))).json()["cards"] == []
        still = await client.post(f"/cds-services/{first}", json=_request(NCT04582136))
        assert len(still.json()["cards"]) == 1, "dismissing one trial's card leaves the other trial's"

        unknown = await client.post("/cds-services/nct99999999-prescreen", json=hook_request(full_prefetch()))
        assert unknown.status_code == 404
        assert unknown.json()["resourceType"] == "OperationOutcome"
        assert (await client.get("/cds-services/nct99999999-prescreen/feedback")).status_code == 404


async def test_enabled_trials_setting_limits_discovery(
    make_client: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_fake_trial(monkeypatch)
    async with make_client(_settings(settings, FAKE_ID), evaluator=None) as client:
        services = (await client.get("/cds-services")).json()["services"]
        assert [s["id"] for s in services] == [f"{FAKE_ID.lower()}-prescreen"]
        response = await client.post("/cds-services/nct04582136-prescreen", json=_request(NCT04582136))
        assert response.status_code == 404, "a registered but not enabled trial has no service"


def test_an_unknown_enabled_trial_stops_the_service_at_startup(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CDS_ENABLED_TRIALS", "NCT04582136,NCT99999999")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "CDS_ENABLED_TRIALS" in err
    assert "NCT99999999" in err


async def test_default_evaluator_ignored_the_apps_trial_and_answered_with_nct04582136s_report(
    make_client: Any, settings: Settings
) -> None:
    """Regression (issue 11): an app created for another trial answered with a card naming that
    trial and NCT04582136's report inside, because `default_evaluator()` ignored the app's trial."""
    fake = fake_trial()
    report = default_evaluator(fake)(
        [load_bundle(FIXTURE)["entry"][0]["resource"]],
        patient_id="base-candidate",
        as_of=AS_OF,
        searched=frozenset({"Patient"}),
        incomplete=(),
    )
    assert report.trial == fake.id
    async with make_client(_settings(settings), trial=fake, evaluator=None) as client:
        services = (await client.get("/cds-services")).json()["services"]
        assert [s["id"] for s in services] == [f"{FAKE_ID.lower()}-prescreen"]
        response = await client.post(f"/cds-services/{FAKE_ID.lower()}-prescreen", json=_request(fake))
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    assert card["source"]["label"] == f"{fake.id} prescreen"
    assert _report(card)["trial"] == fake.id


async def test_an_engine_answering_for_another_trial_is_an_error_never_a_card(
    make_client: Any, settings: Settings
) -> None:
    def nct04582136_engine(resources: list[dict[str, Any]], **kwargs: Any) -> Report:
        return default_evaluator(NCT04582136)(resources, **kwargs)

    async with make_client(_settings(settings), trial=fake_trial(), evaluator=nct04582136_engine) as client:
        response = await client.post(f"/cds-services/{FAKE_ID.lower()}-prescreen", json=_request(fake_trial()))
    assert response.status_code == 500
    assert "cards" not in response.text


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_unknown_trial_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["screen", str(FIXTURE), "--trial", "NCT99999999"])
    assert stop.value.code == 2
    assert "unknown trial 'NCT99999999'" in capsys.readouterr().err


def test_cli_screens_a_registered_fake_trial(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    register_fake_trial(monkeypatch)
    code, text, err = _run(
        ["screen", str(FIXTURE), "--trial", FAKE_ID, "--as-of", "2026-11-01", "--format", "jsonl"], capsys
    )
    assert code == 0, err
    assert json.loads(text)["trial"] == FAKE_ID
