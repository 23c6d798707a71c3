"""Session-wide fixtures. The real HAPI FHIR server is started once per test session, on demand.

`hapi_base_url` builds the Maven launcher if needed and starts HAPI on a free loopback port (about
25 s), or attaches to `HAPI_SANDBOX_URL`. Without Java/Maven the integration tests are skipped with
the reason, except when `CDS_REQUIRE_HAPI=1` (as `.ci/run` sets): then they fail, never skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

FIXTURE_PATIENTS = Path(__file__).resolve().parents[1] / "fixtures" / "patients"


def _unavailable(reason: str) -> None:
    if os.environ.get("CDS_REQUIRE_HAPI") == "1":
        pytest.fail(f"HAPI FHIR sandbox required (CDS_REQUIRE_HAPI=1) but unavailable: {reason}", pytrace=False)
    pytest.skip(f"HAPI FHIR sandbox unavailable: {reason}")


@pytest.fixture(scope="session")
def hapi_base_url() -> Iterator[str]:
    """Base URL of a real HAPI FHIR R4 server for the whole session, stopped at the end."""
    from cds.sandbox import TARGET_DIR, HapiSandbox, SandboxError, free_port

    url = os.environ.get("HAPI_SANDBOX_URL")
    log = TARGET_DIR / "hapi-sandbox-pytest.log"
    try:
        sandbox = HapiSandbox(base_url=url, log_path=log) if url else HapiSandbox(free_port(), log_path=log)
        sandbox.start()
    except SandboxError as exc:
        _unavailable(str(exc))
        raise  # unreachable: _unavailable always raises
    try:
        yield sandbox.base_url
    finally:
        sandbox.stop()


@pytest.fixture(scope="session")
def hapi_with_fixtures(hapi_base_url: str) -> str:
    """HAPI with every fixture patient loaded (idempotent PUTs with the fixtures' own ids)."""
    from cds.sandbox import load_bundles

    load_bundles(hapi_base_url, sorted(FIXTURE_PATIENTS.glob("*.json")))
    return hapi_base_url
