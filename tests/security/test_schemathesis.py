"""Schemathesis against the service's own OpenAPI schema (built with ``app.openapi()``; not published).

Two apps: authentication off (deep fuzzing of bodies, with FHIR fetching allowed for one base served
by a stub that answers 404, so fetch paths are exercised), and authentication on (every CDS route
must answer a documented 401, never a 5xx). All of schemathesis' checks run (no server errors,
documented status codes, content types, headers and response schemas, positive and negative data).
"""

from __future__ import annotations

import tempfile
from collections import Counter

import httpx
import schemathesis
from hypothesis import HealthCheck, settings

from cds.config import Settings
from cds.service.app import create_app

EXAMPLES_PER_OPERATION = 40
CASES: Counter[str] = Counter()


def _settings(**overrides: object) -> Settings:
    tmp = tempfile.mkdtemp(prefix="cds-schemathesis-")
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp}/feedback.sqlite3",
        "fhir_allowed_servers": ["https://ehr.test/fhir"],
        "fhir_timeout": 0.3,
        "fhir_deadline": 0.5,
        "log_level": "ERROR",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


OPEN_APP = create_app(
    _settings(auth_required=False), fhir_transport=httpx.MockTransport(lambda request: httpx.Response(404))
)
AUTH_APP = create_app(_settings(auth_required=True, auth_issuers=["https://ehr.test"]))


def _schema(app: object) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_dict(OPEN_APP.openapi())
    schema.app = app
    schema.config.generation.update(
        modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
        max_examples=EXAMPLES_PER_OPERATION,
    )
    return schema


OPEN = _schema(OPEN_APP)
AUTH = _schema(AUTH_APP)
BUDGET = settings(
    max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


def test_the_schema_documents_every_route_and_its_errors() -> None:
    paths = OPEN_APP.openapi()["paths"]
    assert set(paths) == {
        "/cds-services",
        "/cds-services/{service_id}",
        "/cds-services/{service_id}/feedback",
        "/health",
        "/ready",
        "/report/{token}",  # the card's full report page (HTML; its random token is the credential)
    }
    hook = paths["/cds-services/{service_id}"]["post"]
    assert hook["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "hook",
        "hookInstance",
        "context",
    ]
    assert {"400", "401", "404", "412"} <= set(hook["responses"])


@OPEN.parametrize()
@BUDGET
def test_no_server_errors_and_a_conforming_api_without_auth(case: schemathesis.Case) -> None:
    CASES["open"] += 1
    response = case.call_and_validate()
    assert response.status_code < 500


@AUTH.parametrize()
@BUDGET
def test_with_auth_on_everything_but_health_is_a_documented_401(case: schemathesis.Case) -> None:
    CASES["auth"] += 1
    response = case.call_and_validate()
    if case.path not in ("/health", "/ready"):
        assert response.status_code in (401, 404, 405), response.status_code


def test_cases_were_run() -> None:
    print(f"\nschemathesis cases: {dict(CASES)}")
    assert CASES["open"] >= 40
    assert CASES["auth"] >= 40
