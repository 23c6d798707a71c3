"""The fetch path's floor: the service's own FHIR queries, issued directly.

`direct_queries` resolves the service's queries (`build_queries`) for one patient exactly as the
service's FHIR fallback does (``PrefetchQuery.search_params(patient_id, since)``: the Observation
search carries ``date=ge<since>``, ``since`` = the trial's Observation cut-off on the as-of date)
and sends them to the FHIR server in parallel through one pooled ``httpx.AsyncClient``, following
``next`` links within the same limits as the service's gateway (page size, pages, resources), and
decodes every page with ``json.loads``. That is the unavoidable cost of reading the record over
FHIR; the service's fetch-path latency is compared with it. `query_key` turns a request URL into
a comparable form, to check that the floor and the service send the same first-page queries.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from cds.fhir.gateway import GatewayLimits
from cds.service.prefetch import PrefetchQuery


@dataclass
class FloorResult:
    requests: int = 0
    resources: int = 0
    truncated: bool = False
    urls: list[str] = field(default_factory=list)  # every request URL, pages included


async def _search(
    http: httpx.AsyncClient,
    base: str,
    query: PrefetchQuery,
    patient_id: str,
    since: date | None,
    limits: GatewayLimits,
    urls: list[str],
) -> tuple[int, int, bool]:
    async def get(url: str, params: dict[str, str] | None = None) -> httpx.Response:
        r = await http.get(url, params=params)
        urls.append(str(r.request.url))
        r.raise_for_status()
        return r

    if query.read:
        r = await get(f"{base}/{query.resource_type}/{patient_id}")
        json.loads(r.content)
        return 1, 1, False
    params = {**query.search_params(patient_id, since), "_count": str(limits.page_size)}
    r = await get(f"{base}/{query.resource_type}", params)
    requests, resources = 1, 0
    while True:
        page: dict[str, Any] = json.loads(r.content)
        resources += len(page.get("entry", []))
        link = next((li["url"] for li in page.get("link", []) if li.get("relation") == "next"), None)
        if link is None:
            return requests, resources, False
        if requests >= limits.max_pages or resources >= limits.max_resources:
            return requests, resources, True
        r = await get(link)
        requests += 1


async def direct_queries(
    http: httpx.AsyncClient,
    base: str,
    queries: tuple[PrefetchQuery, ...],
    patient_id: str,
    since: date | None,
    limits: GatewayLimits,
) -> FloorResult:
    urls: list[str] = []
    parts = await asyncio.gather(*(_search(http, base, q, patient_id, since, limits, urls) for q in queries))
    return FloorResult(
        requests=sum(p[0] for p in parts),
        resources=sum(p[1] for p in parts),
        truncated=any(p[2] for p in parts),
        urls=urls,
    )


def query_key(url: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A request URL as (path, sorted decoded query parameters): equal for the same FHIR query
    however it was encoded (fhirpy and httpx quote differently)."""
    parts = urlsplit(url)
    return parts.path.rstrip("/"), tuple(sorted(parse_qsl(parts.query, keep_blank_values=True)))


def first_pages(urls: list[str]) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """The queries among request URLs, sorted: reads and first pages (HAPI's next-page links carry
    ``_getpages``; they depend on the server's paging, not on the query)."""
    keys = [query_key(u) for u in urls]
    return sorted(k for k in keys if not any(name == "_getpages" for name, _ in k[1]))


def floor_client(limits: GatewayLimits) -> httpx.AsyncClient:
    """The floor's one pooled client, configured like the service gateway's."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, connect=5.0),
        limits=httpx.Limits(max_connections=limits.max_connections, max_keepalive_connections=limits.max_connections),
        trust_env=False,
        headers={"Accept": "application/fhir+json"},
    )
