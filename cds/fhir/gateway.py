"""The FHIR boundary: a small typed httpx client over one shared, pooled `httpx.AsyncClient`.

Why not fhirpy: fhirpy 2.3's `AsyncFHIRClient` sends its HTTP through aiohttp with a new session
per request (no pooling, no keep-alive, no timeout below aiohttp's 300 s), and its public API has
no way to hand it another transport; using it over httpx meant overriding its private request
methods. The service needs two interactions, a read (``GET [base]/Type/id``) and a type search
(``GET [base]/Type?params&_count=n``) followed through its ``next`` links, so `FhirClient` does
exactly those with httpx: connection pool, keep-alive, bounded timeouts, and tests that mock the
FHIR server with respx at the transport.

Errors (`cds.errors.FhirError` and its subclasses, mapped to outcomes in one table,
`cds.service.errors.FHIR_OUTCOMES`): connection refused/reset (`FhirUnreachable`), no whole answer
within the timeout (`FhirTimeout`), non-2xx statuses by class (`FhirRedirect` 3xx - never followed,
`FhirAccessDenied` 401/403, `FhirNotFound` 404/410, `FhirClientError` other 4xx, `FhirServerFault`
5xx), a body that is not acceptable JSON or not the resource asked for (`FhirInvalidBody`), a URL
outside the base (`FhirOutsideBase`). Messages and log lines name no URL, id, token or server text.
Paging is bounded by `GatewayLimits.max_pages` and `max_resources`; a search cut short (or whose
``next`` link leaves the base) is returned with ``truncated=True`` instead of failing.

Where requests may go (SSRF): `FhirGateway.client` accepts a base URL only if it is on the gateway's
allow-list (`cds.fhir.urls.UrlAllowList`, compared after canonical parsing) and binds the client to
the canonical form. Every URL the client is about to request (reads, searches, ``next`` links) is
parsed again and must lie under that base on a path-segment boundary, so neither a ``next`` link nor
a crafted id can send the bearer token to another host or path. Redirects are never followed. Each
response body is read as a stream and abandoned past `max_response_bytes` (`cds.bounded`), and each
exchange is bounded by `timeout` as a whole (a server trickling bytes cannot hold a request open).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from cds import fhirjson
from cds.bounded import aread_bounded, check_declared
from cds.config import setting_default
from cds.errors import (
    FhirError,
    FhirInvalidBody,
    FhirOutsideBase,
    FhirServerNotAllowed,
    FhirStatusError,
    FhirTimeout,
    FhirUnreachable,
    fhir_status_error,
)
from cds.fhir.safejson import JsonRejected, loads_bounded
from cds.fhir.urls import HttpUrl, UrlAllowList, UrlError, parse_url

if TYPE_CHECKING:
    from cds.config import Settings

log = logging.getLogger("cds.fhir")

USER_AGENT = "nct04582136-cds/0.1 (CDS Hooks prescreen)"
FHIR_JSON = "application/fhir+json"
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    """Bounds on every FHIR interaction (see `cds.config.Settings` for their meaning and defaults)."""

    timeout: float = setting_default("fhir_timeout")
    connect_timeout: float = setting_default("fhir_connect_timeout")
    page_size: int = setting_default("fhir_page_size")
    max_pages: int = setting_default("fhir_max_pages")
    max_resources: int = setting_default("fhir_max_resources")
    max_connections: int = setting_default("fhir_max_connections")
    max_response_bytes: int = setting_default("fhir_max_response_bytes")
    max_json_depth: int = setting_default("max_json_depth")

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayLimits:
        return cls(
            timeout=settings.fhir_timeout,
            connect_timeout=min(settings.fhir_connect_timeout, settings.fhir_timeout),
            page_size=settings.fhir_page_size,
            max_pages=settings.fhir_max_pages,
            max_resources=settings.fhir_max_resources,
            max_connections=settings.fhir_max_connections,
            max_response_bytes=settings.fhir_max_response_bytes,
            max_json_depth=settings.max_json_depth,
        )


@dataclass(slots=True)
class SearchResult:
    """Resources of one search (all pages read), as plain JSON dicts."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    pages: int = 0
    truncated: bool = False  # more data existed than the limits (or the base) allowed to read
    malformed: int = 0  # entries that are neither a resource nor an outcome (not JSON objects, no type)


def plain(value: Any) -> Any:
    """Mappings and sequences as plain dicts and lists (deep copy); a `dict` (JSON decoded by us, or
    sent as prefetch) is returned as it is, not copied."""
    if type(value) is dict:
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


is_operation_outcome = fhirjson.is_operation_outcome
next_link = fhirjson.next_link


def bundle_entries(bundle: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """The resources of a Bundle (``search.mode = outcome`` entries and OperationOutcomes skipped;
    ``urn:uuid:`` references to the Bundle's own entries rewritten to ``Type/id``), and the number of
    malformed entries (not an object, no resource object, no string resourceType)."""
    resources, malformed = fhirjson.searchset_resources(bundle)
    return [r if type(r) is dict else plain(r) for r in resources], malformed


def bundle_resources(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The resources of a Bundle, skipping `search.mode = outcome` entries and OperationOutcomes."""
    return bundle_entries(bundle)[0]


def same_base(url: str, base: str) -> bool:
    """True if `url` is relative or lies under the FHIR base `base` (same origin, path prefix on a
    segment boundary, compared after canonical parsing; no dot segments)."""
    if "://" not in url:
        return not url.startswith(("//", "\\")) and "\\" not in url
    try:
        return parse_url(base).covers(parse_url(url, allow_query=True))
    except UrlError:
        return False


def _log_failure(error: FhirError) -> None:
    status = error.status if isinstance(error, FhirStatusError) else None
    log.warning("fhir.error", extra={"event": "fhir.error", "error": type(error).__name__, "status": status})


class FhirClient:
    """Reads and searches one FHIR server (a canonical base URL, an optional bearer token) through
    the gateway's shared httpx client."""

    def __init__(self, base: HttpUrl, http: httpx.AsyncClient, limits: GatewayLimits, access_token: str | None) -> None:
        self.base = base
        self.url = str(base)
        self.http = http
        self.limits = limits
        self._headers = {"Accept": FHIR_JSON}
        if access_token:
            self._headers["Authorization"] = f"Bearer {access_token}"

    def request_url(self, path: str, params: Mapping[str, str] | None = None) -> str:
        """The URL for `path` (relative to the base, or absolute) with `params`; `FhirOutsideBase`
        unless it lies under this client's base."""
        url = path if "://" in path or path.startswith("//") else f"{self.url}/{path}"
        try:
            if params:
                url = str(httpx.URL(url, params=dict(params)))
            inside = self.base.covers(parse_url(url, allow_query=True))
        except (UrlError, httpx.InvalidURL):
            inside = False
        if not inside:
            raise FhirOutsideBase("a FHIR link points outside the FHIR server base")
        return url

    async def _exchange(self, url: str) -> bytes:
        limit = self.limits.max_response_bytes

        def too_large() -> FhirInvalidBody:
            return FhirInvalidBody(f"the FHIR server sent more than {limit} bytes")

        async with self.http.stream("GET", url, headers=self._headers) as response:
            if not 200 <= response.status_code < 300:
                raise fhir_status_error(response.status_code)
            check_declared(response.headers.get("content-length"), limit, too_large)
            return await aread_bounded(response.aiter_bytes(), limit, too_large)

    async def get_json(self, url: str) -> Any:
        """GET `url` (already checked by `request_url`) and decode its JSON body."""
        timeout = self.limits.timeout
        try:
            # asyncio's timeout bounds the whole exchange, body included (also with mocked
            # transports, and against a server trickling bytes); httpx's timeouts bound each phase.
            async with asyncio.timeout(timeout):
                content = await self._exchange(url)
            if not content.strip():
                raise FhirInvalidBody("the FHIR server sent an empty body")
            try:
                return loads_bounded(content, max_depth=self.limits.max_json_depth)
            except JsonRejected as exc:
                raise FhirInvalidBody(f"the FHIR server sent a body that is not acceptable JSON ({exc})") from None
        except (TimeoutError, httpx.TimeoutException):
            error: FhirError = FhirTimeout(f"the FHIR server did not answer within {timeout:g} s")
        except httpx.HTTPError as exc:
            error = FhirUnreachable(f"the FHIR server could not be reached ({type(exc).__name__})")
        except FhirError as exc:
            error = exc
        _log_failure(error)
        raise error

    async def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """``GET [base]/Type/id``; the answer must be that resource type."""
        if not _TYPE.fullmatch(resource_type) or not _FHIR_ID.fullmatch(resource_id):
            raise FhirOutsideBase("not a FHIR resource type and id")
        data = await self.get_json(self.request_url(f"{resource_type}/{resource_id}"))
        if fhirjson.resource_type(data) != resource_type:
            error = FhirInvalidBody(f"the FHIR server did not return a {resource_type} for a read")
            _log_failure(error)
            raise error
        result: dict[str, Any] = plain(data)
        return result

    async def bundle(self, url: str, what: str) -> dict[str, Any]:
        data = await self.get_json(url)
        if fhirjson.resource_type(data) != "Bundle":
            error = FhirInvalidBody(f"the FHIR server did not return a Bundle for {what}")
            _log_failure(error)
            raise error
        result: dict[str, Any] = data
        return result

    async def search(self, resource_type: str, params: Mapping[str, str], count: int) -> dict[str, Any]:
        """The first page of ``GET [base]/Type?params&_count=count`` (a Bundle)."""
        if not _TYPE.fullmatch(resource_type):
            raise FhirOutsideBase("not a FHIR resource type")
        url = self.request_url(resource_type, {**params, "_count": str(count)})
        return await self.bundle(url, f"a {resource_type} search")


class FhirGateway:
    """Owns the shared httpx pool; hands out clients bound to a base URL and token."""

    def __init__(
        self,
        limits: GatewayLimits | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        allowed: UrlAllowList | None = None,
    ) -> None:
        """`allowed`: the FHIR base URLs clients may be bound to (None: any clean http(s) URL)."""
        self.limits = limits or GatewayLimits()
        self.allowed = allowed
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self.limits.timeout, connect=self.limits.connect_timeout),
            limits=httpx.Limits(
                max_connections=self.limits.max_connections,
                max_keepalive_connections=self.limits.max_connections,
                keepalive_expiry=30.0,
            ),
            transport=transport,
            follow_redirects=False,
            trust_env=False,  # no proxy or .netrc credentials picked up from the environment
            headers={"User-Agent": USER_AGENT},
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> FhirGateway:
        allowed = UrlAllowList(settings.fhir_allowed_servers)
        return cls(GatewayLimits.from_settings(settings), transport=transport, allowed=allowed)

    def allowed_base(self, base_url: str) -> HttpUrl | None:
        """The canonical base if a client may be bound to `base_url`, else None."""
        if self.allowed is None:
            try:
                return parse_url(base_url)
            except UrlError:
                return None
        return self.allowed.match(base_url)

    @property
    def http(self) -> httpx.AsyncClient:
        return self._http

    async def aclose(self) -> None:
        await self._http.aclose()

    def client(self, base_url: str, access_token: str | None = None) -> FhirClient:
        """A client bound to the canonical form of `base_url`; `FhirServerNotAllowed` if the URL is
        not on the allow-list (checked before anything is sent)."""
        base = self.allowed_base(base_url)
        if base is None:
            raise FhirServerNotAllowed("fhirServer is not on the allow-list")
        return FhirClient(base, self._http, self.limits, access_token)

    async def read(self, client: FhirClient, resource_type: str, resource_id: str) -> dict[str, Any]:
        """Instance read; the result must be that resource type."""
        return await client.read(resource_type, resource_id)

    async def search(self, client: FhirClient, resource_type: str, params: Mapping[str, str]) -> SearchResult:
        """Type search, following `next` links within the limits."""
        bundle = await client.search(resource_type, params, self.limits.page_size)
        return await self.follow(client, bundle)

    async def follow(self, client: FhirClient | None, bundle: Mapping[str, Any]) -> SearchResult:
        """All resources of a searchset Bundle and of its `next` pages, bounded.

        `client` is None when there is no FHIR server to page from (a prefetched Bundle with a next
        link and no `fhirServer`): the result is then marked truncated. A `next` link outside the
        client's base is not followed (truncated, logged without the URL).
        """
        result = SearchResult()
        url = self._take_page(result, bundle, client)
        while url is not None and client is not None:
            page = await client.bundle(url, "a next page")
            url = self._take_page(result, page, client)
        return result

    def read_bundle(self, bundle: Mapping[str, Any]) -> SearchResult:
        """`follow` without a FHIR server, so without any I/O: the Bundle's own resources, marked
        truncated if it has a `next` link (the same answer `follow(None, bundle)` gives)."""
        result = SearchResult()
        self._take_page(result, bundle, None)
        return result

    def _take_page(self, result: SearchResult, page: Mapping[str, Any], client: FhirClient | None) -> str | None:
        """Add one page to `result` within the limits; the checked URL of the next page to read, or
        None when the search is done or cut short (then `result.truncated`)."""
        limits = self.limits
        result.pages += 1
        resources, malformed = bundle_entries(page)
        result.resources.extend(resources)
        result.malformed += malformed
        if len(result.resources) > limits.max_resources:
            del result.resources[limits.max_resources :]
            result.truncated = True
            return None
        link = next_link(page)
        if link is None:
            return None
        if client is None or result.pages >= limits.max_pages or len(result.resources) >= limits.max_resources:
            result.truncated = True
            return None
        try:
            url = client.request_url(link) if same_base(link, client.url) else None
        except FhirOutsideBase:
            url = None
        if url is None:
            log.warning("fhir.next_link_outside_base", extra={"event": "fhir.next_link_outside_base"})
            result.truncated = True
        return url
