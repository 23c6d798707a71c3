"""No token, JWT or patient identifier in the logs of a full run.

The service runs under uvicorn on a loopback port (access log on, every logger at DEBUG), with JWT
authentication on and a FHIR server (a mock transport) serving a fixture patient. A run sends
token-bearing hook calls (prefetch and FHIR fetch), a replayed and a tampered JWT, a 412 and a 400,
feedback with a comment, and reads the feedback back. Every log record (all loggers), everything
written to stdout/stderr (file descriptors included) and the JSON lines of the service are searched
for the JWTs, the FHIR access token, the patient id, names and birth date.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from cds.config import Settings
from cds.service.app import create_app
from cds.service.demo import DEFAULT_PATIENT, build_request
from cds.service.logs import JsonFormatter
from tests.security.fake_ehr import ISSUER, FakeEhr, bearer, tamper_signature

PID = "pt-Hx93kq7"
FAMILY = "Quillfeatherstone"
ACCESS_TOKEN = "fhir-at-7d0c1b5e9a"
FHIR = "https://ehr.test/fhir"
BROKEN_FHIR = "https://ehr.test/broken"
COMMENT = f"{FAMILY} declined, call back in spring"  # users may type names in comments


def _fixture_bundle() -> dict[str, Any]:
    text = DEFAULT_PATIENT.read_text(encoding="utf-8")
    text = text.replace("base-candidate", PID).replace('"Fixture"', f'"{FAMILY}"')
    bundle: dict[str, Any] = json.loads(text)
    return bundle


def _fhir_server(bundle: dict[str, Any]) -> httpx.MockTransport:
    resources = [e["resource"] for e in bundle["entry"]]

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/broken/"):
            return httpx.Response(500, text=f"internal error for Patient/{PID}")
        parts = request.url.path.removeprefix("/fhir/").split("/")
        if len(parts) == 2 and parts[0] == "Patient":
            found = [r for r in resources if r["resourceType"] == "Patient" and r["id"] == parts[1]]
            return httpx.Response(200, json=found[0]) if found else httpx.Response(404)
        matching = [r for r in resources if r["resourceType"] == parts[0]]
        return httpx.Response(
            200,
            json={"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in matching]},
        )

    return httpx.MockTransport(handle)


def test_no_token_jwt_or_patient_identifier_in_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    bundle = _fixture_bundle()
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    birth_date = patient["birthDate"]
    given = patient["name"][0]["given"][0]
    assert given == PID  # the fixtures name patients after their id

    ehr = FakeEhr()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/feedback.sqlite3",
        as_of="2026-11-01",
        auth_required=True,
        auth_issuers=[ISSUER],
        auth_jwks_file=str(ehr.write_jwks(tmp_path / "jwks.json")),
        fhir_allowed_servers=[FHIR, BROKEN_FHIR],
        log_level="DEBUG",
    )
    service_json = io.StringIO()
    json_handler = logging.StreamHandler(service_json)
    json_handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(json_handler)
    caplog.set_level(logging.DEBUG)  # every logger, every level
    tokens: list[str] = []
    statuses: list[int] = []
    try:
        app = create_app(settings, fhir_transport=_fhir_server(bundle))
        server = uvicorn.Server(uvicorn.Config(app, log_level="debug", access_log=True, lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive(), "the service did not start"
            assert time.monotonic() < deadline, "the service did not start in time"
            time.sleep(0.02)
        service = f"{base}/cds-services/nct04582136-prescreen"

        def jwt_for(url: str) -> str:
            token = ehr.token(audience=url)
            tokens.append(token)
            return token

        with httpx.Client(timeout=30, trust_env=False) as client:
            with_prefetch = build_request(bundle, fhir_server=FHIR)
            with_prefetch["fhirAuthorization"] = {"access_token": ACCESS_TOKEN, "token_type": "Bearer"}
            first = jwt_for(service)
            response = client.post(service, json=with_prefetch, headers={"Authorization": bearer(first)})
            statuses.append(response.status_code)
            assert response.status_code == 200, response.text
            assert response.json()["cards"], "the fixture patient is a candidate"

            fetched = {k: v for k, v in with_prefetch.items() if k != "prefetch"}
            response = client.post(service, json=fetched, headers={"Authorization": bearer(jwt_for(service))})
            statuses.append(response.status_code)
            assert response.status_code == 200, response.text

            replayed = client.post(service, json=fetched, headers={"Authorization": bearer(first)})
            tampered_token = tamper_signature(jwt_for(service))
            tokens.append(tampered_token)
            tampered = client.post(service, json=fetched, headers={"Authorization": bearer(tampered_token)})
            statuses += [replayed.status_code, tampered.status_code]
            assert replayed.status_code == tampered.status_code == 401

            failing = {**fetched, "fhirServer": BROKEN_FHIR}
            response = client.post(service, json=failing, headers={"Authorization": bearer(jwt_for(service))})
            statuses.append(response.status_code)
            assert response.status_code == 412

            bad_id = {**fetched, "context": {**fetched["context"], "patientId": f"{PID}/../{FAMILY}"}}
            response = client.post(service, json=bad_id, headers={"Authorization": bearer(jwt_for(service))})
            statuses.append(response.status_code)
            assert response.status_code == 400

            card = client.post(service, json=with_prefetch, headers={"Authorization": bearer(jwt_for(service))})
            card_uuid = card.json()["cards"][0]["uuid"]
            feedback_url = f"{service}/feedback"
            feedback = {
                "feedback": [
                    {
                        "card": card_uuid,
                        "outcome": "overridden",
                        "overrideReason": {"userComment": COMMENT},
                        "outcomeTimestamp": "2026-11-01T10:00:00Z",
                    }
                ]
            }
            response = client.post(
                feedback_url, json=feedback, headers={"Authorization": bearer(jwt_for(feedback_url))}
            )
            statuses.append(response.status_code)
            assert response.status_code == 200
            response = client.get(feedback_url, headers={"Authorization": bearer(jwt_for(feedback_url))})
            assert response.json()["feedback"][0]["overrideReasons"][0]["userComment"] == COMMENT
        server.should_exit = True
        thread.join(timeout=10)
    finally:
        root.removeHandler(json_handler)
        sock.close()

    captured = capfd.readouterr()
    records = "\n".join(f"{r.name} {r.levelname} {r.getMessage()} {r.__dict__!r}" for r in caplog.records)
    everything = "\n".join([records, service_json.getvalue(), captured.out, captured.err])
    assert "hook call" in everything
    assert "auth.refused" in everything
    assert '"POST /cds-services/nct04582136-prescreen HTTP/1.1" 200' in everything, "uvicorn's access log was captured"

    secrets = {"FHIR access token": ACCESS_TOKEN, "patient id": PID, "family name": FAMILY, "birth date": birth_date}
    for i, token in enumerate(tokens):
        _header, payload, signature = token.split(".")
        secrets[f"JWT {i}"] = token
        secrets[f"JWT {i} payload"] = payload
        secrets[f"JWT {i} signature"] = signature
    for what, secret in secrets.items():
        assert secret not in everything, f"{what} leaked into the logs"
