"""Authentication of the CDS client (the EHR) by the signed JWT it sends with every call.

The CDS Hooks spec: each call carries ``Authorization: Bearer <JWT>`` signed by the CDS client, with
header ``alg``, ``kid``, ``typ`` (JWT) and optionally ``jku``, and claims ``iss``, ``aud`` (the exact
URL called), ``exp``, ``iat``, ``jti`` and optionally ``tenant`` (Epic adds ``sub`` and ``nbf``).
`JwtAuthenticator.authenticate` checks, in this order, and refuses at the first failure:

1. the header is ``Bearer`` + a compact JWS of bounded size with a JSON header and payload;
2. ``alg`` is ES384 or RS384 - nothing else (``none``, HMAC, RS256, ES256, PS*, ...); ``typ`` if
   present is JWT; ``kid`` is present; a ``crit`` header is refused;
3. ``iss`` is on the allow-list; ``aud`` equals the URL called (`expected_audience`); ``exp``,
   ``iat`` (and ``nbf`` when present) are numbers, consistent with now within the clock skew, and
   the lifetime is at most `max_token_lifetime`; ``jti`` is a non-empty string; ``tenant`` is on the
   tenant allow-list when one is configured;
4. the key: with a ``jku``, the URL must be on the jku allow-list and the key comes from that JWKS
   (fetched with httpx - no redirects, bounded size and time - cached, fetched again on an unknown
   ``kid`` at most once per `min_refresh_seconds`); without ``jku`` it comes from the configured
   JWKS file (re-read when the file changes). The key type must match ``alg`` (EC P-384 for ES384,
   RSA >= 2048 bits for RS384): no algorithm confusion;
5. the signature verifies (PyJWT, with ``algorithms=[alg]``), and the claims are checked again on the
   verified payload;
6. ``(iss, jti)`` has not been seen before, by any worker or replica: it is remembered in the
   database until the token expires (`cds.store.replay`; one atomic insert, a concurrent one from
   another process loses). When the database cannot be reached the call is refused with 503
   (`DatabaseUnavailable`): fail closed, never "not seen".

Every failure raises `AuthenticationFailed` with one generic message; the reason (a fixed code,
never token content) goes to the log only. The web layer answers 401 with ``WWW-Authenticate:
Bearer`` and an OperationOutcome that says nothing more.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds.bounded import aread_bounded
from cds.config import setting_default
from cds.errors import AuthenticationFailed
from cds.fhir.urls import UrlAllowList
from cds.store.database import Database
from cds.store.replay import ReplayStore

if TYPE_CHECKING:
    from cds.config import Settings

log = logging.getLogger("cds.service.auth")

ALGORITHMS = ("ES384", "RS384")
GENERIC_MESSAGE = "authentication failed"
MAX_TOKEN_BYTES = 16_384
MAX_JWKS_BYTES = 262_144
MIN_RSA_BITS = 2048

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
Clock = Callable[[], float]


class _Refused(Exception):
    """Internal: why a token was refused (a fixed code for the log)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64_json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.encode("ascii"))
        return json.loads(raw)
    except (ValueError, binascii.Error, UnicodeError, RecursionError):
        raise _Refused("malformed-token") from None


def _key_for(jwk: Mapping[str, Any]) -> tuple[str, PublicKey] | None:
    """(alg, public key) of a usable JWK, or None (wrong type, curve or size; bad encoding)."""
    if jwk.get("use") not in (None, "sig"):
        return None
    kty = jwk.get("kty")
    key: Any
    try:
        if kty == "EC" and jwk.get("crv") == "P-384":
            key = ECAlgorithm.from_jwk(dict(jwk))
            alg = "ES384"
        elif kty == "RSA":
            key = RSAAlgorithm.from_jwk(dict(jwk))
            alg = "RS384"
        else:
            return None
    except (jwt.InvalidKeyError, ValueError, TypeError, KeyError):
        return None
    public: Any = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) else key
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
        return None
    if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return None
    declared = jwk.get("alg")
    if declared is not None and declared != alg:
        return None
    return alg, public


def parse_jwks(data: Any) -> dict[str, tuple[str, PublicKey]]:
    """kid -> (alg, key) for the usable keys of a JWKS document (others are skipped)."""
    keys: dict[str, tuple[str, PublicKey]] = {}
    if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
        return keys
    for jwk in data["keys"]:
        if not isinstance(jwk, Mapping):
            continue
        kid = jwk.get("kid")
        usable = _key_for(jwk)
        if isinstance(kid, str) and kid and usable is not None and kid not in keys:
            keys[kid] = usable
    return keys


@dataclass
class _JwksEntry:
    keys: dict[str, tuple[str, PublicKey]] = field(default_factory=dict)
    fetched_at: float = -math.inf
    attempted_at: float = -math.inf
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class AuthConfig:
    issuers: tuple[str, ...]
    jku_allowed: tuple[str, ...] = ()
    jwks_file: str | None = None
    tenants: tuple[str, ...] = ()
    clock_skew: float = setting_default("auth_clock_skew")
    max_token_lifetime: float = setting_default("auth_max_token_lifetime")
    jwks_cache_seconds: float = setting_default("auth_jwks_cache_seconds")
    min_refresh_seconds: float = setting_default("auth_jwks_min_refresh_seconds")
    jwks_timeout: float = setting_default("auth_jwks_timeout")

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthConfig:
        return cls(
            issuers=tuple(settings.trusted_issuers),
            jku_allowed=tuple(settings.trusted_jku),
            jwks_file=settings.auth_jwks_file,
            tenants=tuple(settings.auth_tenants),
            clock_skew=settings.auth_clock_skew,
            max_token_lifetime=settings.auth_max_token_lifetime,
            jwks_cache_seconds=settings.auth_jwks_cache_seconds,
            min_refresh_seconds=settings.auth_jwks_min_refresh_seconds,
            jwks_timeout=settings.auth_jwks_timeout,
        )


class JwtAuthenticator:
    """Verifies CDS client JWTs (see the module docstring). One per app; its JWKS cache is per process,
    the JWT ids seen are in the shared database."""

    def __init__(
        self,
        config: AuthConfig,
        *,
        replay: ReplayStore | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = time.time,
    ) -> None:
        """`replay`: the JWT ids store (the service passes the one on its shared database); by
        default a private in-memory SQLite database (one process: tests and tools only)."""
        self.config = config
        self._issuers = frozenset(config.issuers)
        self._tenants = frozenset(config.tenants)
        self._jku = UrlAllowList(config.jku_allowed)
        self._clock = clock
        if replay is None:
            database = Database("sqlite://")
            database.upgrade()
            replay = ReplayStore(database, clock=clock)
        self._replay = replay
        self._jwks: dict[str, _JwksEntry] = {}
        self._file_keys: dict[str, tuple[str, PublicKey]] = {}
        self._file_stamp: tuple[float, int] | None = None
        self._http = httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(config.jwks_timeout),
            headers={"Accept": "application/json, application/jwk-set+json"},
        )
        self.fetches = 0  # JWKS fetches made (for tests and logs)
        self._load_file(initial=True)

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._replay.aclose()

    # ------------------------------------------------------------------ keys

    def _load_file(self, *, initial: bool = False) -> None:
        path = self.config.jwks_file
        if not path:
            return
        try:
            stat = os.stat(path)
            stamp = (stat.st_mtime, stat.st_size)
            if stamp == self._file_stamp:
                return
            with open(path, "rb") as handle:
                raw = handle.read(MAX_JWKS_BYTES + 1)
            if len(raw) > MAX_JWKS_BYTES:
                raise ValueError("JWKS file too large")
            self._file_keys = parse_jwks(json.loads(raw))
            self._file_stamp = stamp
            log.info("auth.jwks_file_loaded", extra={"event": "auth.jwks_file_loaded", "keys": len(self._file_keys)})
        except (OSError, ValueError) as exc:
            log.error(
                "auth.jwks_file_unreadable",
                extra={"event": "auth.jwks_file_unreadable", "error": type(exc).__name__},
            )
            if initial:
                self._file_keys = {}

    async def _fetch_jwks(self, url: str) -> dict[str, tuple[str, PublicKey]]:
        self.fetches += 1
        try:
            async with asyncio.timeout(self.config.jwks_timeout):
                async with self._http.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise _Refused("jwks-unavailable")
                    body = await aread_bounded(
                        response.aiter_bytes(), MAX_JWKS_BYTES, lambda: _Refused("jwks-unavailable")
                    )
            return parse_jwks(json.loads(body))
        except (TimeoutError, httpx.HTTPError, ValueError, RecursionError):
            raise _Refused("jwks-unavailable") from None

    async def _jku_key(self, jku: str, kid: str) -> tuple[str, PublicKey]:
        url = self._jku.match(jku)
        if url is None or self._jku.allow_any:
            raise _Refused("jku-not-allowed")
        cache_key = str(url)
        entry = self._jwks.setdefault(cache_key, _JwksEntry())
        now = self._clock()
        fresh = now - entry.fetched_at < self.config.jwks_cache_seconds
        if fresh and kid in entry.keys:
            return entry.keys[kid]
        async with entry.lock:  # concurrent calls with an unknown kid cause one fetch, not many
            now = self._clock()
            fresh = now - entry.fetched_at < self.config.jwks_cache_seconds
            if (not fresh or kid not in entry.keys) and now - entry.attempted_at >= self.config.min_refresh_seconds:
                entry.attempted_at = now
                try:
                    entry.keys = await self._fetch_jwks(cache_key)
                    entry.fetched_at = self._clock()
                except _Refused:
                    log.warning("auth.jwks_fetch_failed", extra={"event": "auth.jwks_fetch_failed"})
            # otherwise (refresh rate-limited) the keys in hand, even stale ones, are used
        if kid not in entry.keys:
            raise _Refused("unknown-kid")
        return entry.keys[kid]

    def _file_key(self, kid: str) -> tuple[str, PublicKey]:
        if kid not in self._file_keys:
            self._load_file()
        if kid not in self._file_keys:
            raise _Refused("unknown-kid")
        return self._file_keys[kid]

    # ------------------------------------------------------------------ claims

    def _check_claims(self, claims: Any, audience: str) -> tuple[str, str, float]:
        if not isinstance(claims, dict):
            raise _Refused("malformed-token")
        cfg = self.config
        issuer = claims.get("iss")
        if not isinstance(issuer, str) or issuer not in self._issuers:
            raise _Refused("issuer-not-allowed")
        aud = claims.get("aud")
        if isinstance(aud, list):
            if audience not in aud or not all(isinstance(a, str) for a in aud):
                raise _Refused("wrong-audience")
        elif aud != audience:
            raise _Refused("wrong-audience")
        now = self._clock()
        skew = cfg.clock_skew
        times: dict[str, float] = {}
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name)
            if value is None and name == "nbf":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise _Refused(f"bad-{name}")
            times[name] = float(value)
        if times["exp"] <= now - skew:
            raise _Refused("expired")
        if times["iat"] > now + skew:
            raise _Refused("iat-in-future")
        if "nbf" in times and times["nbf"] > now + skew:
            raise _Refused("not-yet-valid")
        if times["exp"] - times["iat"] > cfg.max_token_lifetime or times["exp"] > now + cfg.max_token_lifetime + skew:
            raise _Refused("lifetime-too-long")
        if times["exp"] < times["iat"]:
            raise _Refused("bad-exp")
        if self._tenants:
            tenant = claims.get("tenant")
            if not isinstance(tenant, str) or tenant not in self._tenants:
                raise _Refused("tenant-not-allowed")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 512:
            raise _Refused("missing-jti")
        return issuer, jti, times["exp"] + skew

    # ------------------------------------------------------------------ entry point

    async def authenticate(self, authorization: str | None, audience: str) -> dict[str, Any]:
        """The verified claims, or `AuthenticationFailed` (generic message; reason logged)."""
        try:
            return await self._authenticate(authorization, audience)
        except _Refused as refused:
            log.warning("auth.refused", extra={"event": "auth.refused", "reason": refused.reason})
            raise AuthenticationFailed(GENERIC_MESSAGE) from None

    async def _authenticate(self, authorization: str | None, audience: str) -> dict[str, Any]:
        if not authorization:
            raise _Refused("missing-authorization")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _Refused("not-bearer")
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise _Refused("malformed-token")
        segments = token.split(".")
        if len(segments) != 3 or not all(segments):
            raise _Refused("malformed-token")
        header = _b64_json(segments[0])
        if not isinstance(header, dict):
            raise _Refused("malformed-token")
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise _Refused("algorithm-not-allowed")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise _Refused("bad-typ")
        if "crit" in header:
            raise _Refused("crit-header")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _Refused("missing-kid")
        jku = header.get("jku")
        if jku is not None and not isinstance(jku, str):
            raise _Refused("jku-not-allowed")
        self._check_claims(_b64_json(segments[1]), audience)  # cheap refusals before any key work

        key_alg, key = await self._jku_key(jku, kid) if jku is not None else self._file_key(kid)
        if key_alg != alg:
            raise _Refused("key-algorithm-mismatch")
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                options={
                    "verify_signature": True,
                    "verify_exp": False,  # checked by _check_claims with the injectable clock
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except jwt.PyJWTError:
            raise _Refused("bad-signature") from None
        issuer, jti, until = self._check_claims(claims, audience)
        if not await self._replay.aclaim(issuer, jti, until):
            raise _Refused("replayed-jti")
        return claims
