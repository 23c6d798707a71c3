"""SMART Backend Services at the transport (respx): discovery, the signed client assertion (checked
with the public key), the token cache, one renewal on 401, refusals that name the step and no secret."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from cds.errors import FhirAccessDenied, SmartAuthorizationFailed
from cds.fhir.smart_backend import (
    ASSERTION_TYPE,
    EXPIRY_MARGIN,
    BackendClient,
    BackendServicesAuth,
    SmartConfiguration,
    check_private_key_jwt,
    discover,
    load_signing_key,
    resource_scopes,
    same_origin,
    scope_version,
)
from tests.smart_mocks import smart_configuration

BASE = "https://ehr.test/fhir"
TOKEN_URL = "https://auth.ehr.test/token"
TOKEN = "tok-secret-1"  # a test token, looked for in logs and messages
CLIENT = "population-client"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_file(tmp_path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, name: str = "key.pem") -> Path:
    path = tmp_path / name
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def token_response(token: str = TOKEN, expires_in: int = 300) -> httpx.Response:
    return httpx.Response(
        200, json={"access_token": token, "token_type": "bearer", "expires_in": expires_in, "scope": "system/x.rs"}
    )


def form_of(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return pem_file(tmp_path, rsa_key())


def make_auth(key_path: Path, clock: Clock, http: httpx.Client, kid: str | None = None) -> BackendServicesAuth:
    client = BackendClient(CLIENT, load_signing_key(key_path, kid), TOKEN_URL)
    return BackendServicesAuth(http, client, "system/Patient.rs", clock=clock)


# ---------------------------------------------------------------------------------- discovery


@respx.mock
def test_discovery_reads_the_token_endpoint_and_the_server_capabilities() -> None:
    smart_configuration(respx.mock, BASE, TOKEN_URL)
    with httpx.Client() as http:
        config = discover(http, BASE + "/")
    assert config.token_endpoint == TOKEN_URL
    check_private_key_jwt(config)  # listed: accepted
    assert scope_version(config) == 2


def test_a_server_without_private_key_jwt_is_refused_by_name() -> None:
    config = SmartConfiguration(token_endpoint=TOKEN_URL, auth_methods=("client_secret_basic",))
    with pytest.raises(SmartAuthorizationFailed, match="does not support private_key_jwt"):
        check_private_key_jwt(config)


@respx.mock
@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (httpx.Response(404), "HTTP 404"),
        (httpx.Response(200, text="<html>"), "not JSON"),
        (httpx.Response(200, json={"issuer": "x"}), "no token_endpoint"),
    ],
)
def test_discovery_failures_name_the_step(response: httpx.Response, reason: str) -> None:
    respx.get(f"{BASE}/.well-known/smart-configuration").mock(return_value=response)
    with httpx.Client() as http, pytest.raises(SmartAuthorizationFailed) as exc:
        discover(http, BASE)
    assert "discovery (.well-known/smart-configuration)" in exc.value.message
    assert reason in exc.value.message


def test_v1_scopes_only_when_the_server_advertises_only_v1() -> None:
    types = ["Patient", "Observation", "Observation"]
    assert resource_scopes(types) == "system/Observation.rs system/Patient.rs"
    assert resource_scopes(types, version=1) == "system/Observation.read system/Patient.read"
    v1 = SmartConfiguration(TOKEN_URL, None, capabilities=("permission-v1",))
    assert scope_version(v1) == 1
    assert scope_version(SmartConfiguration(TOKEN_URL, None, scopes_supported=("system/*.read",))) == 1
    both = SmartConfiguration(TOKEN_URL, None, capabilities=("permission-v1", "permission-v2"))
    assert scope_version(both) == 2
    assert scope_version(SmartConfiguration(TOKEN_URL, None, scopes_supported=("system/*.rs",))) == 2
    assert scope_version(None) == 2


def test_same_origin_compares_scheme_host_and_port() -> None:
    assert same_origin("https://ehr.test/fhir/", "https://EHR.test:443/files/1")
    assert not same_origin("https://ehr.test/fhir/", "http://ehr.test/fhir/")
    assert not same_origin("https://ehr.test/fhir/", "https://files.ehr.test/1")
    assert not same_origin("https://ehr.test/fhir/", "https://ehr.test:8443/1")


# ---------------------------------------------------------------------------------- the key


def test_an_rsa_pem_key_signs_rs384_with_its_thumbprint_as_kid(key_path: Path) -> None:
    key = load_signing_key(key_path)
    assert key.alg == "RS384"
    assert len(key.kid) == 43  # base64url of a SHA-256 digest
    assert load_signing_key(key_path, "my-kid").kid == "my-kid"
    assert "PRIVATE" not in repr(key)
    assert "key=" not in repr(key)


def test_an_ec_p384_jwk_signs_es384_with_its_kid(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(ECAlgorithm.to_jwk(private))
    jwk["kid"] = "ec-1"
    path = tmp_path / "key.jwks"
    assert "d" in jwk  # the private key
    public = {k: v for k, v in jwk.items() if k != "d"}
    path.write_text(json.dumps({"keys": [public, jwk]}))  # a JWKS: the one private key is used
    key = load_signing_key(path)
    assert (key.alg, key.kid) == ("ES384", "ec-1")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a key", "the private key file is not an unencrypted PEM private key or a private JWK"),
        (b'{"kty": "RSA", "n": "x", "e": "AQAB", "d": "secret-d"}', "is not an unencrypted PEM private key"),
        (b'{"kty": "RSA", "n": "x", "e": "AQAB"}', "the JWK file holds no private key"),
    ],
)
def test_an_unreadable_key_file_is_one_error_without_its_content(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pem"
    path.write_bytes(content)
    with pytest.raises(SmartAuthorizationFailed) as exc:
        load_signing_key(path)
    assert exc.value.message.startswith("SMART backend authorization: ")
    assert message in exc.value.message
    assert "secret-d" not in exc.value.message
    assert exc.value.__cause__ is None  # `from None`: no library message quoting the key


def test_a_p256_key_is_refused_rs384_or_es384_only(tmp_path: Path) -> None:
    with pytest.raises(SmartAuthorizationFailed, match=r"RS384.*ES384"):
        load_signing_key(pem_file(tmp_path, ec.generate_private_key(ec.SECP256R1())))


def test_a_missing_key_file_names_the_step(tmp_path: Path) -> None:
    with pytest.raises(SmartAuthorizationFailed, match="private key file cannot be read"):
        load_signing_key(tmp_path / "absent.pem")


# ---------------------------------------------------------------------------------- the token


@respx.mock
@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_the_client_assertion_verifies_with_the_public_key(tmp_path: Path, kind: str) -> None:
    private = rsa_key() if kind == "rsa" else ec.generate_private_key(ec.SECP384R1())
    path = pem_file(tmp_path, private)
    token_route = respx.post(TOKEN_URL).mock(side_effect=[token_response("t1"), token_response("t2")])
    clock = Clock()
    with httpx.Client() as http:
        auth = make_auth(path, clock, http, kid="kid-7")
        auth.token()
        auth.token(renew=True)
    assertions = []
    for call in token_route.calls:
        form = form_of(call.request)
        assert form["grant_type"] == "client_credentials"
        assert form["scope"] == "system/Patient.rs"
        assert form["client_assertion_type"] == ASSERTION_TYPE
        assertion = form["client_assertion"]
        header = jwt.get_unverified_header(assertion)
        assert header["kid"] == "kid-7"
        assert header["alg"] == ("RS384" if kind == "rsa" else "ES384")
        claims = jwt.decode(
            assertion,
            private.public_key(),
            algorithms=[header["alg"]],
            audience=TOKEN_URL,
            issuer=CLIENT,
            options={"verify_exp": False, "verify_iat": False},
        )
        assert claims["sub"] == CLIENT
        assert 0 < claims["exp"] - clock.now <= 300  # the spec: at most five minutes ahead
        assertions.append(claims["jti"])
    assert len(set(assertions)) == 2  # a new jti each time


@respx.mock
def test_the_token_is_cached_until_shortly_before_it_expires(key_path: Path) -> None:
    token_route = respx.post(TOKEN_URL).mock(side_effect=[token_response("t1", 600), token_response("t2", 600)])
    data = respx.get(f"{BASE}/Patient").mock(return_value=httpx.Response(200, json={}))
    clock = Clock()
    with httpx.Client() as http:
        auth = make_auth(key_path, clock, http)
        http.get(f"{BASE}/Patient", auth=auth)
        clock.now += 600 - EXPIRY_MARGIN - 1
        http.get(f"{BASE}/Patient", auth=auth)
        assert token_route.call_count == 1
        clock.now += 2
        http.get(f"{BASE}/Patient", auth=auth)
    assert token_route.call_count == 2
    assert [c.request.headers["Authorization"] for c in data.calls] == ["Bearer t1", "Bearer t1", "Bearer t2"]


@respx.mock
def test_a_401_renews_the_token_once_and_repeats_the_request(key_path: Path) -> None:
    token_route = respx.post(TOKEN_URL).mock(side_effect=[token_response("t1"), token_response("t2")])
    data = respx.get(f"{BASE}/Patient").mock(side_effect=[httpx.Response(401), httpx.Response(200, json={})])
    with httpx.Client() as http:
        response = http.get(f"{BASE}/Patient", auth=make_auth(key_path, Clock(), http))
    assert response.status_code == 200
    assert token_route.call_count == 2
    assert [c.request.headers["Authorization"] for c in data.calls] == ["Bearer t1", "Bearer t2"]


@respx.mock
def test_a_second_401_is_not_retried_again(key_path: Path) -> None:
    token_route = respx.post(TOKEN_URL).mock(side_effect=[token_response("t1"), token_response("t2")])
    data = respx.get(f"{BASE}/Patient").mock(return_value=httpx.Response(401))
    with httpx.Client() as http:
        response = http.get(f"{BASE}/Patient", auth=make_auth(key_path, Clock(), http))
    assert response.status_code == 401
    assert token_route.call_count == 2
    assert data.call_count == 2


@respx.mock
def test_a_refusal_at_the_token_endpoint_is_one_error_naming_the_step_without_secrets(
    key_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    route = respx.post(TOKEN_URL).mock(
        return_value=httpx.Response(
            400, json={"error": "invalid_client", "error_description": "assertion eyJhbGciOi... rejected"}
        )
    )
    caplog.set_level(logging.DEBUG)
    with httpx.Client() as http, pytest.raises(SmartAuthorizationFailed) as exc:
        make_auth(key_path, Clock(), http).token()
    assert exc.value.message == (
        "SMART backend authorization: the token endpoint refused the client (HTTP 400, invalid_client)"
    )
    assertion = form_of(route.calls.last.request)["client_assertion"]
    assert assertion not in caplog.text
    assert "eyJ" not in exc.value.message
    assert not isinstance(exc.value, FhirAccessDenied)  # not the FHIR server's refusal


@respx.mock
@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, json={"token_type": "bearer"}),
        httpx.Response(200, json={"access_token": TOKEN, "token_type": "mac"}),
        httpx.Response(500, text="down"),
    ],
)
def test_a_token_response_without_a_bearer_token_is_refused(key_path: Path, response: httpx.Response) -> None:
    respx.post(TOKEN_URL).mock(return_value=response)
    with httpx.Client() as http, pytest.raises(SmartAuthorizationFailed) as exc:
        make_auth(key_path, Clock(), http).token()
    assert exc.value.message.startswith("SMART backend authorization: the token endpoint")
    assert TOKEN not in exc.value.message


@respx.mock
def test_an_unreachable_token_endpoint_names_the_step(key_path: Path) -> None:
    respx.post(TOKEN_URL).mock(side_effect=httpx.ConnectError("refused"))
    with httpx.Client() as http, pytest.raises(SmartAuthorizationFailed, match="token endpoint is unreachable"):
        make_auth(key_path, Clock(), http).token()


def test_the_auth_object_shows_no_token(key_path: Path) -> None:
    with httpx.Client() as http:
        auth = make_auth(key_path, Clock(), http)
        assert "population-client" in repr(auth)
        assert "Bearer" not in repr(auth)
