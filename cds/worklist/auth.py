"""Worklist sign-in: local accounts with scrypt password hashes, signed session cookies, CSRF tokens.

* Accounts: ``CDS_WORKLIST_USERS`` lists ``user:hash`` entries; a hash is
  ``scrypt$<n>$<r>$<p>$<salt>$<key>`` (URL-safe base64), made by ``cds worklist hash-password``.
  No plaintext password is ever configured. Verification runs scrypt even for an unknown user (the
  answer's timing does not reveal which user names exist).
* Session: a cookie ``<payload>.<HMAC-SHA256>`` (payload: user, expiry, CSRF token; URL-safe
  base64 JSON), HttpOnly, SameSite=Strict, Path=/worklist, Secure when the page is served over
  https. The key is ``CDS_WORKLIST_SESSION_SECRET`` or a random key stored once in the database.
* CSRF: every POST form carries the session's token (the sign-in form: a token from a short-lived
  signed pre-session cookie); a missing or different token is refused (403). SameSite=Strict is a
  second line, not the only one.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_KEY_BYTES = 32
_MAXMEM = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=_KEY_BYTES, maxmem=_MAXMEM
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


class BadPasswordHash(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PasswordHash:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        parts = text.split("$")
        if len(parts) != 6 or parts[0] != "scrypt":
            raise BadPasswordHash("expected scrypt$<n>$<r>$<p>$<salt>$<key> (cds worklist hash-password)")
        try:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            salt, key = _unb64(parts[4]), _unb64(parts[5])
        except ValueError:
            raise BadPasswordHash("unreadable scrypt hash") from None
        if n < 2**14 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16 or len(salt) < 16 or len(key) < 16:
            raise BadPasswordHash("scrypt parameters too weak (n >= 16384, salt and key >= 16 bytes)")
        return cls(n, r, p, salt, key)

    def verify(self, password: str) -> bool:
        key = hashlib.scrypt(
            password.encode(), salt=self.salt, n=self.n, r=self.r, p=self.p, dklen=len(self.key), maxmem=_MAXMEM
        )
        return hmac.compare_digest(key, self.key)


@functools.cache
def _dummy() -> PasswordHash:
    """A hash verified for unknown users, so that they take as long as known ones."""
    return PasswordHash.parse(hash_password("no such user", salt=b"\0" * 16))


def parse_users(entries: Iterable[str]) -> dict[str, PasswordHash]:
    """``user:hash`` entries -> accounts; ValueError names the bad entry's user (never its hash)."""
    users: dict[str, PasswordHash] = {}
    for entry in entries:
        user, sep, text = entry.strip().partition(":")
        user = user.strip()
        if not sep or not user or len(user) > 100:
            raise ValueError("a worklist account is user:<scrypt hash> (cds worklist hash-password)")
        try:
            users[user] = PasswordHash.parse(text.strip())
        except BadPasswordHash as exc:
            raise ValueError(f"worklist account {user!r}: {exc}") from None
    return users


def authenticate(users: Mapping[str, PasswordHash], user: str, password: str) -> bool:
    known = users.get(user)
    ok = (known or _dummy()).verify(password)
    return known is not None and ok


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    expires: int
    csrf: str


class Signer:
    """HMAC-SHA256 signed, expiring JSON tokens (the session and the sign-in form's cookie)."""

    def __init__(self, key: bytes) -> None:
        self._key = hashlib.sha256(b"cds-worklist-session|" + key).digest()

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def dumps(self, data: Mapping[str, object]) -> str:
        payload = _b64(json.dumps(data, separators=(",", ":"), sort_keys=True).encode())
        return f"{payload}.{self._mac(payload)}"

    def loads(self, token: str | None, now: float) -> dict[str, object] | None:
        if not token or len(token) > 4096:
            return None
        payload, _, mac = token.partition(".")
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        try:
            data = json.loads(_unb64(payload))
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("exp"), int) or data["exp"] <= now:
            return None
        return data

    def session(self, user: str, now: float, lifetime: int) -> tuple[str, Session]:
        session = Session(user=user, expires=int(now) + lifetime, csrf=secrets.token_urlsafe(24))
        return self.dumps({"u": user, "exp": session.expires, "csrf": session.csrf, "k": "s"}), session

    def load_session(self, token: str | None, now: float) -> Session | None:
        data = self.loads(token, now)
        if data is None or data.get("k") != "s":
            return None
        user, csrf, expires = data.get("u"), data.get("csrf"), data.get("exp")
        if not isinstance(user, str) or not isinstance(csrf, str) or not isinstance(expires, int):
            return None
        return Session(user=user, expires=expires, csrf=csrf)

    def login_token(self, now: float, lifetime: int = 1800) -> tuple[str, str]:
        """(cookie value, CSRF token) of the sign-in form."""
        csrf = secrets.token_urlsafe(24)
        return self.dumps({"csrf": csrf, "exp": int(now) + lifetime, "k": "l"}), csrf

    def load_login_csrf(self, token: str | None, now: float) -> str | None:
        data = self.loads(token, now)
        if data is None or data.get("k") != "l" or not isinstance(data.get("csrf"), str):
            return None
        return str(data["csrf"])


def same_token(given: str | None, expected: str | None) -> bool:
    return bool(given) and bool(expected) and hmac.compare_digest(str(given).encode(), str(expected).encode())
