"""Strict parsing of http(s) URLs and the allow-lists built on it (FHIR servers, JWKS ``jku`` URLs).

A caller names the ``fhirServer`` the service is to read from, and a JWT names the ``jku`` its keys
come from: both are attacker-controlled text that must never make the service talk to a host it was
not configured to talk to (SSRF). `parse_url` reduces a URL to a canonical `HttpUrl` the same way
for allow-list entries and for requested URLs, and refuses anything ambiguous instead of guessing:

* scheme ``http`` or ``https`` only; no userinfo (``https://ehr@evil``), no fragment; no whitespace,
  control characters or backslashes anywhere (parsers disagree on them);
* host lower-cased, a trailing dot dropped, internationalised names IDNA-encoded; percent signs in
  the host are refused; IPv6 literals canonicalised (an IPv4-mapped address becomes its IPv4 form);
  every numeric IPv4 spelling a resolver accepts (``2130706433``, ``0x7f.1``, ``0177.0.0.1``,
  ``127.1``) is parsed to its dotted-quad form, so ``http://127.0.0.1`` on the list and
  ``http://0x7f.1`` in a request compare equal, and a host that merely looks numeric but is not a
  valid address is refused;
* the port made explicit (80 / 443 by default), so ``https://ehr:443/fhir`` equals ``https://ehr/fhir``;
* the path: a trailing ``/`` dropped; ``.``/``..`` segments and their encoded forms (``%2e``),
  encoded slashes and backslashes (``%2f``, ``%5c``) refused, so a prefix cannot be escaped by
  normalisation in the HTTP client or the server.

`HttpUrl.covers` compares scheme, host and port exactly and the path as a prefix **on a segment
boundary**: ``https://ehr/fhir`` covers ``https://ehr/fhir`` and ``https://ehr/fhir/Patient/1``,
not ``https://ehr/fhir-evil``, ``https://ehr.evil.com/fhir`` or ``https://ehr:8443/fhir``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}
ANY = "*"

_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f\\]|[^\x00-\x7f]")
_HOST_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$")
_BAD_PATH_ESCAPES = re.compile(r"%(2e|2f|5c|00)", re.IGNORECASE)


class UrlError(ValueError):
    """A URL that is not an acceptable http(s) URL (the message never quotes the URL)."""


@dataclass(frozen=True, slots=True)
class HttpUrl:
    """A canonical http(s) URL: scheme, host, explicit port, path without trailing slash, query."""

    scheme: str
    host: str
    port: int
    path: str  # "" for the root, else "/a/b" (no trailing slash)
    query: str = ""

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    def covers(self, other: HttpUrl) -> bool:
        """True if `other` is this URL or lies under it (same origin, path prefix on a segment boundary)."""
        if other.origin != self.origin:
            return False
        return other.path == self.path or other.path.startswith(self.path + "/")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{host}{port}{self.path}{query}"


def _ipv4_part(text: str) -> int:
    if text.startswith("0x"):
        return int(text[2:] or "0", 16)
    if len(text) > 1 and text.startswith("0"):
        if not re.fullmatch(r"[0-7]+", text):
            raise UrlError("invalid octal IPv4 part in the host")
        return int(text, 8)
    return int(text)


def _numeric_ipv4(host: str) -> str:
    """Canonical dotted quad of any numeric IPv4 spelling (WHATWG / inet_aton rules), else UrlError."""
    parts = host.rstrip(".").split(".")
    values = [_ipv4_part(p) for p in parts]
    if any(v > 255 for v in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise UrlError("the host is not a valid IPv4 address")
    number = 0
    for v in values[:-1]:
        number = number * 256 + v
    number = number * 256 ** (5 - len(values)) + values[-1]
    return str(ipaddress.IPv4Address(number))


def _canonical_host(raw: str) -> str:
    if not raw:
        raise UrlError("the URL has no host")
    if "%" in raw:
        raise UrlError("percent signs are not allowed in the host")
    if raw.startswith("["):
        if not raw.endswith("]"):
            raise UrlError("invalid IPv6 literal")
        try:
            address = ipaddress.IPv6Address(raw[1:-1])
        except ValueError:
            raise UrlError("invalid IPv6 literal") from None
        mapped = address.ipv4_mapped
        return str(mapped) if mapped is not None else address.compressed
    host = raw.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host or host.endswith("."):
        raise UrlError("invalid host")
    if _NUMERIC_HOST.match(host) or host.split(".")[-1].isdigit():
        if not _NUMERIC_HOST.match(host):
            raise UrlError("the host is not a valid IPv4 address")
        return _numeric_ipv4(host)
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in host.split(".")):
        raise UrlError("invalid host name")
    return host


def _split_host_port(netloc: str) -> tuple[str, str | None]:
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise UrlError("invalid IPv6 literal")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise UrlError("invalid host")
        return host, rest[1:]
    host, sep, port = netloc.rpartition(":")
    return (host, port) if sep else (netloc, None)


def _idna(netloc: str) -> str:
    """IDNA-encode a non-ASCII host part (the only place non-ASCII is tolerated)."""
    host, port = _split_host_port(netloc)
    try:
        encoded = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise UrlError("invalid internationalised host name") from None
    return encoded if port is None else f"{encoded}:{port}"


def parse_url(text: object, *, allow_query: bool = False) -> HttpUrl:
    """Parse and canonicalise an absolute http(s) URL, or raise `UrlError` (see the module doc)."""
    if not isinstance(text, str) or not text:
        raise UrlError("the URL must be a non-empty string")
    if len(text) > MAX_URL_LENGTH:
        raise UrlError("the URL is too long")
    scheme_end = text.find("://")
    if scheme_end > 0:
        rest = text[scheme_end + 3 :]
        authority_end = len(rest)
        for sep in "/?#":
            pos = rest.find(sep)
            if 0 <= pos < authority_end:
                authority_end = pos
        authority = rest[:authority_end]
        if not authority.isascii():
            if "@" in authority:
                raise UrlError("userinfo is not allowed in the URL")
            text = text[: scheme_end + 3] + _idna(authority) + rest[authority_end:]
    if _FORBIDDEN_CHARS.search(text):
        raise UrlError("the URL contains whitespace, control, backslash or non-ASCII characters")
    try:
        parts = urlsplit(text)
    except ValueError:
        raise UrlError("the URL cannot be parsed") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UrlError("the URL must use http or https")
    if "@" in parts.netloc:
        raise UrlError("userinfo is not allowed in the URL")
    if parts.fragment or text.endswith("#"):
        raise UrlError("a fragment is not allowed in the URL")
    if (parts.query or text.endswith("?")) and not allow_query:
        raise UrlError("a query is not allowed in this URL")
    raw_host, raw_port = _split_host_port(parts.netloc)
    host = _canonical_host(raw_host)
    if raw_port is None or raw_port == "":
        port = DEFAULT_PORTS[scheme]
    elif raw_port.isdigit() and len(raw_port) <= 5 and 0 < int(raw_port) < 65536:
        port = int(raw_port)
    else:
        raise UrlError("invalid port")
    path = parts.path
    if path and not path.startswith("/"):
        raise UrlError("invalid path")
    if _BAD_PATH_ESCAPES.search(path):
        raise UrlError("encoded dots, slashes or backslashes are not allowed in the path")
    segments = path.split("/")
    if any(s in (".", "..") for s in segments):
        raise UrlError("dot segments are not allowed in the path")
    return HttpUrl(scheme, host, port, path.rstrip("/"), parts.query)


class UrlAllowList:
    """A list of allowed base URLs; ``*`` allows any well-formed http(s) URL (development only)."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries = tuple(e for e in (str(x).strip() for x in entries) if e)
        self.allow_any = ANY in self.entries
        bases: list[HttpUrl] = []
        for entry in self.entries:
            if entry == ANY:
                continue
            try:
                bases.append(parse_url(entry))
            except UrlError as exc:
                raise ValueError(f"invalid allow-list entry {entry!r}: {exc}") from None
        self.bases = tuple(bases)

    @property
    def empty(self) -> bool:
        return not self.entries

    def match(self, url: str, *, allow_query: bool = False) -> HttpUrl | None:
        """The parsed URL if it is allowed, else None (never raises)."""
        try:
            parsed = parse_url(url, allow_query=allow_query)
        except UrlError:
            return None
        if self.allow_any or any(base.covers(parsed) for base in self.bases):
            return parsed
        return None

    def allows(self, url: str) -> bool:
        return self.match(url) is not None
