"""The Bulk Data client at the transport (respx): kick-off, polling, download and every fault."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import respx

from cds.errors import FhirError
from cds.population.bulk import (
    BulkExportClient,
    ExportRequest,
    PollPolicy,
    operation_outcome_texts,
    retry_after_seconds,
)

BASE = "http://fhir.test/fhir"
STATUS = f"{BASE}/$export-poll-status?_jobId=j1"


def capability(*, system_export: bool = True, group_export: bool = True) -> dict[str, object]:
    ops = [{"name": "export", "definition": f"{BASE}/OperationDefinition/export"}] if system_export else []
    group_ops = [{"name": "export", "definition": f"{BASE}/OperationDefinition/group-export"}] if group_export else []
    return {
        "resourceType": "CapabilityStatement",
        "rest": [{"mode": "server", "operation": ops, "resource": [{"type": "Group", "operation": group_ops}]}],
    }


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(clock: Clock) -> BulkExportClient:
    policy = PollPolicy(initial=1.0, factor=2.0, max_interval=8.0, timeout=100.0, sleep=clock.sleep, clock=clock)
    return BulkExportClient(BASE, httpx.Client(), max_file_bytes=1000, poll=policy)


REQUEST = ExportRequest(types=("Patient", "Observation"), type_filters=("Observation?code=http://loinc.org|1-8,x|2",))


@respx.mock
def test_kick_off_sends_async_ndjson_types_and_one_type_filter_per_query(client: BulkExportClient) -> None:
    route = respx.get(f"{BASE}/$export").mock(return_value=httpx.Response(202, headers={"Content-Location": STATUS}))
    assert client.kick_off(REQUEST) == STATUS
    sent = route.calls.last.request
    assert sent.headers["Prefer"] == "respond-async"
    assert sent.url.params["_outputFormat"] == "application/fhir+ndjson"
    assert sent.url.params["_type"] == "Patient,Observation"
    assert sent.url.params.get_list("_typeFilter") == ["Observation?code=http://loinc.org|1-8,x|2"]


@respx.mock
def test_group_kick_off_goes_to_the_group_and_relative_status_url_is_resolved(client: BulkExportClient) -> None:
    respx.get(f"{BASE}/Group/g1/$export").mock(
        return_value=httpx.Response(202, headers={"Content-Location": "$export-poll-status?_jobId=j1"})
    )
    assert client.kick_off(ExportRequest(types=("Patient",), group="g1")) == STATUS


@pytest.mark.parametrize("status", [404, 405, 501])
@respx.mock
def test_kick_off_on_a_server_without_export_names_the_missing_capability(
    client: BulkExportClient, status: int
) -> None:
    respx.get(f"{BASE}/$export").mock(return_value=httpx.Response(status))
    with pytest.raises(FhirError, match=r"does not support FHIR Bulk Data export: no system-level"):
        client.kick_off(REQUEST)


@respx.mock
def test_kick_off_refused_quotes_the_operation_outcome(client: BulkExportClient) -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": "bad _type"}]}
    respx.get(f"{BASE}/$export").mock(return_value=httpx.Response(400, json=outcome))
    with pytest.raises(FhirError, match="HTTP 400: error: bad _type"):
        client.kick_off(REQUEST)


def test_capability_statement_without_export_names_the_missing_capability(client: BulkExportClient) -> None:
    with pytest.raises(FhirError, match=r"no system-level `\[base\]/\$export`"):
        client.export_operation(capability(system_export=False), REQUEST)
    with pytest.raises(FhirError, match=r"no Group-level `\[base\]/Group/g/\$export`"):
        client.export_operation(capability(group_export=False), ExportRequest(types=("Patient",), group="g"))
    assert client.export_operation(capability(), REQUEST)["name"] == "export"


@respx.mock
def test_type_filter_support_is_read_from_the_operation_definition(client: BulkExportClient) -> None:
    op = client.export_operation(capability(), REQUEST)
    route = respx.get(f"{BASE}/OperationDefinition/export")
    route.mock(return_value=httpx.Response(200, json={"parameter": [{"name": "_type", "use": "in"}]}))
    assert client.supports_type_filter(op) is False
    route.mock(return_value=httpx.Response(200, json={"parameter": [{"name": "_typeFilter", "use": "in"}]}))
    assert client.supports_type_filter(op) is True


def test_type_filter_support_is_never_asked_of_another_host(client: BulkExportClient) -> None:
    # respx is not active: any request would fail the test with a connection error
    assert client.supports_type_filter({"definition": "http://elsewhere.test/OperationDefinition/export"}) is False


MANIFEST = {
    "transactionTime": "2026-11-01T00:00:00Z",
    "request": f"{BASE}/$export",
    "requiresAccessToken": False,
    "output": [{"type": "Patient", "url": f"{BASE}/Binary/p1", "count": 2}],
    "error": [{"type": "OperationOutcome", "url": f"{BASE}/Binary/e1"}],
}


@respx.mock
def test_poll_backs_off_honours_retry_after_and_reports_x_progress(client: BulkExportClient, clock: Clock) -> None:
    respx.get(STATUS).mock(
        side_effect=[
            httpx.Response(202, headers={"X-Progress": "10% done"}),
            httpx.Response(202),
            httpx.Response(202, headers={"Retry-After": "5"}),
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(200, json=MANIFEST),
        ]
    )
    seen: list[str | None] = []
    manifest = client.wait(STATUS, on_progress=lambda p: seen.append(p.text))
    assert clock.sleeps == [1.0, 2.0, 5.0, 3.0]
    assert seen == ["10% done", None, None, None]
    assert [e.url for e in manifest.output] == [f"{BASE}/Binary/p1"]
    assert manifest.output[0].count == 2
    assert [e.type for e in manifest.error] == ["OperationOutcome"]


@respx.mock
def test_hapis_202_retry_after_of_120_s_no_longer_holds_every_export_for_two_minutes(
    client: BulkExportClient, clock: Clock
) -> None:
    """HAPI answers every 202 with Retry-After: 120, even when its job ends 20 s later: an
    in-progress hint is capped at the backoff cap; a rate limit (429/503) is honoured up to 4 x."""
    respx.get(STATUS).mock(
        side_effect=[
            httpx.Response(202, headers={"Retry-After": "120"}),
            httpx.Response(503, headers={"Retry-After": "20"}),
            httpx.Response(429, headers={"Retry-After": "120"}),
            httpx.Response(200, json=MANIFEST),
        ]
    )
    client.wait(STATUS)
    assert clock.sleeps == [8.0, 20.0, 32.0]


@respx.mock
def test_poll_gives_up_after_the_timeout_keeping_the_status_url(client: BulkExportClient) -> None:
    respx.get(STATUS).mock(return_value=httpx.Response(202, headers={"Retry-After": "30"}))
    with pytest.raises(FhirError, match="not complete after 100 s"):
        client.wait(STATUS)


@respx.mock
def test_poll_error_status_is_a_failed_export(client: BulkExportClient) -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "diagnostics": "job failed"}]}
    respx.get(STATUS).mock(return_value=httpx.Response(500, json=outcome))
    with pytest.raises(FhirError, match="bulk export failed: HTTP 500: error: job failed"):
        client.wait(STATUS)


@respx.mock
def test_manifest_that_is_not_a_manifest_is_an_error(client: BulkExportClient) -> None:
    respx.get(STATUS).mock(return_value=httpx.Response(200, json={"output": "nope"}))
    with pytest.raises(FhirError, match="manifest `output` is not a list"):
        client.wait(STATUS)


@respx.mock
def test_download_streams_to_disk_and_refuses_oversized_files(client: BulkExportClient, tmp_path: Path) -> None:
    line = json.dumps({"resourceType": "Patient", "id": "p"}) + "\n"
    respx.get(f"{BASE}/Binary/small").mock(return_value=httpx.Response(200, content=line.encode() * 3))
    respx.get(f"{BASE}/Binary/big").mock(return_value=httpx.Response(200, content=b"x" * 5000))
    dest = tmp_path / "out.ndjson"
    assert client.download(f"{BASE}/Binary/small", dest) == len(line) * 3
    assert dest.read_text() == line * 3
    assert respx.calls.last.request.headers["Accept"] == "application/fhir+ndjson"
    big = tmp_path / "big.ndjson"
    with pytest.raises(FhirError, match="larger than 1000 bytes"):
        client.download(f"{BASE}/Binary/big", big)
    assert not big.exists()
    assert not big.with_name("big.ndjson.part").exists()


@respx.mock
def test_download_failure_leaves_no_file(client: BulkExportClient, tmp_path: Path) -> None:
    respx.get(f"{BASE}/Binary/gone").mock(return_value=httpx.Response(404))
    dest = tmp_path / "gone.ndjson"
    with pytest.raises(FhirError, match="could not be downloaded"):
        client.download(f"{BASE}/Binary/gone", dest)
    assert list(tmp_path.iterdir()) == []


def test_error_file_texts(tmp_path: Path) -> None:
    path = tmp_path / "errors.ndjson"
    oo = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "details": {"text": "Observation failed"}}],
    }
    path.write_text(json.dumps(oo) + "\n\nnot json\n")
    assert list(operation_outcome_texts(path)) == ["error: Observation failed", "an unreadable line in the error file"]


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds("Sun, 01 Nov 2026 12:00:10 GMT", now) == 10.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None
