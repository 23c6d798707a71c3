"""OIDC sign-in (authorization code + PKCE) against a fake provider, in-process: the PKCE verifier
reaches the token endpoint, and wrong state, nonce, audience, signature or user are refused."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from cds.service.app import create_app
from cds.worklist.oidc import OidcClient, code_challenge
from tests.worklist.builders import NOW, db_url, seed
from tests.worklist.fake_idp import FakeIdp, _key
from tests.worklist.test_routes import settings_for

ISSUER = "https://idp.test"


@pytest.fixture
def idp() -> FakeIdp:
    return FakeIdp(issuer=ISSUER)


@pytest.fixture
async def client(tmp_path: Path, idp: FakeIdp) -> AsyncIterator[httpx.AsyncClient]:
    seed(db_url(tmp_path))
    settings = settings_for(
        tmp_path,
        worklist_oidc_issuer=ISSUER,
        worklist_oidc_client_id="worklist",
        worklist_oidc_users=["coordinator@example.org"],
    )
    app = create_app(settings, clock=NOW.timestamp)
    oidc = app.state.worklist.oidc
    assert isinstance(oidc, OidcClient)
    oidc.transport = httpx.ASGITransport(app=idp.app())
    oidc.clock = lambda: 0.0
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://cds.test") as c:
            yield c


async def _authorize(client: httpx.AsyncClient, idp: FakeIdp) -> tuple[str, str]:
    """Start the sign-in and let the provider answer: (code, state) of its redirect back."""
    start = await client.get("/worklist/oidc/start")
    assert start.status_code == 303
    location = start.headers["location"]
    assert location.startswith(ISSUER + "/authorize?")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=idp.app()), base_url=ISSUER) as provider:
        answer = await provider.get(location)
    back = parse_qs(urlsplit(answer.headers["location"]).query)
    return back["code"][0], back["state"][0]


def test_the_code_challenge_is_s256_of_the_verifier() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 appendix B
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    digest = hashlib.sha256(verifier.encode()).digest()
    assert code_challenge(verifier) == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_an_http_issuer_is_refused_unless_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        OidcClient(issuer="http://idp.example.org", client_id="c", client_secret=None, allowed_users=frozenset())
    OidcClient(issuer="http://127.0.0.1:9999", client_id="c", client_secret=None, allowed_users=frozenset())


async def test_the_login_page_offers_oidc_and_the_start_sets_a_lax_transaction_cookie(
    client: httpx.AsyncClient,
) -> None:
    assert 'href="/worklist/oidc/start"' in (await client.get("/worklist/login")).text
    start = await client.get("/worklist/oidc/start")
    query = parse_qs(urlsplit(start.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"] == ["https://cds.test/worklist/oidc/callback"]
    assert {"state", "nonce", "code_challenge"} <= query.keys()
    cookie = next(v for v in start.headers.get_list("set-cookie") if v.startswith("cds_worklist_oidc="))
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" in cookie


async def test_a_listed_user_signs_in_with_pkce(client: httpx.AsyncClient, idp: FakeIdp) -> None:
    code, state = await _authorize(client, idp)
    done = await client.get("/worklist/oidc/callback", params={"code": code, "state": state})
    assert done.status_code == 200
    assert 'http-equiv="refresh"' in done.text
    (token_request,) = idp.token_requests
    assert token_request["grant_type"] == "authorization_code"
    assert len(token_request["code_verifier"]) >= 43
    page = await client.get("/worklist")
    assert page.status_code == 200
    assert "Signed in as <strong>coordinator@example.org</strong>" in page.text


async def test_a_wrong_state_is_refused(client: httpx.AsyncClient, idp: FakeIdp) -> None:
    code, _ = await _authorize(client, idp)
    response = await client.get("/worklist/oidc/callback", params={"code": code, "state": "forged"})
    assert response.status_code == 403
    assert idp.token_requests == []
    assert (await client.get("/worklist")).status_code == 303


@pytest.mark.parametrize(
    ("tamper", "value"),
    [
        ("user", "someone-else@example.org"),  # signed in at the provider, not allowed here
        ("aud", "another-client"),
        ("nonce", "another-nonce"),
        ("signing_key", "other"),
    ],
)
async def test_a_bad_id_token_or_user_is_refused(
    client: httpx.AsyncClient, idp: FakeIdp, tamper: str, value: str
) -> None:
    setattr(idp, tamper, _key() if value == "other" else value)
    code, state = await _authorize(client, idp)
    response = await client.get("/worklist/oidc/callback", params={"code": code, "state": state})
    assert response.status_code == 403
    assert not any(v.startswith("cds_worklist=") for v in response.headers.get_list("set-cookie"))
    assert (await client.get("/worklist")).status_code == 303
