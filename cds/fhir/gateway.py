"""One small gateway to FHIR servers: fhirpy's search API over one shared, pooled httpx client.

fhirpy 2.3's `AsyncFHIRClient` opens a new aiohttp session for every request (no pooling, no
keep-alive, no timeout below aiohttp's 300 s) and sends all its HTTP through one method,
`AsyncClient._do_request`. `PooledFHIRClient` overrides that one method to send the request through
a shared `httpx.AsyncClient` owned by `FhirGateway` (connection pool, keep-alive, bounded timeouts),
while the rest of fhirpy (``client.resources("Observation").search(...).limit(n).fetch_raw()``,
``client.get("Patient", id)``, URL building and next-link parsing) stays as it is. Because the
requests go through httpx, tests mock the FHIR server with respx at the transport.

Errors: every failure to obtain data (connection refused, timeout, non-2xx status including
401/403/404/5xx, invalid JSON, a response that is not the expected resource) raises
`cds.errors.FhirServerError` with a message free of PHI and tokens (no URLs, no ids, no server
diagnostics). Paging is bounded by `GatewayLimits.max_pages` and `max_resources`; a search cut short
is returned with ``truncated=True`` instead of failing. `next` links are followed only when they point
at the same FHIR base (so the bearer token never leaves for another host).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from fhirpy import AsyncFHIRClient
from fhirpy.base.utils import AttrDict, parse_pagination_url

from cds.errors import FhirServerError

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

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayLimits:
        return cls(
            timeout=settings.fhir_timeout,
            connect_timeout=min(settings.fhir_connect_timeout, settings.fhir_timeout),
            page_size=settings.fhir_page_size,
            max_pages=settings.fhir_max_pages,
            max_resources=settings.fhir_max_resources,
            max_connections=settings.fhir_max_connections,
        )


@dataclass(slots=True)
class SearchResult:
    """Resources of one search (all pages read), as plain JSON dicts."""

    resources: list[dict[str, Any]] = field(default_factory=list)
    pages: int = 0
    truncated: bool = False  # more data existed than the limits (or the base) allowed to read


def plain(value: Any) -> Any:
    """A deep copy of fhirpy's AttrDict/resource/reference objects as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def is_operation_outcome(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("resourceType") == "OperationOutcome"


def bundle_resources(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The resources of a Bundle, skipping `search.mode = outcome` entries and OperationOutcomes."""
    out: list[dict[str, Any]] = []
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return out
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        search = entry.get("search")
        if isinstance(search, Mapping) and search.get("mode") == "outcome":
            continue
        resource = entry.get("resource")
        if not isinstance(resource, Mapping) or is_operation_outcome(resource):
            continue
        if not isinstance(resource.get("resourceType"), str):
            continue
        out.append(plain(resource))
    return out


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
    """True if `url` is relative or lies under the FHIR base `base` (no other host or path)."""
    if "://" not in url:
        return not url.startswith("//")
    base = base.rstrip("/")
    return url.startswith((base + "/", base + "?"))


def _decode(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text, object_hook=AttrDict)
    except ValueError as exc:
        raise FhirServerError("the FHIR server sent a body that is not valid JSON") from exc


class PooledFHIRClient(AsyncFHIRClient):
    """fhirpy's async client whose single request method goes through a shared httpx client."""

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        authorization: str | None = None,
        timeout: float = 3.0,
    ) -> None:
        super().__init__(url.rstrip("/"), authorization=authorization)
        self._http = http
        self._timeout = timeout

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
        try:
            url: str = self._build_request_url(path, params).removesuffix("?")
        except ValueError as exc:  # an absolute URL outside the base: never send the token there
            raise FhirServerError("a FHIR link points outside the FHIR server base") from exc
        try:
            # asyncio's timeout bounds the whole exchange (also with mocked transports); httpx's own
            # timeouts bound each phase on real sockets.
            async with asyncio.timeout(self._timeout):
                response = await self._http.request(method.upper(), url, json=data, headers=headers)
        except TimeoutError as exc:
            raise FhirServerError(f"the FHIR server did not answer within {self._timeout:g} s") from exc
        except httpx.TimeoutException as exc:
            raise FhirServerError(f"the FHIR server did not answer within {self._timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise FhirServerError(f"the FHIR server could not be reached ({type(exc).__name__})") from exc

        status = response.status_code
        if status == 304:
            return (None, status) if returning_status else None
        if not 200 <= status < 300:
            if status in (401, 403):
                raise FhirServerError(f"the FHIR server refused access (HTTP {status})")
            raise FhirServerError(f"the FHIR server answered HTTP {status}")
        payload = _decode(response.text)
        return (payload, status) if returning_status else payload

    async def _fetch_resource(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return await self._do_request("get", path, params=params)


class FhirGateway:
    """Owns the shared httpx pool; hands out fhirpy clients bound to a base URL and token."""

    def __init__(
        self, limits: GatewayLimits | None = None, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.limits = limits or GatewayLimits()
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self.limits.timeout, connect=self.limits.connect_timeout),
            limits=httpx.Limits(
                max_connections=self.limits.max_connections,
                max_keepalive_connections=self.limits.max_connections,
                keepalive_expiry=30.0,
            ),
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> FhirGateway:
        return cls(GatewayLimits.from_settings(settings), transport=transport)

    @property
    def http(self) -> httpx.AsyncClient:
        return self._http

    async def aclose(self) -> None:
        await self._http.aclose()

    def client(self, base_url: str, access_token: str | None = None) -> PooledFHIRClient:
        authorization = f"Bearer {access_token}" if access_token else None
        return PooledFHIRClient(base_url, self._http, authorization=authorization, timeout=self.limits.timeout)

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
        bundle = await searchset.fetch_raw()
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
            result.resources.extend(bundle_resources(page))
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
            if not same_base(link, client.url):
                log.warning("fhir.next_link_outside_base", extra={"event": "fhir.next_link_outside_base"})
                result.truncated = True
                break
            path, params = parse_pagination_url(link)  # type: ignore[no-untyped-call]
            data = await client._fetch_resource(path, params)
            if not isinstance(data, Mapping) or data.get("resourceType") != "Bundle":
                raise FhirServerError("the FHIR server did not return a Bundle for a next page")
            page = data
        return result
