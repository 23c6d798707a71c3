"""A fake EHR (CDS client) that signs real CDS Hooks JWTs with keys generated at test time.

`FakeEhr` holds an EC P-384 key (ES384) and an RSA 2048 key (RS384), publishes them as a JWKS (a
file for ``CDS_AUTH_JWKS_FILE`` and an httpx transport serving its ``jku`` URL, with key rotation),
and builds tokens: `token()` is a good one; `BAD_TOKENS` lists every bad variant the service must
refuse, each differing from a good token in one respect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://ehr.test/cds-client"
JKU = "https://ehr.test/.well-known/jwks.json"
BASE = "http://cds.test"
SERVICE_PATH = "/cds-services/nct04582136-prescreen"
SERVICE_URL = BASE + SERVICE_PATH
TENANT = "tenant-a"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def public_jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    public = key.public_key()
    algorithm = ECAlgorithm if isinstance(public, ec.EllipticCurvePublicKey) else RSAAlgorithm
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(public))
    jwk.update(kid=kid, alg=alg, use="sig")
    return jwk


@dataclass
class SigningKey:
    kid: str
    alg: str
    key: Any

    @property
    def jwk(self) -> dict[str, Any]:
        return public_jwk(self.key, self.kid, self.alg)

    def public_pem(self) -> bytes:
        public_bytes: bytes = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return public_bytes


def new_ec(kid: str) -> SigningKey:
    return SigningKey(kid, "ES384", ec.generate_private_key(ec.SECP384R1()))


def new_rsa(kid: str, bits: int = 2048) -> SigningKey:
    return SigningKey(kid, "RS384", rsa.generate_private_key(public_exponent=65537, key_size=bits))


@dataclass
class FakeEhr:
    """Keys, JWKS publication and token minting of one CDS client."""

    issuer: str = ISSUER
    jku: str = JKU
    es: SigningKey = field(default_factory=lambda: new_ec("ehr-es384-1"))
    rs: SigningKey = field(default_factory=lambda: new_rsa("ehr-rs384-1"))
    published: list[SigningKey] = field(default_factory=list)  # what the jku URL serves now
    jwks_requests: list[httpx.Request] = field(default_factory=list)
    jwks_status: int = 200

    def __post_init__(self) -> None:
        if not self.published:
            self.published = [self.es, self.rs]

    # ---------------------------------------------------------------- publication

    def jwks(self, keys: list[SigningKey] | None = None) -> dict[str, Any]:
        return {"keys": [k.jwk for k in (keys if keys is not None else [self.es, self.rs])]}

    def write_jwks(self, path: Path, keys: list[SigningKey] | None = None) -> Path:
        path.write_text(json.dumps(self.jwks(keys)), encoding="utf-8")
        return path

    def rotate(self) -> SigningKey:
        """Publish a new ES384 key at the jku URL (the old ones are withdrawn) and return it."""
        new = new_ec(f"ehr-es384-{len(self.jwks_requests) + 2}-{uuid.uuid4().hex[:6]}")
        self.published = [new]
        return new

    def _serve(self, request: httpx.Request) -> httpx.Response:
        self.jwks_requests.append(request)
        if str(request.url) != self.jku:
            return httpx.Response(404)
        if self.jwks_status != 200:
            return httpx.Response(self.jwks_status)
        return httpx.Response(200, json=self.jwks(self.published))

    @property
    def transport(self) -> httpx.MockTransport:
        """Serves the jku URL (and records every JWKS request, wherever it was sent)."""
        return httpx.MockTransport(self._serve)

    # ---------------------------------------------------------------- tokens

    def claims(self, audience: str = SERVICE_URL, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": audience,
            "exp": now + 300,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "tenant": TENANT,
        }
        for name, value in overrides.items():
            if value is DROP:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def token(
        self,
        audience: str = SERVICE_URL,
        *,
        key: SigningKey | None = None,
        header: dict[str, Any] | None = None,
        jku: str | None = None,
        **claims: Any,
    ) -> str:
        """A signed token (good unless the arguments make it bad)."""
        key = key or self.es
        headers: dict[str, Any] = {"typ": "JWT", "kid": key.kid}
        if jku is not None:
            headers["jku"] = jku
        headers.update(header or {})
        drop = [name for name, value in headers.items() if value is DROP]
        for name in drop:
            del headers[name]
        algorithm = headers.pop("alg", key.alg)
        token: str = jwt.encode(self.claims(audience, **claims), key.key, algorithm=algorithm, headers=headers)
        if drop:  # PyJWT always writes typ/alg: rebuild the header without the dropped fields
            signing_header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
            for name in drop:
                signing_header.pop(name, None)
            return self.sign_raw(signing_header, self.claims(audience, **claims), key)
        return token

    def sign_raw(self, header: dict[str, Any], claims: dict[str, Any], key: SigningKey) -> str:
        """Sign an arbitrary header and payload with `key` (bypassing PyJWT's header handling)."""
        algorithm = jwt.get_algorithm_by_name(key.alg)
        signing_input = f"{b64json(header)}.{b64json(claims)}".encode()
        signature = algorithm.sign(signing_input, key.key)
        return f"{signing_input.decode()}.{b64(signature)}"

    def hmac_with_public_key(self, audience: str = SERVICE_URL) -> str:
        """The classic algorithm-confusion attack: HS384 keyed with the trusted public key's PEM."""
        header = {"alg": "HS384", "typ": "JWT", "kid": self.rs.kid}
        signing_input = f"{b64json(header)}.{b64json(self.claims(audience))}".encode()
        mac = hmac.new(self.rs.public_pem(), signing_input, hashlib.sha384).digest()
        return f"{signing_input.decode()}.{b64(mac)}"

    def unsigned(self, audience: str = SERVICE_URL, alg: str = "none") -> str:
        header = {"alg": alg, "typ": "JWT", "kid": self.es.kid}
        return f"{b64json(header)}.{b64json(self.claims(audience))}."


class _Drop:
    def __repr__(self) -> str:
        return "DROP"


DROP: Any = _Drop()  # pass as a claim or header value to leave that field out


def tamper_payload(token: str, **changes: Any) -> str:
    """Change claims without re-signing."""
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{head}.{b64json(claims)}.{signature}"


def tamper_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{payload}.{b64(bytes(raw))}"


@dataclass(frozen=True)
class BadToken:
    """One way to get authentication wrong: the Authorization header value it produces (None: no header)."""

    name: str
    reason: str  # the refusal code the service must log for it
    authorization: Callable[[FakeEhr], str | None]


def bearer(token: str) -> str:
    return f"Bearer {token}"


BAD_TOKENS: tuple[BadToken, ...] = (
    # the header and its scheme
    BadToken("missing Authorization", "missing-authorization", lambda e: None),
    BadToken("empty Authorization", "missing-authorization", lambda e: ""),
    BadToken("Basic scheme", "not-bearer", lambda e: "Basic " + b64(b"ehr:secret")),
    BadToken("Bearer without token", "not-bearer", lambda e: "Bearer "),
    BadToken("token without scheme", "not-bearer", lambda e: e.token()),
    BadToken("malformed: two segments", "malformed-token", lambda e: bearer(".".join(e.token().split(".")[:2]))),
    BadToken("malformed: four segments", "malformed-token", lambda e: bearer(e.token() + ".x")),
    BadToken(
        "malformed: header not base64 JSON", "malformed-token", lambda e: bearer("%%%." + e.token().split(".", 1)[1])
    ),
    BadToken(
        "malformed: header is a JSON list",
        "malformed-token",
        lambda e: bearer(b64json([1]) + "." + e.token().split(".", 1)[1]),
    ),
    BadToken("oversized token", "malformed-token", lambda e: bearer(e.token(filler="x" * 20_000))),
    # algorithms
    BadToken("alg none (empty signature)", "malformed-token", lambda e: bearer(e.unsigned())),
    BadToken("alg none with a signature", "algorithm-not-allowed", lambda e: bearer(e.unsigned() + "c2ln")),
    BadToken("alg NONE (case trick)", "algorithm-not-allowed", lambda e: bearer(e.unsigned(alg="NONE") + "c2ln")),
    BadToken(
        "HS384 keyed with the RSA public key (alg confusion)",
        "algorithm-not-allowed",
        lambda e: bearer(e.hmac_with_public_key()),
    ),
    BadToken("RS256", "algorithm-not-allowed", lambda e: bearer(e.token(key=e.rs, header={"alg": "RS256"}))),
    BadToken("RS512", "algorithm-not-allowed", lambda e: bearer(e.token(key=e.rs, header={"alg": "RS512"}))),
    BadToken("PS384", "algorithm-not-allowed", lambda e: bearer(e.token(key=e.rs, header={"alg": "PS384"}))),
    BadToken(
        "ES256 (P-256 key)",
        "algorithm-not-allowed",
        lambda e: bearer(e.token(key=SigningKey(e.es.kid, "ES256", ec.generate_private_key(ec.SECP256R1())))),
    ),
    BadToken(
        "ES512 (P-521 key)",
        "algorithm-not-allowed",
        lambda e: bearer(e.token(key=SigningKey(e.es.kid, "ES512", ec.generate_private_key(ec.SECP521R1())))),
    ),
    BadToken(
        "RS384 header on the EC key's kid (key confusion)",
        "key-algorithm-mismatch",
        lambda e: bearer(e.token(key=SigningKey(e.es.kid, "RS384", e.rs.key))),
    ),
    BadToken(
        "ES384 header on the RSA key's kid (key confusion)",
        "key-algorithm-mismatch",
        lambda e: bearer(e.token(key=SigningKey(e.rs.kid, "ES384", e.es.key))),
    ),
    BadToken("crit header", "crit-header", lambda e: bearer(e.token(header={"crit": ["exp"]}))),
    BadToken("typ not JWT", "bad-typ", lambda e: bearer(e.token(header={"typ": "at+jwt"}))),
    # claims
    BadToken("wrong iss", "issuer-not-allowed", lambda e: bearer(e.token(iss="https://evil.test"))),
    BadToken("iss missing", "issuer-not-allowed", lambda e: bearer(e.token(iss=DROP))),
    BadToken("iss with a trailing slash", "issuer-not-allowed", lambda e: bearer(e.token(iss=ISSUER + "/"))),
    BadToken(
        "wrong aud (another service)",
        "wrong-audience",
        lambda e: bearer(e.token(audience=BASE + "/cds-services/other")),
    ),
    BadToken(
        "wrong aud (another host)",
        "wrong-audience",
        lambda e: bearer(e.token(audience="http://evil.test" + SERVICE_PATH)),
    ),
    BadToken("aud is the base URL only", "wrong-audience", lambda e: bearer(e.token(audience=BASE))),
    BadToken("aud with a trailing slash", "wrong-audience", lambda e: bearer(e.token(audience=SERVICE_URL + "/"))),
    BadToken("aud missing", "wrong-audience", lambda e: bearer(e.token(aud=DROP))),
    BadToken("aud list without this URL", "wrong-audience", lambda e: bearer(e.token(aud=["http://evil.test"]))),
    BadToken("expired", "expired", lambda e: bearer(e.token(exp=int(time.time()) - 120, iat=int(time.time()) - 400))),
    BadToken("exp missing", "bad-exp", lambda e: bearer(e.token(exp=DROP))),
    BadToken("exp not a number", "bad-exp", lambda e: bearer(e.token(exp="tomorrow"))),
    BadToken("exp true (bool)", "bad-exp", lambda e: bearer(e.token(exp=True))),
    BadToken("nbf in the future", "not-yet-valid", lambda e: bearer(e.token(nbf=int(time.time()) + 240))),
    BadToken(
        "iat in the future",
        "iat-in-future",
        lambda e: bearer(e.token(iat=int(time.time()) + 240, exp=int(time.time()) + 500)),
    ),
    BadToken("iat missing", "bad-iat", lambda e: bearer(e.token(iat=DROP))),
    BadToken(
        "lifetime too long (1 day)", "lifetime-too-long", lambda e: bearer(e.token(exp=int(time.time()) + 86_400))
    ),
    BadToken("jti missing", "missing-jti", lambda e: bearer(e.token(jti=DROP))),
    BadToken("jti empty", "missing-jti", lambda e: bearer(e.token(jti=""))),
    BadToken("jti not a string", "missing-jti", lambda e: bearer(e.token(jti=12345))),
    BadToken("tenant not allowed", "tenant-not-allowed", lambda e: bearer(e.token(tenant="other-tenant"))),
    BadToken("tenant missing (tenant allow-list set)", "tenant-not-allowed", lambda e: bearer(e.token(tenant=DROP))),
    # keys and signatures
    BadToken("kid missing", "missing-kid", lambda e: bearer(e.token(header={"kid": DROP}))),
    BadToken("unknown kid", "unknown-kid", lambda e: bearer(e.token(key=new_ec("never-published")))),
    BadToken(
        "known kid, untrusted key",
        "bad-signature",
        lambda e: bearer(e.token(key=SigningKey(e.es.kid, "ES384", ec.generate_private_key(ec.SECP384R1())))),
    ),
    BadToken(
        "tampered payload (aud kept, jti changed)",
        "bad-signature",
        lambda e: bearer(tamper_payload(e.token(), jti="forged")),
    ),
    BadToken(
        "tampered payload (iss changed)",
        "bad-signature",
        lambda e: bearer(tamper_payload(e.token(iss="https://evil.test"), iss=ISSUER)),
    ),
    BadToken("tampered signature", "bad-signature", lambda e: bearer(tamper_signature(e.token()))),
    BadToken(
        "signature of another token",
        "bad-signature",
        lambda e: bearer(".".join(e.token().split(".")[:2] + e.token().split(".")[2:])),
    ),
    BadToken(
        "jku not on the allow-list",
        "jku-not-allowed",
        lambda e: bearer(e.token(jku="https://evil.test/.well-known/jwks.json")),
    ),
    BadToken(
        "jku lookalike host",
        "jku-not-allowed",
        lambda e: bearer(e.token(jku="https://ehr.test.evil.test/.well-known/jwks.json")),
    ),
    BadToken(
        "jku with userinfo",
        "jku-not-allowed",
        lambda e: bearer(e.token(jku="https://ehr.test@evil.test/.well-known/jwks.json")),
    ),
    BadToken(
        "jku on the allowed host, another path",
        "jku-not-allowed",
        lambda e: bearer(e.token(jku="https://ehr.test/.well-known/jwks.json-evil")),
    ),
    BadToken(
        "jku not a string",
        "jku-not-allowed",
        lambda e: bearer(e.token(header={"jku": ["https://ehr.test/.well-known/jwks.json"]})),
    ),
)
