"""The FHIR server allow-list: a fhirServer off the list is refused before a single connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from cds.errors import FhirError, FhirServerNotAllowed
from cds.fhir.gateway import FhirGateway, GatewayLimits
from cds.fhir.urls import UrlAllowList, UrlError, parse_url
from tests.security.builders import (
    FHIR,
    PID,
    SERVICE,
    app_client,
    assert_outcome,
    base_settings,
    full_prefetch,
    hook_request,
    patient,
    searchset,
    sle_condition,
)


class RecordingTransport(httpx.AsyncBaseTransport):
    """Records every request the service tries to send; answers like a small FHIR server."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.handler = handler or fhir_answer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


def fhir_answer(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path.endswith(f"/Patient/{PID}"):
        return httpx.Response(200, json=patient())
    if path.endswith("/Condition"):
        return httpx.Response(200, json=searchset([sle_condition()]))
    if path.rsplit("/", 1)[-1][:1].isupper():
        return httpx.Response(200, json=searchset())
    return httpx.Response(404)


OFF_LIST = [
    "https://ehr.test/fhir-evil",
    "https://ehr.test/fhirx",
    "https://ehr.test/fhir.evil",
    "https://ehr.test.evil.com/fhir",
    "https://evil.com/fhir",
    "https://evil.com/ehr.test/fhir",
    "https://ehr.test:8443/fhir",
    "https://ehr.test:80/fhir",
    "http://ehr.test/fhir",
    "https://ehr.test",
    "https://ehr.test/",
    "https://ehr.test/other/fhir",
    "https://ehr.test@evil.com/fhir",
    "https://evil.com@ehr.test/fhir",
    "https://user:pw@ehr.test/fhir",
    "https://ehr.test/fhir/../admin",
    "https://ehr.test/fhir/./../admin",
    "https://ehr.test/fhir/%2e%2e/admin",
    "https://ehr.test/fhir%2f..%2fadmin",
    "https://ehr.test/fhir/%5c..%5cadmin",
    "https://ehr.test\\@evil.com/fhir",
    "https://ehr.test%2eevil.com/fhir",
    "https://ehr.test#@evil.com/fhir",
    "https://ehr.test?@evil.com/fhir",
    "https://ehr.test/fhir?x=1",
    "https://ehr.test/fhir#frag",
    " https://ehr.test/fhir",
    "https://ehr.test/fhir\n",
    "https://ehr.test/fhir\t",
    "https://ehr.tést/fhir",
    "https://[::1]/fhir",
    "https://127.0.0.1/fhir",
    "https://localhost/fhir",
    "file:///etc/passwd",
    "gopher://ehr.test/fhir",
    "//ehr.test/fhir",
    "ehr.test/fhir",
    "https:/ehr.test/fhir",
]

ALLOWED_SPELLINGS = [
    "https://ehr.test/fhir",
    "https://ehr.test/fhir/",
    "https://EHR.TEST/fhir",
    "https://ehr.test:443/fhir",
    "https://ehr.test./fhir",
]


@pytest.fixture
def transport() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
async def client(tmp_path: Path, transport: RecordingTransport) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(base_settings(tmp_path), fhir_transport=transport) as c:
        yield c


def test_off_list_catalogue_size() -> None:
    assert len(OFF_LIST) >= 35


@pytest.mark.parametrize("server", OFF_LIST)
@pytest.mark.parametrize("prefetched", [False, True], ids=["no-prefetch", "full-prefetch"])
async def test_off_list_fhir_server_is_refused_without_any_request(
    client: httpx.AsyncClient, transport: RecordingTransport, server: str, prefetched: bool
) -> None:
    body = hook_request(full_prefetch() if prefetched else None, fhir_server=server)
    response = await client.post(SERVICE, json=body)
    outcome = assert_outcome(response, 400)
    assert outcome["issue"][0]["code"] in ("forbidden", "invalid")
    assert "evil" not in response.text, "the URL is not echoed"
    assert "passwd" not in response.text
    assert transport.requests == [], "not a single request may leave for a server off the allow-list"


@pytest.mark.parametrize("server", ALLOWED_SPELLINGS)
async def test_allowed_server_spellings_are_fetched_at_the_canonical_url(
    client: httpx.AsyncClient, transport: RecordingTransport, server: str
) -> None:
    response = await client.post(SERVICE, json=hook_request(None, fhir_server=server))
    assert response.status_code == 200, response.text
    assert transport.requests
    assert {(r.url.scheme, r.url.host, r.url.port) for r in transport.requests} == {("https", "ehr.test", None)}
    assert all(r.url.path.startswith("/fhir/") for r in transport.requests)


@pytest.mark.parametrize(
    "server",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://0xA9FEA9FE/fhir",
        "http://2852039166/fhir",
        "http://0251.0376.0251.0376/fhir",
        "http://[::ffff:169.254.169.254]/fhir",
        "http://10.0.0.6/fhir",
        "http://10.0.0.5:8080/fhir",
        "http://10.0.0.5.evil.com/fhir",
        "http://1.2.3.4.5/fhir",
        "http://10.0.0.256/fhir",
        "http://[fe80::1%25eth0]/fhir",
    ],
)
async def test_ip_literal_tricks_are_compared_after_parsing(
    tmp_path: Path, transport: RecordingTransport, server: str
) -> None:
    settings = base_settings(tmp_path, fhir_allowed_servers=["http://10.0.0.5/fhir"])
    async with app_client(settings, fhir_transport=transport) as client:
        response = await client.post(SERVICE, json=hook_request(None, fhir_server=server))
    assert_outcome(response, 400)
    assert transport.requests == []


@pytest.mark.parametrize(
    "server",
    ["http://0x0a.0.0.5/fhir", "http://167772165/fhir", "http://012.0.0.05/fhir", "http://[::ffff:10.0.0.5]/fhir"],
)
async def test_other_spellings_of_an_allowed_ip_go_to_the_canonical_address(
    tmp_path: Path, transport: RecordingTransport, server: str
) -> None:
    settings = base_settings(tmp_path, fhir_allowed_servers=["http://10.0.0.5/fhir"])
    async with app_client(settings, fhir_transport=transport) as client:
        response = await client.post(SERVICE, json=hook_request(None, fhir_server=server))
    assert response.status_code == 200, response.text
    assert {r.url.host for r in transport.requests} == {"10.0.0.5"}


class ConnectionCounter:
    """A real TCP listener that counts connections and answers 503 to anything."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 1.0)
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_no_tcp_connection_is_opened_to_a_refused_server(tmp_path: Path) -> None:
    counter = ConnectionCounter()
    async with counter as port:
        allowed = f"http://127.0.0.1:{port}/fhir"
        settings = base_settings(tmp_path, fhir_allowed_servers=[allowed])
        async with app_client(settings) as client:  # the real transport: real sockets
            for server in (
                f"http://127.0.0.1:{port}/fhir-evil",
                f"http://localhost:{port}/fhir",
                f"http://2130706433:{port}/fhir-evil",
                f"http://127.0.0.1:{port}/",
                f"http://x@127.0.0.1:{port}/fhir",
            ):
                response = await client.post(SERVICE, json=hook_request(None, fhir_server=server))
                assert_outcome(response, 400)
            assert counter.connections == 0
            # control: the allowed base is reached (so the counter does count)
            response = await client.post(SERVICE, json=hook_request(None, fhir_server=allowed))
            assert_outcome(response, 412, "transient")
            assert counter.connections >= 1


async def test_redirects_are_not_followed(tmp_path: Path) -> None:
    def redirect(request: httpx.Request) -> httpx.Response:
        if request.url.host == "ehr.test":
            return httpx.Response(302, headers={"Location": "http://evil.test/steal"})
        return httpx.Response(200, json=searchset([sle_condition()]))

    transport = RecordingTransport(redirect)
    prefetch = full_prefetch()
    del prefetch["conditions"]
    async with app_client(base_settings(tmp_path), fhir_transport=transport) as client:
        response = await client.post(SERVICE, json=hook_request(prefetch))
    body = assert_outcome(response, 412, "processing")
    assert "redirect" in body["issue"][0]["diagnostics"]
    assert [r.url.host for r in transport.requests] == ["ehr.test"]


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.test/fhir?page=2",
        f"https://evil.test/steal?from={FHIR}",
        "https://ehr.test/fhir-evil?page=2",
        "https://ehr.test/fhir/../admin?page=2",
        "https://ehr.test:8443/fhir?page=2",
        "http://ehr.test/fhir?page=2",
        "//evil.test/fhir?page=2",
        "../admin?page=2",
        "https://user@ehr.test/fhir?page=2",
    ],
)
async def test_next_links_off_the_base_are_not_followed(tmp_path: Path, next_url: str) -> None:
    transport = RecordingTransport()
    prefetch = full_prefetch()
    prefetch["procedures"] = searchset([], next_url=next_url)
    async with app_client(base_settings(tmp_path), fhir_transport=transport) as client:
        response = await client.post(SERVICE, json=hook_request(prefetch))
    assert response.status_code == 200, response.text
    assert transport.requests == []
    assert "data incomplete" in response.json()["cards"][0]["summary"]


async def test_empty_allow_list_never_fetches(tmp_path: Path, transport: RecordingTransport) -> None:
    settings = base_settings(tmp_path, fhir_allowed_servers=[])
    async with app_client(settings, fhir_transport=transport) as client:
        ok = await client.post(SERVICE, json=hook_request(full_prefetch()))
        assert ok.status_code == 200, "prefetch-only works with fetching off"
        missing = await client.post(SERVICE, json=hook_request(None))
        body = assert_outcome(missing, 412, "processing")
        assert "not configured to fetch" in body["issue"][0]["diagnostics"]
        prefetch = full_prefetch()
        del prefetch["observations"]
        partial = await client.post(SERVICE, json=hook_request(prefetch))
        assert "data incomplete" in partial.json()["cards"][0]["summary"]
    assert transport.requests == []


async def test_star_allows_any_clean_server_but_still_refuses_tricks(
    tmp_path: Path, transport: RecordingTransport
) -> None:
    settings = base_settings(tmp_path, fhir_allowed_servers=["*"])
    async with app_client(settings, fhir_transport=transport) as client:
        assert (
            await client.post(SERVICE, json=hook_request(None, fhir_server="https://any.test/r4"))
        ).status_code == 200
        for server in ("https://a@any.test/r4", "https://any.test/r4/../x", "ftp://any.test/r4"):
            assert_outcome(await client.post(SERVICE, json=hook_request(None, fhir_server=server)), 400)
    assert {r.url.host for r in transport.requests} == {"any.test"}


@pytest.mark.parametrize("pid", ["..", ".", "...", "a/b", "a%2fb", "a\nb", "x" * 65, ""])
async def test_patient_ids_that_could_become_paths_are_refused(
    client: httpx.AsyncClient, transport: RecordingTransport, pid: str
) -> None:
    assert_outcome(await client.post(SERVICE, json=hook_request(None, pid=pid)), 400, "invalid")
    assert transport.requests == []


async def test_gateway_refuses_unlisted_bases_and_paths_outside_its_base() -> None:
    gateway = FhirGateway(GatewayLimits(), transport=RecordingTransport(), allowed=UrlAllowList([FHIR]))
    try:
        for server in ("https://ehr.test/fhir-evil", "https://evil.test/fhir", "https://u@ehr.test/fhir"):
            with pytest.raises(FhirServerNotAllowed):
                gateway.client(server)
        client = gateway.client(FHIR + "/")
        assert client.url == FHIR
        for path in ("Patient/..", "../admin", "https://evil.test/fhir/Patient", f"https://evil.test/?x={FHIR}"):
            with pytest.raises(FhirError):
                client.request_url(path)
        assert client.request_url("Patient/p1") == FHIR + "/Patient/p1"
        with pytest.raises(FhirError):
            await gateway.read(client, "Patient", "..")
    finally:
        await gateway.aclose()


@pytest.mark.parametrize(
    ("base", "url", "covered"),
    [
        ("https://ehr/fhir", "https://ehr/fhir", True),
        ("https://ehr/fhir", "https://ehr/fhir/Patient/1", True),
        ("https://ehr/fhir", "https://ehr/fhir-evil", False),
        ("https://ehr/fhir", "https://ehr.evil.com/fhir", False),
        ("https://ehr/fhir", "https://ehr:443/fhir/x", True),
        ("http://ehr/fhir", "http://ehr:80/fhir", True),
        ("http://ehr/fhir", "http://ehr:8080/fhir", False),
        ("https://ehr", "https://ehr/anything", True),
        ("https://ehr/a/b", "https://ehr/a", False),
    ],
)
def test_covers_is_a_segment_prefix_on_the_same_origin(base: str, url: str, covered: bool) -> None:
    assert parse_url(base).covers(parse_url(url)) is covered


def test_allow_list_entries_are_validated() -> None:
    for bad in ("https://u@ehr/fhir", "ftp://ehr/fhir", "https://ehr/fhir/../x", "not a url"):
        with pytest.raises(ValueError, match="invalid allow-list entry"):
            UrlAllowList([bad])
    with pytest.raises(UrlError):
        parse_url("https://ehr/fhir?x", allow_query=False)
