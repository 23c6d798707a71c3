"""One small gateway to FHIR servers: fhirpy's search API over one shared, pooled httpx client.

fhirpy 2.3's `AsyncFHIRClient` opens a new aiohttp session for every request (no pooling, no
keep-alive, no timeout below aiohttp's 300 s) and sends all its HTTP through one method,
`AsyncClient._do_request`. `PooledFHIRClient` overrides that one method to send the request through
a shared `httpx.AsyncClient` owned by `FhirGateway` (connection pool, keep-alive, bounded timeouts),
while the rest of fhirpy (``client.resources("Observation").search(...).limit(n).fetch_raw()``,
``client.get("Patient", id)``, URL building and next-link parsing) stays as it is. Because the
requests go through httpx, tests mock the FHIR server with respx at the transport.

Errors: every failure to obtain data (connection refused, timeout, non-2xx status including
redirects, 401/403/404/5xx, invalid, truncated, too deep or too large JSON, a response that is not
the expected resource) raises `cds.errors.FhirServerError` with a message free of PHI and tokens (no
URLs, no ids, no server diagnostics). Paging is bounded by `GatewayLimits.max_pages` and
`max_resources`; a search cut short is returned with ``truncated=True`` instead of failing.

Where requests may go (SSRF): `FhirGateway.client` accepts a base URL only if it is on the gateway's
allow-list (`cds.fhir.urls.UrlAllowList`, compared after canonical parsing) and binds the client to
the canonical form. Every URL the client is about to request (reads, searches, `next` links) is
parsed again and must lie under that base on a path-segment boundary, so neither a `next` link nor a
crafted id can send the bearer token to another host or path. Redirects are never followed. Each
response body is read as a stream and abandoned past `max_response_bytes`, and each exchange is
bounded by `timeout` as a whole (a server trickling bytes cannot hold a request open).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from fhirpy import AsyncFHIRClient
from fhirpy.base.utils import parse_pagination_url

from cds.errors import FhirServerError, FhirServerNotAllowed
from cds.fhir.safejson import DEFAULT_MAX_DEPTH, JsonRejected, loads_bounded
from cds.fhir.urls import HttpUrl, UrlAllowList, UrlError, parse_url

if TYPE_CHECKING:
    from cds.config import Settings

log = logging.getLogger("cds.fhir")

USER_AGENT = "nct04582136-cds/0.1 (CDS Hooks prescreen)"


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    """Bounds on every FHIR interaction (see `cds.config.Settings` for their meaning)."""

    timeout: float = 3.0
    connect_timeout: float = 1.0
    page_size: int = 200
    max_pages: int = 10
    max_resources: int = 5000
    max_connections: int = 32
    max_response_bytes: int = 20_000_000
    max_json_depth: int = DEFAULT_MAX_DEPTH

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
    """fhirpy's AttrDict/resource/reference objects as plain dicts and lists (deep copy); JSON that is
    already plain (a `dict` decoded by us, or sent as prefetch) is returned as it is, not copied."""
    if type(value) is dict:
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def is_operation_outcome(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("resourceType") == "OperationOutcome"


def bundle_entries(bundle: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """The resources of a Bundle, skipping `search.mode = outcome` entries and OperationOutcomes, and
    the number of malformed entries (not an object, no resource object, no string resourceType)."""
    out: list[dict[str, Any]] = []
    malformed = 0
    entries = bundle.get("entry")
    if entries is None:
        return out, 0
    if not isinstance(entries, list):
        return out, 1
    for entry in entries:
        if not isinstance(entry, Mapping):
            malformed += 1
            continue
        search = entry.get("search")
        if isinstance(search, Mapping) and search.get("mode") == "outcome":
            continue
        resource = entry.get("resource")
        if is_operation_outcome(resource):
            continue
        if not isinstance(resource, Mapping) or not isinstance(resource.get("resourceType"), str):
            malformed += 1
            continue
        out.append(plain(resource))
    return out, malformed


def bundle_resources(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The resources of a Bundle, skipping `search.mode = outcome` entries and OperationOutcomes."""
    return bundle_entries(bundle)[0]


def next_link(bundle: Mapping[str, Any]) -> str | None:
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, Mapping) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and url:
                return url
    return None


def same_base(url: str, base: str) -> bool:
    """True if `url` is relative or lies under the FHIR base `base` (same origin, path prefix on a
    segment boundary, compared after canonical parsing; no dot segments)."""
    if "://" not in url:
        return not url.startswith(("//", "\\")) and "\\" not in url
    try:
        return parse_url(base).covers(parse_url(url, allow_query=True))
    except UrlError:
        return False


def _decode(content: bytes, max_depth: int) -> Any:
    if not content.strip():
        return None
    try:
        return loads_bounded(content, max_depth=max_depth)  # plain dicts: nothing to copy later
    except JsonRejected as exc:
        raise FhirServerError(f"the FHIR server sent a body that is not acceptable JSON ({exc})") from None


class PooledFHIRClient(AsyncFHIRClient):
    """fhirpy's async client whose single request method goes through a shared httpx client."""

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        authorization: str | None = None,
        timeout: float = 3.0,
        max_response_bytes: int = 20_000_000,
        max_json_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        self.base = parse_url(url)  # raises UrlError (a ValueError) for anything not a clean http(s) base
        super().__init__(str(self.base), authorization=authorization)
        self._http = http
        self._timeout = timeout
        self._max_bytes = max_response_bytes
        self._max_depth = max_json_depth

    def request_url(self, path: str, params: dict[str, Any] | None = None) -> str:
        """The URL fhirpy would request; `FhirServerError` unless it lies under this client's base."""
        try:
            url: str = self._build_request_url(path, params).removesuffix("?")
        except ValueError as exc:  # fhirpy: an absolute URL outside the base
            raise FhirServerError("a FHIR link points outside the FHIR server base") from exc
        try:
            inside = self.base.covers(parse_url(url, allow_query=True))
        except UrlError:
            inside = False
        if not inside:
            raise FhirServerError("a FHIR link points outside the FHIR server base")
        return url

    async def _exchange(self, method: str, url: str, data: Any, headers: dict[str, str]) -> tuple[int, bytes]:
        async with self._http.stream(method.upper(), url, json=data, headers=headers) as response:
            status = response.status_code
            if not 200 <= status < 300:
                return status, b""
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_bytes:
                raise FhirServerError(f"the FHIR server sent more than {self._max_bytes} bytes")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self._max_bytes:
                    raise FhirServerError(f"the FHIR server sent more than {self._max_bytes} bytes")
                chunks.append(chunk)
            return status, b"".join(chunks)

    async def _do_request(
        self,
        method: str,
        path: str,
        data: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        extra_headers: dict[str, str] | None = None,
        *,
        returning_status: bool = False,
    ) -> Any:
        headers: dict[str, str] = self._build_request_headers()
        if extra_headers:
            headers = {**headers, **extra_headers}
        url = self.request_url(path, params)  # never send the token outside the base
        try:
            # asyncio's timeout bounds the whole exchange, body included (also with mocked
            # transports, and against a server trickling bytes); httpx's timeouts bound each phase.
            async with asyncio.timeout(self._timeout):
                status, content = await self._exchange(method, url, data, headers)
        except TimeoutError as exc:
            raise FhirServerError(f"the FHIR server did not answer within {self._timeout:g} s") from exc
        except httpx.TimeoutException as exc:
            raise FhirServerError(f"the FHIR server did not answer within {self._timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise FhirServerError(f"the FHIR server could not be reached ({type(exc).__name__})") from exc

        if not 200 <= status < 300:
            if status in (401, 403):
                raise FhirServerError(f"the FHIR server refused access (HTTP {status})")
            if 300 <= status < 400:
                raise FhirServerError(f"the FHIR server answered a redirect (HTTP {status}), not followed")
            raise FhirServerError(f"the FHIR server answered HTTP {status}")
        payload = _decode(content, self._max_depth)
        return (payload, status) if returning_status else payload

    async def _fetch_resource(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return await self._do_request("get", path, params=params)


def _link_inside(client: PooledFHIRClient, link: str) -> bool:
    if not same_base(link, client.url):
        return False
    try:
        path, params = parse_pagination_url(link)  # type: ignore[no-untyped-call]
        client.request_url(path, params)
    except (FhirServerError, ValueError):
        return False
    return True


class FhirGateway:
    """Owns the shared httpx pool; hands out fhirpy clients bound to a base URL and token."""

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

    def client(self, base_url: str, access_token: str | None = None) -> PooledFHIRClient:
        """A fhirpy client bound to the canonical form of `base_url`; `FhirServerNotAllowed` if the
        URL is not on the allow-list (checked before anything is sent)."""
        base = self.allowed_base(base_url)
        if base is None:
            raise FhirServerNotAllowed("fhirServer is not on the allow-list")
        authorization = f"Bearer {access_token}" if access_token else None
        return PooledFHIRClient(
            str(base),
            self._http,
            authorization=authorization,
            timeout=self.limits.timeout,
            max_response_bytes=self.limits.max_response_bytes,
            max_json_depth=self.limits.max_json_depth,
        )

    async def read(self, client: PooledFHIRClient, resource_type: str, resource_id: str) -> dict[str, Any]:
        """Instance read through fhirpy (``client.get``); the result must be that resource type."""
        data = await client.get(resource_type, resource_id)
        if not isinstance(data, Mapping) or data.get("resourceType") != resource_type:
            raise FhirServerError(f"the FHIR server did not return a {resource_type} for a read")
        result: dict[str, Any] = plain(data)
        return result

    async def search(self, client: PooledFHIRClient, resource_type: str, params: Mapping[str, str]) -> SearchResult:
        """Type search through fhirpy's search API, following `next` links within the limits."""
        searchset = client.resources(resource_type).search(**params).limit(self.limits.page_size)
        # fhirpy builds the query; its fetch_raw() post-processing assumes a well-formed Bundle
        # (it crashes on a list, null or junk entries), so the raw page is fetched and checked here.
        bundle = await client._fetch_resource(searchset.resource_type, searchset.params)
        if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
            raise FhirServerError(f"the FHIR server did not return a Bundle for a {resource_type} search")
        return await self.follow(client, bundle)

    async def follow(self, client: PooledFHIRClient | None, bundle: Mapping[str, Any]) -> SearchResult:
        """All resources of a searchset Bundle and of its `next` pages, bounded.

        `client` is None when there is no FHIR server to page from (a prefetched Bundle with a next
        link and no `fhirServer`): the result is then marked truncated.
        """
        limits = self.limits
        result = SearchResult()
        page: Mapping[str, Any] = bundle
        while True:
            result.pages += 1
            resources, malformed = bundle_entries(page)
            result.resources.extend(resources)
            result.malformed += malformed
            if len(result.resources) > limits.max_resources:
                del result.resources[limits.max_resources :]
                result.truncated = True
                break
            link = next_link(page)
            if link is None:
                break
            if client is None or result.pages >= limits.max_pages or len(result.resources) >= (limits.max_resources):
                result.truncated = True
                break
            if not _link_inside(client, link):
                log.warning("fhir.next_link_outside_base", extra={"event": "fhir.next_link_outside_base"})
                result.truncated = True
                break
            path, params = parse_pagination_url(link)  # type: ignore[no-untyped-call]
            data = await client._fetch_resource(path, params)
            if not isinstance(data, Mapping) or data.get("resourceType") != "Bundle":
                raise FhirServerError("the FHIR server did not return a Bundle for a next page")
            page = data
        return result
