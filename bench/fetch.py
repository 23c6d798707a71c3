"""The fetch path's floor: the service's own FHIR queries, issued directly.

`direct_queries` resolves the service's discovery prefetch templates (`build_queries`) for one
patient and sends them to the FHIR server in parallel through one pooled ``httpx.AsyncClient``,
following ``next`` links within the same limits as the service's gateway (page size, pages,
resources), and decodes every page with ``json.loads``. That is the unavoidable cost of reading
the record over FHIR; the service's fetch-path latency is compared with it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx

from cds.fhir.gateway import GatewayLimits
from cds.service.prefetch import PrefetchQuery


@dataclass
class FloorResult:
    requests: int = 0
    resources: int = 0
    truncated: bool = False


async def _search(
    http: httpx.AsyncClient, base: str, query: PrefetchQuery, patient_id: str, limits: GatewayLimits
) -> tuple[int, int, bool]:
    if query.read:
        r = await http.get(f"{base}/{query.resource_type}/{patient_id}")
        r.raise_for_status()
        json.loads(r.content)
        return 1, 1, False
    params = {**query.search_params(patient_id), "_count": str(limits.page_size)}
    r = await http.get(f"{base}/{query.resource_type}", params=params)
    requests, resources = 1, 0
    while True:
        r.raise_for_status()
        page: dict[str, Any] = json.loads(r.content)
        resources += len(page.get("entry", []))
        link = next((li["url"] for li in page.get("link", []) if li.get("relation") == "next"), None)
        if link is None:
            return requests, resources, False
        if requests >= limits.max_pages or resources >= limits.max_resources:
            return requests, resources, True
        r = await http.get(link)
        requests += 1


async def direct_queries(
    http: httpx.AsyncClient,
    base: str,
    queries: tuple[PrefetchQuery, ...],
    patient_id: str,
    limits: GatewayLimits,
) -> FloorResult:
    parts = await asyncio.gather(*(_search(http, base, q, patient_id, limits) for q in queries))
    return FloorResult(
        requests=sum(p[0] for p in parts), resources=sum(p[1] for p in parts), truncated=any(p[2] for p in parts)
    )


def floor_client(limits: GatewayLimits) -> httpx.AsyncClient:
    """The floor's one pooled client, configured like the service gateway's."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, connect=5.0),
        limits=httpx.Limits(max_connections=limits.max_connections, max_keepalive_connections=limits.max_connections),
        trust_env=False,
        headers={"Accept": "application/fhir+json"},
    )
