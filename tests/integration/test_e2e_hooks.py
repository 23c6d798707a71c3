"""End to end against a real HAPI FHIR server: for every fixture patient, `cds screen` on the file, the
service with full prefetch and the service with no prefetch (fetching from HAPI) give the same report;
plus paging, a HAPI 400, and a FHIR server that disappears mid-run."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import time
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from cds.bundles import read_bundle_file
from cds.cli import screen
from cds.config import Settings
from cds.engine import evaluate
from cds.service.app import create_app
from cds.service.demo import build_request, load_bundle
from tests.fhir_json import without_uuids

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2] / "fixtures"
EXPECTED = json.loads((ROOT / "expected.json").read_text(encoding="utf-8"))
SERVICE_ID = "nct04582136-prescreen"
SERVICE = f"/cds-services/{SERVICE_ID}"
REPORT_KEY = "org.nct04582136-cds.report"


def _settings(tmp_path: Path, fhir: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path}/feedback.sqlite3",
        "as_of": date(2026, 11, 1),
        "show_excluded_card": True,  # every verdict gets a card carrying the full report
        "auth_required": False,  # JWT authentication is tested in tests/security
        "fhir_allowed_servers": [fhir],
        "fhir_timeout": 20.0,
        "fhir_deadline": 60.0,
        **overrides,
    }
    return Settings(**values)


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts the FHIR requests the service sends (by resource type and page)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.URL] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.url)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@contextlib.asynccontextmanager
async def _client(settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> AsyncIterator[Any]:
    app = create_app(settings, fhir_transport=transport)
    async with app.router.lifespan_context(app):
        asgi = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=asgi, base_url="http://cds.test", timeout=120) as client:
            yield client, app


async def _both(client: httpx.AsyncClient, pid: str, fhir: str) -> tuple[httpx.Response, httpx.Response]:
    with_prefetch = build_request(load_bundle(ROOT / "patients" / f"{pid}.json"), fhir_server=fhir)
    without = {k: v for k, v in with_prefetch.items() if k != "prefetch"}
    a = await client.post(SERVICE, json=with_prefetch)
    b = await client.post(SERVICE, json=without)
    return a, b


def _cli_reports(pid: str, as_of: date, searched: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`cds screen --format jsonl` on the fixture file, and the same engine call on the file with the
    data domains the hook searches declared searched."""
    path = ROOT / "patients" / f"{pid}.json"
    out, err = io.StringIO(), io.StringIO()
    assert screen([path], as_of, "jsonl", out, err) == 0, err.getvalue()
    (line,) = out.getvalue().splitlines()
    contents = read_bundle_file(path)
    (p,) = contents.patients
    report = evaluate(p.resources, patient_id=p.patient_id, as_of=as_of, searched=searched)
    return json.loads(line), report.to_json()


@pytest.mark.parametrize("pid", sorted(EXPECTED))
async def test_cli_http_with_prefetch_and_hapi_without_prefetch_agree_for_every_fixture(
    hapi_with_fixtures: str, tmp_path: Path, pid: str
) -> None:
    settings = _settings(tmp_path, hapi_with_fixtures)
    async with _client(settings) as (client, app):
        searched = frozenset(q.resource_type for q in app.state.cds.service(SERVICE_ID).queries)
        prefetched, fetched = await _both(client, pid, hapi_with_fixtures)
    assert prefetched.status_code == 200, prefetched.text
    assert fetched.status_code == 200, fetched.text
    a, b = prefetched.json()["cards"], fetched.json()["cards"]
    assert len(a) == len(b) == 1
    report = b[0]["extension"][REPORT_KEY]
    assert "incomplete" not in report, report.get("incomplete")
    assert "dataIssues" not in report
    assert report["verdict"] == EXPECTED[pid]["verdict"]
    assert without_uuids(b) == without_uuids(a)  # HTTP with prefetch == HAPI without prefetch

    assert settings.as_of is not None
    cli, file_as_searched = _cli_reports(pid, settings.as_of, searched)
    assert file_as_searched == report  # the engine on the file == the hook's report
    # `cds screen` reads a file's absent resource type as not searched (a file is not a search):
    # only criteria needing such a type may differ, and only towards "unknown" (data not available)
    absent = searched - read_bundle_file(ROOT / "patients" / f"{pid}.json").searched
    for mine, hooks in zip(cli["criteria"], report["criteria"], strict=True):
        if mine != hooks:
            assert absent, (mine, hooks)
            assert mine["status"] == "unknown", (mine, hooks)
            assert any(e["description"].startswith("data not available") for e in mine["evidence"]), mine
    if not absent:
        assert cli == report


async def test_paging_through_hapi_next_links(hapi_with_fixtures: str, tmp_path: Path) -> None:
    transport = CountingTransport()
    # 15 of real-active-sle's 493 Observations fall in the 30-day look-back the service queries;
    # pages of 4 make HAPI page them (4 pages, through its `next` links)
    settings = _settings(tmp_path, hapi_with_fixtures, fhir_page_size=4, fhir_max_pages=100, fhir_max_resources=10000)
    async with _client(settings, transport) as (client, _):
        prefetched, fetched = await _both(client, "real-active-sle", hapi_with_fixtures)
    assert fetched.status_code == 200, fetched.text
    observation_pages = [u for u in transport.requests if "_getpages" in str(u)]
    assert len(observation_pages) >= 3, "real-active-sle needs several pages of 4 Observations"
    # HAPI's next links point at its base URL; every page stayed on the allow-listed server
    assert all(str(u).startswith(hapi_with_fixtures) for u in transport.requests)
    assert without_uuids(fetched.json()["cards"]) == without_uuids(prefetched.json()["cards"])


async def test_hapi_400_for_a_bad_query_is_reported_not_an_empty_card_list(
    hapi_with_fixtures: str, tmp_path: Path
) -> None:
    async with _client(_settings(tmp_path, hapi_with_fixtures)) as (client, app):
        state = app.state.cds.service(SERVICE_ID)
        state.queries = tuple(
            dataclasses.replace(q, params=(*q.params, ("not-a-search-param", "x")))
            if q.resource_type in ("Observation", "Condition")
            else q
            for q in state.queries
        )
        request = build_request(load_bundle(ROOT / "patients" / "base-candidate.json"), fhir_server=hapi_with_fixtures)
        del request["prefetch"]
        response = await client.post(SERVICE, json=request)
    # Condition is required: HAPI's 400 (HAPI-0524 unknown parameter) makes the answer a 412
    assert response.status_code == 412, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "processing"


async def test_optional_type_failing_gives_a_card_marked_incomplete(hapi_with_fixtures: str, tmp_path: Path) -> None:
    async with _client(_settings(tmp_path, hapi_with_fixtures)) as (client, app):
        state = app.state.cds.service(SERVICE_ID)
        state.queries = tuple(
            dataclasses.replace(q, params=(*q.params, ("not-a-search-param", "x")))
            if q.resource_type == "Procedure"
            else q
            for q in state.queries
        )
        request = build_request(load_bundle(ROOT / "patients" / "base-candidate.json"), fhir_server=hapi_with_fixtures)
        del request["prefetch"]
        response = await client.post(SERVICE, json=request)
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    assert "incomplete" in card["summary"].lower()
    assert card["extension"][REPORT_KEY]["incomplete"] == ["Procedure"]


class _Proxy:
    """A loopback TCP proxy in front of HAPI that can be stopped, as HAPI stopping looks to a client."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]
        for task in (
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ):
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        for t in list(self.tasks):
            t.cancel()
        await self.server.wait_closed()


async def test_fhir_server_gone_mid_run_gives_412_within_budget(hapi_with_fixtures: str, tmp_path: Path) -> None:
    hapi_port = httpx.URL(hapi_with_fixtures).port
    assert hapi_port is not None
    proxy = _Proxy(hapi_port)
    port = await proxy.start()
    fhir = f"http://127.0.0.1:{port}/fhir"
    deadline = 2.0
    settings = _settings(tmp_path, fhir, fhir_timeout=1.5, fhir_deadline=deadline)
    request = build_request(load_bundle(ROOT / "patients" / "base-candidate.json"), fhir_server=fhir)
    del request["prefetch"]
    async with _client(settings) as (client, _):
        first = await client.post(SERVICE, json=request)
        assert first.status_code == 200, first.text  # pooled connections to the server now exist
        await proxy.stop()
        started = time.perf_counter()
        second = await client.post(SERVICE, json=request)
        elapsed = time.perf_counter() - started
    assert second.status_code == 412, second.text
    assert second.json()["resourceType"] == "OperationOutcome"
    assert elapsed < deadline + 1.0, f"answered in {elapsed:.2f} s"
