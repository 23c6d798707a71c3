"""OIDC sign-in for the worklist (production): authorization code flow with PKCE (S256).

1. ``/worklist/oidc/start``: a random ``state``, ``nonce`` and PKCE verifier are kept in a signed,
   HttpOnly, 10-minute cookie (SameSite=Lax: the identity provider's redirect back is a cross-site
   navigation, a Strict cookie would not come back); the browser is sent to the provider's
   authorization endpoint (from its discovery document) with the S256 code challenge.
2. ``/worklist/oidc/callback``: ``state`` must equal the cookie's; the code is exchanged at the
   token endpoint with the verifier (and the client secret, HTTP Basic, for a confidential client);
   the ID token's signature (provider's JWKS; RS256/PS256/ES256/ES384 only), ``iss``, ``aud``
   (and ``azp``), ``exp``/``iat`` and ``nonce`` are checked. The user is the configured claim
   (``CDS_WORKLIST_OIDC_USER_CLAIM``, e.g. email); only users listed in ``CDS_WORKLIST_OIDC_USERS``
   get a session, anybody else at the provider is refused (403).

The provider's endpoints must be https (plain http is accepted for a loopback issuer only: tests
and local try-outs). Documents fetched are size-bounded; nothing of a token is logged.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import jwt

ALGORITHMS = ["RS256", "PS256", "ES256", "ES384"]
MAX_DOCUMENT_BYTES = 256 * 1024
DISCOVERY_SECONDS = 3600.0
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class OidcError(Exception):
    """The sign-in cannot complete (the message is safe to show: no token, no secret)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def code_challenge(verifier: str) -> str:
    return _b64(hashlib.sha256(verifier.encode()).digest())


def _endpoint_ok(url: Any, issuer: str) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and urlsplit(issuer).hostname in _LOOPBACK and parts.hostname in _LOOPBACK


@dataclass(frozen=True, slots=True)
class Transaction:
    state: str
    nonce: str
    verifier: str


@dataclass
class OidcClient:
    issuer: str
    client_id: str
    client_secret: str | None
    allowed_users: frozenset[str]
    user_claim: str = "email"
    scopes: str = "openid email profile"
    timeout: float = 5.0
    transport: httpx.AsyncBaseTransport | None = None
    clock: Callable[[], float] = time.time
    _discovery: dict[str, Any] | None = field(default=None, init=False)
    _discovered_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.issuer = self.issuer.rstrip("/")
        if not _endpoint_ok(self.issuer, self.issuer):
            raise ValueError("the OIDC issuer must be an https URL (http only on loopback)")

    async def _get_json(self, client: httpx.AsyncClient, url: str) -> dict[str, Any]:
        try:
            response = await client.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError:
            raise OidcError("the identity provider cannot be reached") from None
        return self._json(response)

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200 or len(response.content) > MAX_DOCUMENT_BYTES:
            raise OidcError(f"the identity provider answered {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise OidcError("the identity provider's answer is not JSON") from None
        if not isinstance(data, dict):
            raise OidcError("the identity provider's answer is not a JSON object")
        return data

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport, timeout=self.timeout, trust_env=False)

    async def discovery(self) -> dict[str, Any]:
        if self._discovery is not None and self.clock() - self._discovered_at < DISCOVERY_SECONDS:
            return self._discovery
        async with self._client() as client:
            doc = await self._get_json(client, self.issuer + "/.well-known/openid-configuration")
        if str(doc.get("issuer", "")).rstrip("/") != self.issuer:
            raise OidcError("the discovery document names another issuer")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not _endpoint_ok(doc.get(key), self.issuer):
                raise OidcError(f"the discovery document has no usable {key}")
        self._discovery, self._discovered_at = doc, self.clock()
        return doc

    @staticmethod
    def new_transaction() -> Transaction:
        return Transaction(
            state=secrets.token_urlsafe(24), nonce=secrets.token_urlsafe(24), verifier=secrets.token_urlsafe(48)
        )

    async def authorization_url(self, tx: Transaction, redirect_uri: str) -> str:
        doc = await self.discovery()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": self.scopes,
                "state": tx.state,
                "nonce": tx.nonce,
                "code_challenge": code_challenge(tx.verifier),
                "code_challenge_method": "S256",
            }
        )
        endpoint = str(doc["authorization_endpoint"])
        return endpoint + ("&" if "?" in endpoint else "?") + query

    async def sign_in(self, code: str, tx: Transaction, redirect_uri: str) -> str:
        """Exchange the code, check the ID token; the allowed user's name, else OidcError."""
        doc = await self.discovery()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": self.client_id,
            "code_verifier": tx.verifier,
        }
        auth = httpx.BasicAuth(self.client_id, self.client_secret) if self.client_secret else httpx.USE_CLIENT_DEFAULT
        async with self._client() as client:
            try:
                response = await client.post(str(doc["token_endpoint"]), data=form, auth=auth)
            except httpx.HTTPError:
                raise OidcError("the identity provider cannot be reached") from None
            tokens = self._json(response)
            id_token = tokens.get("id_token")
            if not isinstance(id_token, str):
                raise OidcError("the identity provider returned no ID token")
            jwks = await self._get_json(client, str(doc["jwks_uri"]))
        claims = self._verify(id_token, jwks, tx.nonce)
        user = claims.get(self.user_claim)
        if not isinstance(user, str) or not user or user not in self.allowed_users:
            raise OidcError("this account is not allowed to use the worklist")
        return user

    def _verify(self, id_token: str, jwks: Mapping[str, Any], nonce: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(id_token)
            keys = jwt.PyJWKSet.from_dict(dict(jwks))
            kid = header.get("kid")
            candidates = [k for k in keys.keys if kid is None or k.key_id == kid]
            if not candidates or header.get("alg") not in ALGORITHMS:
                raise OidcError("the ID token's key or algorithm is not accepted")
            claims: dict[str, Any] = jwt.decode(
                id_token,
                key=candidates[0].key,
                algorithms=ALGORITHMS,
                audience=self.client_id,
                issuer=self.issuer,
                leeway=30,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except (jwt.PyJWTError, ValueError, KeyError):
            raise OidcError("the ID token is not valid") from None
        if not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            raise OidcError("the ID token's nonce does not match this sign-in")
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.client_id:
            raise OidcError("the ID token was issued to another client")
        return claims
