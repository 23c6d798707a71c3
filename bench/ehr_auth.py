"""The benchmark's EHR identity: an ES384 key, its JWKS file, and pre-minted CDS Hooks JWTs.

Tokens are minted before a measurement starts (one per request: the service refuses a replayed
``jti``), so signing is not in the measured latency; verifying is (it is the service's job).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ISSUER = "https://ehr.bench.invalid"
KID = "bench-ehr-1"


class EhrIdentity:
    def __init__(self, directory: Path) -> None:
        self._key = ec.generate_private_key(ec.SECP384R1())
        jwk = json.loads(ECAlgorithm.to_jwk(self._key.public_key()))
        jwk.update(kid=KID, use="sig", alg="ES384")
        directory.mkdir(parents=True, exist_ok=True)
        self.jwks_file = directory / "bench-ehr-jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [jwk]}), encoding="utf-8")

    def env(self) -> dict[str, str]:
        """Service settings (environment) that trust this EHR."""
        return {
            "CDS_AUTH_REQUIRED": "true",
            "CDS_AUTH_ISSUERS": ISSUER,
            "CDS_AUTH_JWKS_FILE": str(self.jwks_file),
        }

    def token(self, audience: str, lifetime: int = 300) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": audience, "iat": now, "exp": now + lifetime, "jti": str(uuid.uuid4())}
        return jwt.encode(claims, self._key, algorithm="ES384", headers={"kid": KID, "typ": "JWT"})

    def tokens(self, audience: str, n: int) -> Iterator[str]:
        minted = [self.token(audience) for _ in range(n)]
        return iter(minted)
