"""Alert fatigue state (cds.service.alerts): the store on a real database, and the service around it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from service_helpers import FHIR, PID, SERVICE, full_prefetch, hook_request, patient, searchset
from sqlalchemy import create_engine, inspect, text

from cards.codes import OVERRIDE_REASON_SYSTEM, REFERRAL_SYSTEM
from cds.config import Settings
from cds.service.alerts import (
    CONSENT_SCOPE,
    AlertPolicy,
    AlertStore,
    chart_suppression,
)
from cds.service.feedback import FeedbackItem

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
TRIAL = "NCT04582136"
CARD = "7d1c7b9e-0000-4000-8000-000000000001"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """Every store test runs on SQLite and, where a `postgres_url` fixture exists, on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/alerts.sqlite3"
    try:
        url: str = request.getfixturevalue("postgres_url")
    except pytest.FixtureLookupError:
        pytest.skip("no postgres_url fixture in this checkout")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[AlertStore]:
    engine = create_engine(db_url)
    alerts = AlertStore(engine, AlertPolicy(snooze_days_by_reason={"patient-declined": 180, "will-refer": 7}))
    alerts.create_tables()
    yield alerts
    engine.dispose()


def _item(outcome: str, card: str = CARD, reason: str | None = None, timestamp: str | None = None) -> FeedbackItem:
    reasons = [{"reason": {"system": OVERRIDE_REASON_SYSTEM, "code": reason}}] if reason else []
    return FeedbackItem(card=card, outcome=outcome, outcome_timestamp=timestamp, override_reasons=reasons)


@pytest.mark.parametrize(
    ("reason", "days"), [(None, 30), ("not-a-candidate", 30), ("patient-declined", 180), ("will-refer", 7)]
)
def test_overridden_feedback_snoozes_for_the_reason_period(store: AlertStore, reason: str | None, days: int) -> None:
    key = store.patient_key(FHIR, PID)
    store.record_issued([CARD], key, TRIAL, NOW)
    assert store.apply_feedback([_item("overridden", reason=reason)], NOW) == 1
    assert store.status(key, TRIAL, NOW).snoozed_until == NOW + timedelta(days=days)
    assert store.status(key, TRIAL, NOW + timedelta(days=days, seconds=1)).snoozed_until is None
    assert store.status(store.patient_key(FHIR, "someone-else"), TRIAL, NOW).snoozed_until is None
    assert store.status(key, "NCT00000000", NOW).snoozed_until is None


def test_accepted_feedback_marks_the_patient_referred_on_the_feedback_date(store: AlertStore) -> None:
    key = store.patient_key(FHIR, PID)
    store.record_issued([CARD], key, TRIAL, NOW)
    store.apply_feedback([_item("accepted", timestamp="2026-10-30T16:20:00Z")], NOW)
    assert store.status(key, TRIAL, NOW).referred_on == date(2026, 10, 30)
    assert store.status(key, TRIAL, NOW + timedelta(days=400)).referred_on is None  # quiet for a year only


def test_feedback_sent_to_another_trials_service_changes_nothing(store: AlertStore) -> None:
    key = store.patient_key(FHIR, PID)
    store.record_issued([CARD], key, TRIAL, NOW)
    assert store.apply_feedback([_item("overridden")], NOW, "NCT00000001") == 0
    assert store.status(key, TRIAL, NOW).snoozed_until is None
    assert store.apply_feedback([_item("overridden")], NOW, TRIAL) == 1
    assert store.status(key, TRIAL, NOW).snoozed_until is not None


def test_feedback_on_unknown_or_expired_cards_changes_nothing(store: AlertStore) -> None:
    key = store.patient_key(FHIR, PID)
    assert store.apply_feedback([_item("overridden", card="not-ours")], NOW) == 0
    store.record_issued([CARD], key, TRIAL, NOW)
    assert store.apply_feedback([_item("overridden")], NOW + timedelta(days=91)) == 0
    assert store.apply_feedback([_item("ignored-outcome")], NOW) == 0
    assert store.status(key, TRIAL, NOW) == store.status(store.patient_key(None, "x"), TRIAL, NOW)


def test_patient_keys_are_keyed_hashes_shared_by_replicas_and_no_patient_id_is_stored(
    store: AlertStore, db_url: str
) -> None:
    key = store.patient_key(FHIR, PID)
    assert PID not in key
    assert len(key) == 64
    assert store.patient_key(FHIR + "/", PID) == key
    assert store.patient_key("https://other.example/fhir", PID) != key
    replica = AlertStore(create_engine(db_url), AlertPolicy())  # no secret configured: the stored key
    assert replica.patient_key(FHIR, PID) == key
    configured = AlertStore(store.engine, AlertPolicy(), secret="site-secret")
    assert configured.patient_key(FHIR, PID) != key
    store.record_issued([CARD], key, TRIAL, NOW)
    store.apply_feedback([_item("overridden")], NOW)
    store.save_report("<html>report</html>", TRIAL, NOW)
    with store.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f"SELECT * FROM {table}")):
                assert PID not in " ".join(str(v) for v in row), table


def test_report_pages_expire_and_only_the_token_hash_is_stored(store: AlertStore) -> None:
    token = store.save_report("<html>page</html>", TRIAL, NOW)
    assert len(token) >= 32
    assert store.load_report(token, NOW + timedelta(minutes=59)) == "<html>page</html>"
    assert store.load_report(token, NOW + timedelta(hours=1)) is None
    assert store.load_report("x" + token, NOW) is None
    with store.engine.connect() as conn:
        assert token not in str(conn.execute(text("SELECT token_hash FROM cds_report_page")).all())


# ---------------------------------------------------------------------- the chart


def consent(status: str = "active", provision: str = "deny", scope: str = "research", end: str | None = None) -> dict:
    out: dict[str, Any] = {
        "resourceType": "Consent",
        "id": "consent-1",
        "status": status,
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": scope}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{PID}"},
        "provision": {"type": provision},
    }
    if end:
        out["provision"]["period"] = {"end": end}
    return out


def research_subject(study: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "ResearchSubject",
        "id": "rs-1",
        "status": "candidate",
        "study": study,
        "individual": {"reference": f"Patient/{PID}"},
    }


OURS = {"system": REFERRAL_SYSTEM, "code": "refer-to-study-team"}


def referral(status: str = "active", code: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": "sr-1",
        "status": status,
        "intent": "order",
        "code": code or {"coding": [{"system": REFERRAL_SYSTEM, "code": "refer-to-study-team"}]},
        "subject": {"reference": f"Patient/{PID}"},
    }


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (consent(), "research-opt-out"),
        (consent(provision="permit"), None),
        (consent(status="inactive"), None),
        (consent(scope="patient-privacy"), None),
        (consent(end="2026-01-01"), None),
        (consent(end="2027-01-01"), "research-opt-out"),
        (research_subject({"identifier": {"value": TRIAL}}), "research-subject"),
        (research_subject({"reference": "ResearchStudy/other", "display": "NCT99999999"}), None),
        (referral(), "referral-exists"),
        (referral(status="revoked"), None),
        (referral(code={"text": f"Referral to the study team of clinical trial {TRIAL}"}), "referral-exists"),
        (referral(code={"text": "Cardiology referral"}), None),
        (
            referral(code={"coding": [OURS], "text": f"Referral to the study team of clinical trial {TRIAL}"}),
            "referral-exists",
        ),
        # our referral code, made from another trial's card: that trial's, not this one's
        (referral(code={"coding": [OURS], "text": "Referral to the study team of clinical trial NCT00000001"}), None),
        ({**consent(), "patient": {"reference": "Patient/someone-else"}}, None),
    ],
)
def test_chart_suppression(resource: dict[str, Any], expected: str | None) -> None:
    assert chart_suppression([resource], patient_id=PID, trial_id=TRIAL, today=NOW.date()) == expected


# ---------------------------------------------------------------------- the service


async def _card(client: httpx.AsyncClient, prefetch: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    response = await client.post(SERVICE, json=hook_request(prefetch or full_prefetch()))
    assert response.status_code == 200, response.text
    cards: list[dict[str, Any]] = response.json()["cards"]
    return cards


async def test_dismissed_card_stays_away_for_that_patient_only(client: httpx.AsyncClient, engine: Any) -> None:
    first = await _card(client)
    assert len(first) == 1
    feedback = {
        "feedback": [
            {
                "card": first[0]["uuid"],
                "outcome": "overridden",
                "overrideReason": {"reason": {"system": OVERRIDE_REASON_SYSTEM, "code": "not-a-candidate"}},
                "outcomeTimestamp": "2026-11-01T10:00:00Z",
            }
        ]
    }
    assert (await client.post(f"{SERVICE}/feedback", json=feedback)).status_code == 200
    calls = len(engine.calls)
    assert await _card(client) == []
    assert len(engine.calls) == calls, "a snoozed card costs no evaluation"
    other = full_prefetch("pat-other")
    other["patient"] = patient("pat-other")
    response = await client.post(SERVICE, json=hook_request(other, pid="pat-other"))
    assert len(response.json()["cards"]) == 1, "another patient still gets the card"


async def test_accepted_referral_replaces_the_card_by_a_quiet_referred_card(client: httpx.AsyncClient) -> None:
    card = (await _card(client))[0]
    suggestion = card["suggestions"][0]["uuid"]
    feedback = {
        "card": card["uuid"],
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": suggestion}],
        "outcomeTimestamp": "2026-10-31T08:00:00Z",
    }
    await client.post(f"{SERVICE}/feedback", json={"feedback": [feedback]})
    quiet = await _card(client)
    assert len(quiet) == 1
    assert quiet[0]["summary"] == "Referred to the NCT04582136 study team on 2026-10-31"
    assert quiet[0]["indicator"] == "info"
    assert "suggestions" not in quiet[0]
    assert "detail" not in quiet[0]


@pytest.mark.parametrize(
    ("key", "resource"),
    [
        ("consents", consent()),
        ("researchSubjects", research_subject({"display": f"Sirolimus in SLE ({TRIAL})"})),
        ("referrals", referral()),
    ],
)
async def test_chart_gate_in_prefetch_means_no_card(
    client: httpx.AsyncClient, engine: Any, key: str, resource: dict[str, Any]
) -> None:
    prefetch = full_prefetch()
    prefetch[key] = searchset([resource])
    assert await _card(client, prefetch) == []
    assert engine.calls == [], "suppressed before evaluation"


async def test_a_permitting_consent_does_not_stop_the_card(client: httpx.AsyncClient) -> None:
    prefetch = full_prefetch()
    prefetch["consents"] = searchset([consent(provision="permit")])
    assert len(await _card(client, prefetch)) == 1


async def test_unreadable_gate_data_still_shows_the_card(make_client: Any, settings: Settings) -> None:
    prefetch = full_prefetch()
    for key in ("consents", "researchSubjects", "referrals"):
        del prefetch[key]
    no_fetch = settings.model_copy(update={"fhir_allowed_servers": []})
    async with make_client(no_fetch) as client:
        response = await client.post(SERVICE, json=hook_request(prefetch, fhir_server=None))
    assert len(response.json()["cards"]) == 1


async def test_a_failing_alert_database_never_costs_the_card(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from cds.service.app import create_app

    app = create_app(settings)

    def broken(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT 1", {}, Exception("database is down"))

    async with app.router.lifespan_context(app):
        for name in ("status", "record_issued", "save_report", "issue"):
            monkeypatch.setattr(app.state.cds.alerts, name, broken)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as client:
            cards = await _card(client)
    assert len(cards) == 1
    assert [link["url"] for link in cards[0]["links"]] == ["https://clinicaltrials.gov/study/NCT04582136"]
