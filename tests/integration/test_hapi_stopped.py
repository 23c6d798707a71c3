"""A real HAPI FHIR server stopped in the middle of a run: the next hook is a 412 within the budget.

Uses its own HAPI process (the session's server must keep running for the other tests).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from cds.config import Settings
from cds.service.app import create_app
from cds.service.demo import build_request, load_bundle
from tests.conftest import FIXTURE_PATIENTS, _unavailable

pytestmark = pytest.mark.integration
SERVICE = "/cds-services/nct04582136-prescreen"


async def test_hapi_stopped_mid_run_gives_412_within_the_budget(tmp_path: Path) -> None:
    from sandbox import TARGET_DIR, HapiSandbox, SandboxError, free_port, load_bundles

    sandbox = HapiSandbox(free_port(), log_path=TARGET_DIR / "hapi-sandbox-stopped-test.log", startup_timeout=600.0)
    try:
        sandbox.start()
    except SandboxError as exc:
        _unavailable(str(exc))
    try:
        load_bundles(sandbox.base_url, [FIXTURE_PATIENTS / "base-candidate.json"])
        deadline = 2.0
        settings = Settings(
            database_url=f"sqlite:///{tmp_path}/feedback.sqlite3",
            as_of="2026-11-01",
            auth_required=False,
            fhir_allowed_servers=[sandbox.base_url],
            fhir_timeout=1.5,
            fhir_deadline=deadline,
        )
        request = build_request(load_bundle(FIXTURE_PATIENTS / "base-candidate.json"), fhir_server=sandbox.base_url)
        del request["prefetch"]
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://cds.test", timeout=30) as client:
                first = await client.post(SERVICE, json=request)
                assert first.status_code == 200, first.text
                assert first.json()["cards"], "the base candidate gets a card while HAPI runs"
                sandbox.stop()  # SIGTERM to the real server; pooled connections to it die
                started = time.perf_counter()
                second = await client.post(SERVICE, json=request)
                elapsed = time.perf_counter() - started
    finally:
        sandbox.stop()
    assert second.status_code == 412, second.text
    body = second.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "transient"  # a stopped server: unreachable (FHIR_OUTCOMES)
    assert elapsed < deadline + 1.0, f"answered in {elapsed:.2f} s"
