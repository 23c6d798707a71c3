"""The HAPI sandbox answers CORS, so a browser app (the CDS Hooks sandbox on localhost:3000) can read
it directly: the README's sandbox recipe needs this."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration

ORIGIN = "http://localhost:3000"


def test_preflight_from_a_localhost_app_is_allowed(hapi_base_url: str) -> None:
    response = httpx.options(
        f"{hapi_base_url}/Patient",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "GET" in response.headers["access-control-allow-methods"]
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers
    assert "content-type" in allowed_headers


def test_a_read_carries_the_cors_header_and_other_origins_get_none(hapi_base_url: str) -> None:
    read = httpx.get(f"{hapi_base_url}/metadata", headers={"Origin": "http://127.0.0.1:5173"}, timeout=30)
    assert read.status_code == 200
    assert read.headers["access-control-allow-origin"] == "http://127.0.0.1:5173"
    stranger = httpx.get(f"{hapi_base_url}/metadata", headers={"Origin": "https://evil.example"}, timeout=30)
    assert "access-control-allow-origin" not in stranger.headers
