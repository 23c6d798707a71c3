"""A FHIR JSON client for the sandbox tests that talk to the session's HAPI server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture
def fhir(hapi_base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60.0, headers={"Accept": "application/fhir+json"}) as client:
        yield client
