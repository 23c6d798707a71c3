"""The not-applicable fast path and the dated Observation fallback search change speed, not answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from service_helpers import FHIR, SERVICE

from cds.config import Settings
from cds.service.demo import build_request, load_bundle
from cds.service.state import default_evaluator
from cds.trials.nct04582136 import TRIAL
from tests.fhir_json import without_uuids

PATIENTS = Path(__file__).resolve().parents[2] / "fixtures" / "patients"
EXPECTED = json.loads((PATIENTS.parent / "expected.json").read_text(encoding="utf-8"))


class CountingEvaluator:
    def __init__(self) -> None:
        self.inner = default_evaluator(TRIAL)
        self.calls = 0

    def __call__(self, resources: list[dict[str, Any]], **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner(resources, **kwargs)


@pytest.mark.parametrize("pid", sorted(EXPECTED))
async def test_fast_path_gives_the_same_answer_as_full_evaluation(
    make_client: Any, settings: Settings, pid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = build_request(load_bundle(PATIENTS / f"{pid}.json"), fhir_server=None)
    fast = CountingEvaluator()
    async with make_client(settings, evaluator=fast) as client:
        with_fast_path = await client.post(SERVICE, json=request)
    monkeypatch.setattr(type(TRIAL), "certainly_excluded_without_evaluation", lambda *a, **k: False)
    slow = CountingEvaluator()
    async with make_client(settings, evaluator=slow) as client:
        without = await client.post(SERVICE, json=request)
    assert with_fast_path.status_code == without.status_code == 200
    assert without_uuids(with_fast_path.json()) == without_uuids(without.json())
    assert slow.calls == 1
    if fast.calls == 0:  # the fast path was taken: only ever for patients without any lupus code
        assert EXPECTED[pid]["verdict"] == "excluded"
        assert with_fast_path.json() == {"cards": []}


async def test_non_lupus_patient_skips_the_engine(make_client: Any, settings: Settings) -> None:
    request = build_request(load_bundle(PATIENTS / "real-non-lupus.json"), fhir_server=None)
    counting = CountingEvaluator()
    async with make_client(settings, evaluator=counting) as client:
        response = await client.post(SERVICE, json=request)
    assert response.json() == {"cards": []}
    assert counting.calls == 0


async def test_an_invalid_condition_the_criteria_read_never_takes_the_fast_path(
    make_client: Any, settings: Settings
) -> None:
    request = build_request(load_bundle(PATIENTS / "real-non-lupus.json"), fhir_server=None)
    conditions = request["prefetch"]["conditions"]["entry"]
    conditions[0]["resource"]["onsetDateTime"] = "not a date"
    conditions[0]["resource"]["code"] = {"coding": [{"system": "http://snomed.info/sct", "code": "77386006"}]}
    counting = CountingEvaluator()
    async with make_client(settings, evaluator=counting) as client:
        await client.post(SERVICE, json=request)
    assert counting.calls == 1


async def test_an_invalid_condition_no_criterion_reads_still_takes_the_fast_path(
    make_client: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The full evaluation never validates a Condition no criterion can read (the engine's
    pre-filter), so such a record cannot change its answer: the fast path answers the same."""
    request = build_request(load_bundle(PATIENTS / "real-non-lupus.json"), fhir_server=None)
    conditions = request["prefetch"]["conditions"]["entry"]
    conditions.append(
        {
            "resource": {
                "resourceType": "Condition",
                "id": "c-employment",
                "subject": {"reference": "Patient/real-non-lupus"},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "160903007"}]},
                "onsetDateTime": "not a date",
            }
        }
    )
    counting = CountingEvaluator()
    async with make_client(settings, evaluator=counting) as client:
        fast = await client.post(SERVICE, json=request)
    assert counting.calls == 0
    monkeypatch.setattr(type(TRIAL), "certainly_excluded_without_evaluation", lambda *a, **k: False)
    async with make_client(settings, evaluator=default_evaluator(TRIAL)) as client:
        full = await client.post(SERVICE, json=request)
    assert fast.status_code == full.status_code == 200
    assert fast.json() == full.json() == {"cards": []}


async def test_fallback_observation_search_is_bounded_by_the_lookback(
    make_client: Any, settings: Settings, respx_mock: respx.MockRouter
) -> None:
    request = build_request(load_bundle(PATIENTS / "base-candidate.json"), fhir_server=FHIR)
    bundle = request["prefetch"].pop("observations")
    seen: list[httpx.URL] = []

    def observations(req: httpx.Request) -> httpx.Response:
        seen.append(req.url)
        return httpx.Response(200, json=bundle)

    respx_mock.get(f"{FHIR}/Observation").mock(side_effect=observations)
    async with make_client(settings, evaluator=default_evaluator(TRIAL)) as client:
        response = await client.post(SERVICE, json=request)
    assert response.status_code == 200
    (url,) = seen
    cutoff = TRIAL.observation_cutoff(settings.as_of)
    assert url.params["date"] == f"ge{cutoff.isoformat()}"
    assert url.params["patient"] == "base-candidate"
    # the advertised prefetch template carries no date (CDS Hooks 2.0 tokens cannot express one)
    async with make_client(settings) as client:
        discovery = (await client.get("/cds-services")).json()
    assert "date=" not in discovery["services"][0]["prefetch"]["observations"]


class _Untouchable:
    """An alert store that fails the test if the fast path touches it."""

    def __init__(self) -> None:
        self.touched: list[str] = []

    def __getattr__(self, attribute: str) -> Any:
        self.touched.append(attribute)  # (the service survives a failing alert store: look afterwards)
        raise RuntimeError("the fast path used the alert store")


async def test_fast_path_reads_no_alert_state_and_writes_nothing(settings: Settings) -> None:
    """Regression (issue 14, fast path at 0.5x the floor): a prefetched chart without any lupus code
    used to read the alert state from the database and gather the alert gate before the fast path."""
    from cds.service.app import create_app

    counting = CountingEvaluator()
    app = create_app(settings, evaluator=counting)
    request = build_request(load_bundle(PATIENTS / "real-non-lupus.json"), fhir_server=FHIR)
    async with app.router.lifespan_context(app):
        state = app.state.cds
        state.alerts = alerts = _Untouchable()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as client:
            with respx.mock(assert_all_called=False) as fhir:
                fhir_route = fhir.route(url__startswith=FHIR).mock(return_value=httpx.Response(500))
                response = await client.post(SERVICE, json=request)
    assert response.status_code == 200, response.text
    assert fhir_route.call_count == 0, "nothing fetched (the gate's data included)"
    assert alerts.touched == [], "no alert state read, nothing stored"
    assert response.json() == {"cards": []}
    assert counting.calls == 0


async def test_a_referred_patient_without_the_disease_gets_no_reminder_card(settings: Settings) -> None:
    """The referral reminder replaces a prescreen card; a chart with no lupus code has none to replace
    (the same answer whether the chart was prefetched or fetched)."""
    from datetime import date

    from cds.service.alerts import AlertStatus
    from cds.service.app import create_app

    class Referred:
        def patient_key(self, fhir_server: str | None, patient_id: str) -> str:
            return "key"

        def status(self, key: str, trial_id: str, now: object) -> AlertStatus:
            return AlertStatus(referred_on=date(2026, 10, 1))

    app = create_app(settings, evaluator=CountingEvaluator())
    request = build_request(load_bundle(PATIENTS / "real-non-lupus.json"), fhir_server=FHIR)
    request["prefetch"].pop("observations")  # something to fetch: the alert state is read first
    async with app.router.lifespan_context(app):
        app.state.cds.alerts = Referred()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as client:
            with respx.mock(assert_all_called=False) as mock:
                mock.get(url__startswith=FHIR).mock(
                    return_value=httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset"})
                )
                response = await client.post(SERVICE, json=request)
    assert response.status_code == 200, response.text
    assert response.json() == {"cards": []}


class RecordingEvaluator(CountingEvaluator):
    def __init__(self) -> None:
        super().__init__()
        self.resources: list[dict[str, Any]] = []

    def __call__(self, resources: list[dict[str, Any]], **kwargs: Any) -> Any:
        self.resources = resources
        return super().__call__(resources, **kwargs)


async def test_the_engine_is_handed_no_observation_no_criterion_reads(make_client: Any, settings: Settings) -> None:
    """Before the engine runs, the call lets go of the Observations no criterion reads (on a big
    prefetch, most of its memory): the engine never sees them, and the card is the same."""
    request = build_request(load_bundle(PATIENTS / "real-active-sle.json"), fhir_server=None)
    vitals = {
        "resourceType": "Observation", "id": "bp-1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}]},
        "subject": {"reference": "Patient/real-active-sle"}, "effectiveDateTime": "2026-10-20",
        "valueQuantity": {"value": 128, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
    }  # fmt: skip
    before = RecordingEvaluator()
    async with make_client(settings, evaluator=before) as client:
        plain = await client.post(SERVICE, json=request)
    observations = request["prefetch"]["observations"]
    observations["entry"] = [*observations.get("entry", []), {"resource": vitals}]
    observations["total"] = len(observations["entry"])
    after = RecordingEvaluator()
    async with make_client(settings, evaluator=after) as client:
        with_vitals = await client.post(SERVICE, json=request)
    assert plain.status_code == with_vitals.status_code == 200
    assert without_uuids(plain.json()) == without_uuids(with_vitals.json())
    assert after.calls == 1
    assert "bp-1" not in {r.get("id") for r in after.resources}
    assert {r.get("id") for r in after.resources} == {r.get("id") for r in before.resources}


async def test_the_fast_path_reads_only_the_patient_and_conditions(
    make_client: Any, settings: Settings, respx_mock: respx.MockRouter
) -> None:
    """A chart without the trial's disease is answered from its Patient and Conditions: the other
    keys are not read, so neither a missing one nor one that does not fit is fetched from the FHIR
    server (before, a non-lupus chart waited for every key to be complete)."""
    request = build_request(load_bundle(PATIENTS / "real-non-lupus.json"), fhir_server=FHIR)
    request["prefetch"].pop("medicationRequests")
    observations = request["prefetch"]["observations"]
    observations["entry"] = [
        {"resource": {**observations["entry"][0]["resource"], "subject": {"reference": "Patient/x"}}}
    ]
    fhir = respx_mock.route(host="fhir.test").mock(return_value=httpx.Response(500))
    counting = CountingEvaluator()
    async with make_client(settings, evaluator=counting) as client:
        response = await client.post(SERVICE, json=request)
    assert response.status_code == 200
    assert response.json() == {"cards": []}
    assert counting.calls == 0
    assert fhir.call_count == 0


async def test_a_lupus_chart_with_a_key_to_fetch_is_still_fetched_and_evaluated(
    make_client: Any, settings: Settings, respx_mock: respx.MockRouter
) -> None:
    """The fast path's two keys being complete does not skip the rest for a chart that has the disease."""
    request = build_request(load_bundle(PATIENTS / "real-active-sle.json"), fhir_server=FHIR)
    bundle = request["prefetch"].pop("medicationRequests")
    fetched = respx_mock.get(f"{FHIR}/MedicationRequest").mock(return_value=httpx.Response(200, json=bundle))
    counting = CountingEvaluator()
    async with make_client(settings, evaluator=counting) as client:
        response = await client.post(SERVICE, json=request)
    assert response.status_code == 200
    assert counting.calls == 1
    assert fetched.call_count == 1
