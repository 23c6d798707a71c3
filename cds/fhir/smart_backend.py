"""SMART Backend Services authorization (client credentials with a private_key_jwt assertion).

Spec: https://hl7.org/fhir/smart-app-launch/backend-services.html (used by the Bulk Data IG).

    key = load_signing_key(Path("client-key.pem"))               # RSA -> RS384, EC P-384 -> ES384
    config = discover(http, fhir_base)                             # [base]/.well-known/smart-configuration
    auth = BackendServicesAuth(http, BackendClient(client_id, key, token_url), scope)
    http.get(url, auth=auth)                                       # Authorization: Bearer <token>

* The client assertion is a JWT signed with the client's private key: ``iss`` = ``sub`` = client id,
  ``aud`` = the token endpoint, ``exp`` a few minutes ahead, a unique ``jti``, the key id in the
  ``kid`` header. The token request is ``grant_type=client_credentials`` with the scopes.
* Scopes: ``system/<Type>.rs`` (SMART v2) for each resource type read; ``system/<Type>.read`` (v1)
  when the server's configuration advertises only v1 (`resource_scopes`, `scope_version`).
* The access token is cached until `EXPIRY_MARGIN` seconds before ``expires_in``; a 401 answer
  drops it and the request is sent once more with a new one.
* The private key and the tokens are never logged, never put in an exception message, never
  stored (they live in this process's memory only); `SigningKey` and `BackendServicesAuth` do not
  show them in their ``repr``. Failures are `SmartAuthorizationFailed` naming the step.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds.errors import SmartAuthorizationFailed

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_SECONDS = 240  # the spec: exp no more than five minutes in the future
EXPIRY_MARGIN = 60.0  # a cached token is renewed this many seconds before it expires
DEFAULT_EXPIRES_IN = 300  # when the token response names no lifetime
PRIVATE_KEY_JWT = "private_key_jwt"
NO_AUTH = httpx.Auth()  # the token request itself carries no bearer token
_OAUTH_ERROR = re.compile(r"^[a-z_]{1,64}$")

ScopeVersion = Literal[1, 2]


# ---------------------------------------------------------------------------------- the key


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key and what the assertion header names: the algorithm and the key id."""

    alg: Literal["RS384", "ES384"]
    kid: str
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = field(repr=False)

    def __repr__(self) -> str:
        return f"SigningKey(alg={self.alg!r}, kid={self.kid!r})"


def _algorithm(key: Any) -> Literal["RS384", "ES384"]:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS384"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1):
        return "ES384"
    raise SmartAuthorizationFailed(
        "SMART backend authorization: the private key must be an RSA key (RS384) or an EC P-384 key (ES384)"
    )


def _thumbprint(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    """The RFC 7638 JWK thumbprint of the public key (the default key id)."""
    if isinstance(key, rsa.RSAPrivateKey):
        public = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        members = {k: public[k] for k in ("e", "kty", "n")}
    else:
        public = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        members = {k: public[k] for k in ("crv", "kty", "x", "y")}
    digest = hashlib.sha256(json.dumps(members, sort_keys=True, separators=(",", ":")).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _private_jwk(data: Any) -> Mapping[str, Any]:
    """The one private JWK of a JWK or JWKS document."""
    if isinstance(data, Mapping) and isinstance(data.get("keys"), list):
        keys = [k for k in data["keys"] if isinstance(k, Mapping) and "d" in k]
        if len(keys) != 1:
            raise SmartAuthorizationFailed(
                "SMART backend authorization: the JWKS file must hold exactly one private key"
            )
        return keys[0]
    if isinstance(data, Mapping) and "d" in data:
        return data
    raise SmartAuthorizationFailed("SMART backend authorization: the JWK file holds no private key")


def load_signing_key(path: Path, kid: str | None = None) -> SigningKey:
    """The client's private key from a PEM file (PKCS#8 or traditional, unencrypted) or a JWK /
    JWKS file. Key id: `kid`, else the JWK's ``kid``, else the RFC 7638 thumbprint."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SmartAuthorizationFailed(
            f"SMART backend authorization: the private key file cannot be read ({type(err).__name__})"
        ) from None
    key: Any
    jwk_kid: str | None = None
    text = raw.lstrip()
    try:
        if text.startswith(b"{"):
            jwk = _private_jwk(json.loads(text))
            jwk_kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else None
            key = jwt.PyJWK(dict(jwk)).key
        else:
            key = serialization.load_pem_private_key(raw, password=None)
    except SmartAuthorizationFailed:
        raise
    except (ValueError, TypeError, jwt.PyJWTError):
        # never the error's text: it could quote the key material
        raise SmartAuthorizationFailed(
            "SMART backend authorization: the private key file is not an unencrypted PEM private key or a private JWK"
        ) from None
    alg = _algorithm(key)
    return SigningKey(alg=alg, kid=kid or jwk_kid or _thumbprint(key), key=key)


# ---------------------------------------------------------------------------------- discovery


@dataclass(frozen=True, slots=True)
class SmartConfiguration:
    token_endpoint: str
    auth_methods: tuple[str, ...] | None  # token_endpoint_auth_methods_supported (None: not given)
    capabilities: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def discover(http: httpx.Client, fhir_base: str) -> SmartConfiguration:
    """``[base]/.well-known/smart-configuration``: the token endpoint and what the server supports."""
    url = fhir_base.rstrip("/") + "/.well-known/smart-configuration"
    step = "SMART backend authorization: discovery (.well-known/smart-configuration)"
    try:
        r = http.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as err:
        raise SmartAuthorizationFailed(f"{step} failed: unreachable ({type(err).__name__})") from None
    if r.status_code != 200:
        raise SmartAuthorizationFailed(f"{step} failed: HTTP {r.status_code}")
    try:
        data = r.json()
    except ValueError:
        raise SmartAuthorizationFailed(f"{step} failed: not JSON") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("token_endpoint"), str):
        raise SmartAuthorizationFailed(f"{step} failed: no token_endpoint")
    methods = data.get("token_endpoint_auth_methods_supported")
    return SmartConfiguration(
        token_endpoint=urljoin(url, data["token_endpoint"]),
        auth_methods=_strings(methods) if isinstance(methods, list) else None,
        capabilities=_strings(data.get("capabilities")),
        scopes_supported=_strings(data.get("scopes_supported")),
    )


def check_private_key_jwt(config: SmartConfiguration) -> None:
    """Refuse a server whose configuration lists its token endpoint's client authentication
    methods without ``private_key_jwt`` (the only one this client uses)."""
    if config.auth_methods is not None and PRIVATE_KEY_JWT not in config.auth_methods:
        raise SmartAuthorizationFailed(
            "SMART backend authorization: the server's token endpoint does not support private_key_jwt "
            "(token_endpoint_auth_methods_supported)"
        )


_V2_SCOPE = re.compile(r"^(patient|user|system)/[A-Za-z*]+\.c?r?u?d?s?(\?.*)?$")
_V1_SCOPE = re.compile(r"^(patient|user|system)/[A-Za-z*]+\.(read|write|\*)$")


def scope_version(config: SmartConfiguration | None) -> ScopeVersion:
    """SMART v2 scopes unless the server advertises only v1 (``permission-v1`` without
    ``permission-v2``, or only v1-shaped ``scopes_supported``)."""
    if config is None:
        return 2
    caps = set(config.capabilities)
    if "permission-v2" in caps:
        return 2
    if "permission-v1" in caps:
        return 1
    v1 = any(_V1_SCOPE.match(s) for s in config.scopes_supported)
    v2 = any(_V2_SCOPE.match(s) and not _V1_SCOPE.match(s) for s in config.scopes_supported)
    return 1 if v1 and not v2 else 2


def resource_scopes(types: Iterable[str], *, context: str = "system", version: ScopeVersion = 2) -> str:
    """The SMART read scopes of these resource types: ``<context>/<Type>.rs`` (v2) or
    ``<context>/<Type>.read`` (v1), sorted, space-separated."""
    suffix = "rs" if version == 2 else "read"
    return " ".join(f"{context}/{t}.{suffix}" for t in sorted(set(types)))


# ---------------------------------------------------------------------------------- the token


@dataclass(frozen=True, slots=True)
class BackendClient:
    client_id: str
    key: SigningKey
    token_url: str


def client_assertion(client: BackendClient, now: float, jti: str | None = None) -> str:
    """The signed JWT that authenticates the client at the token endpoint."""
    claims = {
        "iss": client.client_id,
        "sub": client.client_id,
        "aud": client.token_url,
        "exp": int(now) + ASSERTION_SECONDS,
        "iat": int(now),
        "jti": jti or uuid.uuid4().hex,
    }
    return jwt.encode(claims, client.key.key, algorithm=client.key.alg, headers={"kid": client.key.kid, "typ": "JWT"})


def same_origin(a: str, b: str) -> bool:
    """Same scheme, host and port (default ports made explicit)."""

    def origin(url: str) -> tuple[str, str, int | None]:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
        return scheme, (parts.hostname or "").lower(), port

    return origin(a) == origin(b)


class BackendServicesAuth(httpx.Auth):
    """`httpx.Auth` adding ``Authorization: Bearer`` with a cached access token; on a 401 answer the
    token is renewed once and the request sent again. Thread-safe (one token fetch at a time)."""

    def __init__(
        self,
        http: httpx.Client,
        client: BackendClient,
        scope: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._client = client
        self.scope = scope
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0
        self.token_requests = 0  # how many tokens were asked for (tests, progress)

    def __repr__(self) -> str:
        return f"BackendServicesAuth(client_id={self._client.client_id!r}, scope={self.scope!r})"

    def _fetch(self) -> None:
        step = "SMART backend authorization: the token endpoint"
        now = self._clock()
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(self._client, now),
        }
        self.token_requests += 1
        try:
            r = self._http.post(self._client.token_url, data=form, headers={"Accept": "application/json"}, auth=NO_AUTH)
        except httpx.HTTPError as err:
            raise SmartAuthorizationFailed(f"{step} is unreachable ({type(err).__name__})") from None
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code != 200:
            code = body.get("error") if isinstance(body, Mapping) else None
            # only the OAuth error code (a registered token): the description is not repeated
            detail = f", {code}" if isinstance(code, str) and _OAUTH_ERROR.match(code) else ""
            raise SmartAuthorizationFailed(f"{step} refused the client (HTTP {r.status_code}{detail})")
        token = body.get("access_token") if isinstance(body, Mapping) else None
        if not isinstance(token, str) or not token:
            raise SmartAuthorizationFailed(f"{step} answered without an access_token")
        token_type = body.get("token_type", "bearer") if isinstance(body, Mapping) else "bearer"
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise SmartAuthorizationFailed(f"{step} answered a token that is not a bearer token")
        expires_in = body.get("expires_in") if isinstance(body, Mapping) else None
        lifetime = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else DEFAULT_EXPIRES_IN
        self._token = token
        self._expires = now + lifetime

    def token(self, *, renew: bool = False) -> str:
        """The cached access token (a new one when absent, near expiry, or `renew`)."""
        with self._lock:
            if renew or self._token is None or self._clock() >= self._expires - EXPIRY_MARGIN:
                self._token = None
                self._fetch()
            assert self._token is not None
            return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        sent = self.token()
        request.headers["Authorization"] = f"Bearer {sent}"
        response = yield request
        if response.status_code == 401:
            with self._lock:
                stale = self._token == sent
            request.headers["Authorization"] = f"Bearer {self.token(renew=stale)}"
            yield request


__all__ = [
    "NO_AUTH",
    "BackendClient",
    "BackendServicesAuth",
    "SigningKey",
    "SmartConfiguration",
    "check_private_key_jwt",
    "client_assertion",
    "discover",
    "load_signing_key",
    "resource_scopes",
    "same_origin",
    "scope_version",
]
