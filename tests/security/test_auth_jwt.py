"""JWT authentication of the CDS client: every bad token is a bare 401, good ones pass once."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds.config import SANDBOX_ISSUER, SANDBOX_JKU, Settings
from cds.errors import AuthenticationFailed
from cds.service.auth import AuthConfig, JwtAuthenticator
from tests.security.builders import SERVICE, app_client, assert_outcome, base_settings, full_prefetch, hook_request
from tests.security.fake_ehr import (
    BAD_TOKENS,
    BASE,
    ISSUER,
    JKU,
    SERVICE_URL,
    TENANT,
    BadToken,
    FakeEhr,
    bearer,
    new_rsa,
)

FEEDBACK = SERVICE + "/feedback"


@pytest.fixture(scope="module")
def ehr() -> FakeEhr:
    return FakeEhr()


@pytest.fixture
def auth_settings(tmp_path: Path, ehr: FakeEhr) -> Settings:
    return base_settings(
        tmp_path,
        auth_required=True,
        auth_issuers=[ISSUER],
        auth_jwks_file=str(ehr.write_jwks(tmp_path / "jwks.json")),
        auth_jku_allowed=[JKU],
        auth_tenants=[TENANT],
    )


@pytest.fixture
async def client(auth_settings: Settings, ehr: FakeEhr) -> AsyncIterator[httpx.AsyncClient]:
    ehr.published = [ehr.es, ehr.rs]
    async with app_client(auth_settings, jwks_transport=ehr.transport) as c:
        yield c


def _assert_401(response: httpx.Response) -> None:
    body = assert_outcome(response, 401, "login")
    assert response.headers["www-authenticate"] == "Bearer"
    assert body == {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "login", "diagnostics": "authentication failed"}],
    }, "a 401 says nothing about why"


def _headers(authorization: str | None) -> dict[str, str]:
    return {} if authorization is None else {"Authorization": authorization}


def test_the_bad_token_catalogue_is_large() -> None:
    assert len(BAD_TOKENS) >= 50
    assert len({bad.name for bad in BAD_TOKENS}) == len(BAD_TOKENS)


@pytest.mark.parametrize("bad", BAD_TOKENS, ids=lambda b: b.name)
async def test_every_bad_token_is_refused_with_a_bare_401(
    client: httpx.AsyncClient, ehr: FakeEhr, bad: BadToken, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cds")
    authorization = bad.authorization(ehr)
    response = await client.post(SERVICE, json=hook_request(full_prefetch()), headers=_headers(authorization))
    _assert_401(response)
    reasons = [getattr(r, "reason", None) for r in caplog.records if getattr(r, "event", None) == "auth.refused"]
    assert reasons == [bad.reason], "refused for the intended reason (logged as a code)"
    token = (authorization or "").split(" ")[-1]
    if len(token) > 8:
        assert all(token not in r.getMessage() and token not in str(r.__dict__) for r in caplog.records)


@pytest.mark.parametrize("key", ["es", "rs"])
async def test_good_es384_and_rs384_tokens_are_accepted_once(client: httpx.AsyncClient, ehr: FakeEhr, key: str) -> None:
    token = ehr.token(key=getattr(ehr, key))
    response = await client.post(SERVICE, json=hook_request(full_prefetch()), headers={"Authorization": bearer(token)})
    assert response.status_code == 200, response.text
    assert response.json()["cards"]
    replay = await client.post(SERVICE, json=hook_request(full_prefetch()), headers={"Authorization": bearer(token)})
    _assert_401(replay)


async def test_epic_style_claims_and_lowercase_scheme_are_accepted(client: httpx.AsyncClient, ehr: FakeEhr) -> None:
    now = int(time.time())
    token = ehr.token(sub="epic-client-id-1234", nbf=now - 5, aud=[SERVICE_URL], extra={"any": "claim"})
    response = await client.post(
        SERVICE, json=hook_request(full_prefetch()), headers={"Authorization": f"bearer {token}"}
    )
    assert response.status_code == 200, response.text


async def test_small_clock_skew_is_tolerated(client: httpx.AsyncClient, ehr: FakeEhr) -> None:
    now = int(time.time())
    token = ehr.token(iat=now + 10, nbf=now + 10, exp=now + 300)
    response = await client.post(SERVICE, json=hook_request(full_prefetch()), headers={"Authorization": bearer(token)})
    assert response.status_code == 200, response.text


async def test_every_cds_route_needs_a_token_and_health_does_not(client: httpx.AsyncClient, ehr: FakeEhr) -> None:
    feedback = {"feedback": [{"card": "0b7a2c4e-1111-4a4a-9e9e-0123456789ab", "outcome": "accepted"}]}
    _assert_401(await client.get("/cds-services"))
    _assert_401(await client.post(SERVICE, json=hook_request(full_prefetch())))
    _assert_401(await client.post(FEEDBACK, json=feedback))
    _assert_401(await client.get(FEEDBACK))
    _assert_401(await client.post("/cds-services/unknown", json={}))  # no 404 before authentication
    assert (await client.get("/health")).status_code == 200

    def auth(path: str) -> dict[str, str]:
        return {"Authorization": bearer(ehr.token(audience=BASE + path))}

    assert (await client.get("/cds-services", headers=auth("/cds-services"))).status_code == 200
    assert (await client.post(FEEDBACK, json=feedback, headers=auth(FEEDBACK))).status_code == 200
    listed = await client.get(FEEDBACK, params={"card": feedback["feedback"][0]["card"]}, headers=auth(FEEDBACK))
    assert listed.status_code == 200
    assert len(listed.json()["feedback"]) == 1
    # a token for discovery is not a token for the service (aud is the exact URL called)
    _assert_401(await client.post(SERVICE, json=hook_request(full_prefetch()), headers=auth("/cds-services")))


async def test_authentication_comes_before_reading_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post(SERVICE, content=b"{" * 1000, headers={"Content-Type": "application/json"})
    _assert_401(response)


async def test_cors_preflight_needs_no_token(client: httpx.AsyncClient) -> None:
    response = await client.options(
        SERVICE,
        headers={
            "Origin": "https://sandbox.cds-hooks.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert response.status_code == 200


async def test_public_base_url_is_the_audience_behind_a_proxy(
    tmp_path: Path, auth_settings: Settings, ehr: FakeEhr
) -> None:
    public = "https://cds.example.org"
    settings = auth_settings.model_copy(update={"public_base_url": public})
    async with app_client(settings, base_url="http://10.0.0.7:8080", jwks_transport=ehr.transport) as client:
        body = hook_request(full_prefetch())
        internal = ehr.token(audience="http://10.0.0.7:8080" + SERVICE)
        _assert_401(await client.post(SERVICE, json=body, headers={"Authorization": bearer(internal)}))
        external = ehr.token(audience=public + SERVICE)
        response = await client.post(SERVICE, json=body, headers={"Authorization": bearer(external)})
        assert response.status_code == 200, response.text


async def test_jku_keys_are_fetched_cached_and_refreshed_after_rotation(
    tmp_path: Path, auth_settings: Settings
) -> None:
    ehr = FakeEhr()  # keys known only through the jku URL (the JWKS file holds other keys)
    clock = [time.time()]
    settings = auth_settings.model_copy(update={"auth_jwks_min_refresh_seconds": 60.0})
    async with app_client(settings, jwks_transport=ehr.transport, clock=lambda: clock[0]) as client:
        body = hook_request(full_prefetch())

        async def call(**kwargs: Any) -> httpx.Response:
            return await client.post(SERVICE, json=body, headers={"Authorization": bearer(ehr.token(**kwargs))})

        assert (await call(jku=JKU)).status_code == 200
        assert (await call(jku=JKU, key=ehr.rs)).status_code == 200
        assert len(ehr.jwks_requests) == 1, "the JWKS is cached"
        _assert_401(await call(key=ehr.es))  # without jku only the configured file's keys count

        rotated = ehr.rotate()
        clock[0] += 61  # past the refresh rate limit
        assert (await call(jku=JKU, key=rotated)).status_code == 200, "an unknown kid refreshes the JWKS"
        assert len(ehr.jwks_requests) == 2

        # unknown kids cannot make the service hammer the jku: at most one fetch per 60 s
        stranger = new_rsa("never-published")
        for _ in range(5):
            _assert_401(await call(jku=JKU, key=stranger))
        assert len(ehr.jwks_requests) == 2
        clock[0] += 61
        _assert_401(await call(jku=JKU, key=stranger))
        assert len(ehr.jwks_requests) == 3
        assert all(str(r.url) == JKU for r in ehr.jwks_requests), "only the allow-listed jku is ever fetched"


async def test_refused_jku_urls_are_never_fetched(client: httpx.AsyncClient, ehr: FakeEhr) -> None:
    ehr.jwks_requests.clear()
    for bad in BAD_TOKENS:
        if bad.name.startswith("jku"):
            _assert_401(
                await client.post(SERVICE, json=hook_request(full_prefetch()), headers=_headers(bad.authorization(ehr)))
            )
    assert ehr.jwks_requests == []


async def test_jwks_server_failure_is_a_401_not_a_500(auth_settings: Settings) -> None:
    ehr = FakeEhr()
    ehr.jwks_status = 503
    async with app_client(auth_settings, jwks_transport=ehr.transport) as client:
        response = await client.post(
            SERVICE, json=hook_request(full_prefetch()), headers={"Authorization": bearer(ehr.token(jku=JKU))}
        )
    _assert_401(response)
    assert len(ehr.jwks_requests) == 1


async def test_jwks_file_is_reread_when_it_changes(tmp_path: Path, auth_settings: Settings, ehr: FakeEhr) -> None:
    path = Path(str(auth_settings.auth_jwks_file))
    async with app_client(auth_settings, jwks_transport=ehr.transport) as client:
        newcomer = new_rsa("added-later")
        body = hook_request(full_prefetch())
        _assert_401(await client.post(SERVICE, json=body, headers={"Authorization": bearer(ehr.token(key=newcomer))}))
        ehr.write_jwks(path, [ehr.es, ehr.rs, newcomer])
        response = await client.post(SERVICE, json=body, headers={"Authorization": bearer(ehr.token(key=newcomer))})
        assert response.status_code == 200, response.text


def test_weak_and_unusable_jwks_keys_are_ignored(tmp_path: Path) -> None:
    ehr = FakeEhr()
    weak = new_rsa("weak", bits=1024)
    jwks = ehr.jwks([weak])
    jwks["keys"].append({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"})
    jwks["keys"].append({**ehr.es.jwk, "kid": "enc-key", "use": "enc"})
    jwks["keys"].append({**ehr.es.jwk, "kid": "mislabelled", "alg": "RS384"})
    jwks["keys"].append("not a key")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    authenticator = JwtAuthenticator(AuthConfig(issuers=(ISSUER,), jwks_file=str(path)))
    assert authenticator._file_keys == {}


async def test_replayed_token_is_refused_until_it_expires_then_as_expired(ehr: FakeEhr) -> None:
    now = [time.time()]
    authenticator = JwtAuthenticator(
        AuthConfig(issuers=(ISSUER,), jku_allowed=(JKU,), tenants=(TENANT,)),
        transport=ehr.transport,
        clock=lambda: now[0],
    )
    token = ehr.token(jku=JKU)
    await authenticator.authenticate(bearer(token), SERVICE_URL)
    with pytest.raises(AuthenticationFailed):
        await authenticator.authenticate(bearer(token), SERVICE_URL)
    now[0] += 400
    with pytest.raises(AuthenticationFailed):
        await authenticator.authenticate(bearer(token), SERVICE_URL)
    await authenticator.aclose()


def test_sandbox_flag_adds_the_sandbox_issuer_and_jku_only_when_set() -> None:
    assert Settings().trusted_issuers == []
    assert Settings().trusted_jku == []
    dev = Settings(auth_trust_sandbox=True, auth_issuers=[ISSUER])
    assert dev.trusted_issuers == [ISSUER, SANDBOX_ISSUER]
    assert dev.trusted_jku == [SANDBOX_JKU]
    assert Settings().auth_required is True, "authentication is on unless turned off"


async def test_sandbox_style_token_is_accepted_with_the_flag(tmp_path: Path) -> None:
    """A token shaped like the sandbox's (ES384, its iss and jku), signed with a test key served at the jku."""
    sandbox = FakeEhr(issuer=SANDBOX_ISSUER, jku=SANDBOX_JKU)
    settings = base_settings(tmp_path, auth_required=True, auth_trust_sandbox=True)
    async with app_client(settings, jwks_transport=sandbox.transport) as client:
        token = sandbox.token(jku=SANDBOX_JKU)
        response = await client.post(
            SERVICE, json=hook_request(full_prefetch()), headers={"Authorization": bearer(token)}
        )
        assert response.status_code == 200, response.text
    async with app_client(base_settings(tmp_path, auth_required=True), jwks_transport=sandbox.transport) as client:
        token = sandbox.token(jku=SANDBOX_JKU)
        _assert_401(
            await client.post(SERVICE, json=hook_request(full_prefetch()), headers={"Authorization": bearer(token)})
        )


async def test_no_issuer_configured_refuses_everything(tmp_path: Path, ehr: FakeEhr) -> None:
    settings = base_settings(tmp_path, auth_required=True, auth_jwks_file=str(ehr.write_jwks(tmp_path / "k.json")))
    async with app_client(settings) as client:
        _assert_401(
            await client.get(
                "/cds-services", headers={"Authorization": bearer(ehr.token(audience=BASE + "/cds-services"))}
            )
        )
