"""The FHIR gateway: a typed httpx client over one pooled httpx client, bounded, PHI-free typed errors."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from types import MappingProxyType
from typing import Any

import httpx
import pytest
import respx

from cds.errors import FhirError
from cds.fhir.gateway import FhirGateway, GatewayLimits, bundle_resources, same_base

BASE = "http://fhir.test/fhir"


def obs(i: int) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": f"o{i}", "subject": {"reference": "Patient/p1", "display": "A"}}


def page(resources: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    if next_url:
        bundle["link"] = [{"relation": "self", "url": BASE}, {"relation": "next", "url": next_url}]
    return bundle


@pytest.fixture
async def gateway() -> AsyncIterator[FhirGateway]:
    gw = FhirGateway(GatewayLimits(timeout=0.3, connect_timeout=0.3, page_size=2, max_pages=3, max_resources=100))
    yield gw
    await gw.aclose()


async def test_search_sends_params_token_and_uses_the_shared_client(
    gateway: FhirGateway, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(f"{BASE}/Observation").mock(return_value=httpx.Response(200, json=page([obs(1)])))
    client = gateway.client(BASE + "/", "tok")
    assert client.http is gateway.http
    result = await gateway.search(
        client, "Observation", {"patient": "p1", "code": "http://loinc.org|1,http://loinc.org|2"}
    )
    request = route.calls.last.request
    assert request.headers["Authorization"] == "Bearer tok"
    assert request.headers["Accept"] == "application/fhir+json"
    assert request.url.params["patient"] == "p1"
    assert request.url.params["code"] == "http://loinc.org|1,http://loinc.org|2"
    assert request.url.params["_count"] == "2"
    assert result.resources == [obs(1)]
    assert type(result.resources[0]) is dict
    assert type(result.resources[0]["subject"]) is dict
    assert result.pages == 1
    assert not result.truncated


async def test_paging_follows_next_links_until_the_page_limit(
    gateway: FhirGateway, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/Observation").mock(
        return_value=httpx.Response(200, json=page([obs(1), obs(2)], f"{BASE}?_getpages=x&offset=2"))
    )
    more = respx_mock.get(BASE, params={"_getpages": "x"}).mock(
        side_effect=lambda request: httpx.Response(
            200,
            json=page(
                [obs(int(request.url.params["offset"]) + 1)],
                f"{BASE}?_getpages=x&offset={int(request.url.params['offset']) + 1}",
            ),
        )
    )
    result = await gateway.search(gateway.client(BASE, None), "Observation", {"patient": "p1"})
    assert more.call_count == 2  # max_pages=3
    assert [r["id"] for r in result.resources] == ["o1", "o2", "o3", "o4"]
    assert result.pages == 3
    assert result.truncated
    assert all("Authorization" not in c.request.headers for c in more.calls)


async def test_resource_cap_truncates(respx_mock: respx.MockRouter) -> None:
    gw = FhirGateway(GatewayLimits(max_resources=3, max_pages=10))
    respx_mock.get(f"{BASE}/Observation").mock(return_value=httpx.Response(200, json=page([obs(i) for i in range(5)])))
    result = await gw.search(gw.client(BASE, None), "Observation", {"patient": "p1"})
    await gw.aclose()
    assert len(result.resources) == 3
    assert result.truncated


async def test_complete_result_without_next_link_is_not_truncated(
    gateway: FhirGateway, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(f"{BASE}/Observation").mock(
        return_value=httpx.Response(200, json=page([obs(1)], f"{BASE}?_getpages=x&offset=1"))
    )
    respx_mock.get(BASE, params={"_getpages": "x"}).mock(return_value=httpx.Response(200, json=page([obs(2)])))
    result = await gateway.search(gateway.client(BASE, None), "Observation", {"patient": "p1"})
    assert [r["id"] for r in result.resources] == ["o1", "o2"]
    assert not result.truncated


async def test_follow_without_a_server_marks_truncated(gateway: FhirGateway) -> None:
    result = await gateway.follow(None, page([obs(1)], f"{BASE}?_getpages=x"))
    assert result.resources == [obs(1)]
    assert result.truncated


def test_bundle_resources_skips_outcomes_and_junk() -> None:
    bundle = page([obs(1)])
    bundle["entry"] += [
        {"resource": {"resourceType": "OperationOutcome", "issue": []}},
        {"resource": obs(2), "search": {"mode": "outcome"}},
        {"resource": {"no": "type"}},
        "junk",
        {"fullUrl": "x"},
    ]
    assert bundle_resources(bundle) == [obs(1)]
    assert bundle_resources({"resourceType": "Bundle"}) == []


def test_same_base() -> None:
    assert same_base(f"{BASE}?_getpages=1", BASE)
    assert same_base(f"{BASE}/Observation?page=2", BASE + "/")
    assert same_base("Observation?page=2", BASE)
    assert not same_base("http://fhir.test/fhirX?x", BASE)
    assert not same_base(f"http://evil.test/?u={BASE}", BASE)
    assert not same_base("//evil.test/fhir", BASE)


async def test_read_returns_the_resource(gateway: FhirGateway, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(f"{BASE}/Patient/p1").mock(
        return_value=httpx.Response(200, json={"resourceType": "Patient", "id": "p1"})
    )
    assert await gateway.read(gateway.client(BASE, "t"), "Patient", "p1") == {"resourceType": "Patient", "id": "p1"}
    assert route.calls.last.request.headers["Authorization"] == "Bearer t"


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (
            httpx.Response(
                500, json={"resourceType": "OperationOutcome", "issue": [{"diagnostics": "Patient/p1 secret"}]}
            ),
            "HTTP 500",
        ),
        (httpx.Response(404), "HTTP 404"),
        (httpx.Response(401), "refused access (HTTP 401)"),
        (httpx.Response(200, text="<html>"), "not valid JSON"),
        (httpx.Response(200, json={"resourceType": "OperationOutcome"}), "did not return a Patient"),
    ],
)
async def test_errors_become_phi_free_fhir_server_errors(
    gateway: FhirGateway, respx_mock: respx.MockRouter, response: httpx.Response, message: str
) -> None:
    respx_mock.get(f"{BASE}/Patient/p1").mock(return_value=response)
    with pytest.raises(FhirError) as info:
        await gateway.read(gateway.client(BASE, "secret-token"), "Patient", "p1")
    assert message in info.value.message
    for leak in ("p1", "secret", "fhir.test"):
        assert leak not in info.value.message


async def test_slow_server_times_out(gateway: FhirGateway, respx_mock: respx.MockRouter) -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(3)
        return httpx.Response(200, json=page([]))

    respx_mock.get(f"{BASE}/Observation").mock(side_effect=slow)
    started = time.perf_counter()
    with pytest.raises(FhirError, match=r"did not answer within 0\.3 s"):
        await gateway.search(gateway.client(BASE, None), "Observation", {"patient": "p1"})
    assert time.perf_counter() - started < 1.0


async def test_connection_refused(gateway: FhirGateway) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FhirError, match="could not be reached"):
        await gateway.search(gateway.client(f"http://127.0.0.1:{port}/fhir", None), "Condition", {"patient": "p1"})


async def test_connections_are_pooled_and_reused() -> None:
    """Against a real local HTTP server: several requests, one TCP connection."""
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        body = b'{"resourceType":"Bundle","type":"searchset"}'
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/fhir+json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gw = FhirGateway(GatewayLimits(timeout=2.0))
    try:
        client = gw.client(f"http://127.0.0.1:{port}/fhir", None)
        for rtype in ("Condition", "Procedure", "AllergyIntolerance"):
            await gw.search(client, rtype, {"patient": "p1"})
        assert connections == 1
    finally:
        await gw.aclose()
        server.close()
        await server.wait_closed()


async def test_read_bundle_is_follow_without_a_server(gateway: FhirGateway) -> None:
    for bundle in (page([obs(1), obs(2)]), page([obs(1)], f"{BASE}?_getpages=x"), {"resourceType": "Bundle"}):
        assert gateway.read_bundle(bundle) == await gateway.follow(None, bundle)


async def test_read_bundle_keeps_the_resource_bound() -> None:
    gw = FhirGateway(GatewayLimits(max_resources=2))
    try:
        result = gw.read_bundle(page([obs(1), obs(2), obs(3)]))
    finally:
        await gw.aclose()
    assert [r["id"] for r in result.resources] == ["o1", "o2"]
    assert result.truncated


def test_bundle_resources_copies_other_mappings_into_dicts() -> None:
    resource = MappingProxyType(
        {**obs(1), "subject": MappingProxyType({"reference": "Patient/p1"}), "note": ({"a": 1},)}
    )
    found = bundle_resources({"entry": [MappingProxyType({"resource": resource})]})
    assert found == [{**obs(1), "subject": {"reference": "Patient/p1"}, "note": [{"a": 1}]}]
    assert type(found[0]) is dict
    assert type(found[0]["subject"]) is dict


def test_bundle_resources_returns_prefetched_dicts_without_copying() -> None:
    resource = obs(1)
    assert bundle_resources(page([resource]))[0] is resource
