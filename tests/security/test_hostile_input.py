"""Hostile and broken input: a clear 4xx with an OperationOutcome, or a card from valid data only."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from markdown_it import MarkdownIt

from cards.codes import REPORT_EXTENSION_KEY
from cards.markdown import TERMINOLOGY_SYSTEMS
from cds.config import Settings
from cds.service.app import create_app
from cds.service.logs import JsonFormatter
from tests.security.builders import (
    PID,
    SERVICE,
    app_client,
    assert_outcome,
    base_settings,
    full_prefetch,
    hook_request,
    observation,
    patient,
    searchset,
    sle_condition,
)
from tests.security.test_ssrf_allow_list import RecordingTransport

LIMIT = 200_000


def terminology_link(href: str) -> bool:
    """True if a rendered link can only lead to a terminology's own host: it starts with one of the
    code system URIs (a linkifier may have swallowed a ``|code`` or punctuation after it) and its
    authority, read as a browser would, is that host - no ``user@`` part, no other host."""
    for system in TERMINOLOGY_SYSTEMS:
        if href.startswith(system):
            authority = re.split(r"[/?#\\]", href.split("://", 1)[1])[0]
            host = system.split("://", 1)[1].split("/", 1)[0]
            if "@" not in authority and "%40" not in authority.lower():
                return authority == host or authority.startswith(host + "%")
    return False


def gfm() -> MarkdownIt:
    """markdown-it configured like GitHub-flavoured markdown: tables, strike-through and extended
    autolinks (``www.``, ``http(s)://``, e-mail; not linkify-it's "fuzzy" bare domains, which GFM lacks)."""
    md = MarkdownIt("gfm-like")
    md.linkify.set({"fuzzy_link": False})
    return md


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return base_settings(tmp_path, max_request_bytes=LIMIT, request_read_timeout=1.0, fhir_allowed_servers=[])


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings) as c:
        yield c


# ---------------------------------------------------------------- raw ASGI, to control the body stream

Receive = Callable[[], Awaitable[dict[str, Any]]]


async def asgi_post(app: FastAPI, receive: Receive, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": SERVICE,
        "raw_path": SERVICE.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"cds.test"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("cds.test", 80),
    }
    status = 0
    body = b""

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")

    await app(scope, receive, send)
    return status, body


class EndlessBody:
    """A request body that never ends (1 KiB chunks), counting what the service pulled."""

    def __init__(self, delay: float = 0.0, first: bytes = b'{"hook": "patient-view", "x": "') -> None:
        self.pulled = 0
        self.delay = delay
        self.first = first

    async def __call__(self) -> dict[str, Any]:
        self.pulled += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        chunk = self.first if self.pulled == 1 else b"a" * 1024
        return {"type": "http.request", "body": chunk, "more_body": True}


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.mark.parametrize("declared", [None, b"100", b"1000000000000", b"-5", b"abc"])
async def test_endless_body_is_cut_off_while_reading_whatever_content_length_says(
    app: FastAPI, declared: bytes | None
) -> None:
    body = EndlessBody()
    headers = [(b"content-length", declared)] if declared is not None else [(b"transfer-encoding", b"chunked")]
    status, raw = await asyncio.wait_for(asgi_post(app, body, headers), 10)
    assert status == 400
    assert json.loads(raw)["resourceType"] == "OperationOutcome"
    assert body.pulled <= LIMIT // 1024 + 2, "the body must be counted as it arrives, not buffered unbounded"


async def test_trickled_body_times_out_with_400(app: FastAPI) -> None:
    body = EndlessBody(delay=0.2)
    started = time.perf_counter()
    status, raw = await asyncio.wait_for(asgi_post(app, body, [(b"content-length", b"5000")]), 10)
    assert status == 400
    assert "not received in time" in json.loads(raw)["issue"][0]["diagnostics"]
    assert time.perf_counter() - started < 2.5


async def test_client_disconnect_mid_body_is_not_a_500(app: FastAPI) -> None:
    messages = iter([{"type": "http.request", "body": b'{"hook"', "more_body": True}, {"type": "http.disconnect"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    status, _ = await asyncio.wait_for(asgi_post(app, receive, []), 10)
    assert status != 500


async def test_oversized_body_with_honest_length_is_400(client: httpx.AsyncClient) -> None:
    body = json.dumps(hook_request({"patient": patient(), "pad": "x" * LIMIT})).encode()
    response = await client.post(SERVICE, content=body, headers={"Content-Type": "application/json"})
    assert "larger than" in assert_outcome(response, 400, "invalid")["issue"][0]["diagnostics"]


# ---------------------------------------------------------------- JSON bombs and odd encodings


def _nested(depth: int) -> bytes:
    return (
        b'{"hook": "patient-view", "context": {"patientId": "p"}, "prefetch": {"x": '
        + b"[" * depth
        + b"]" * depth
        + b"}}"
    )


@pytest.mark.parametrize("depth", [70, 500, 990, 5_000, 150_000])
async def test_deeply_nested_json_is_400_not_a_crash(client: httpx.AsyncClient, depth: int) -> None:
    response = await client.post(SERVICE, content=_nested(depth), headers={"Content-Type": "application/json"})
    assert_outcome(response, 400, "invalid")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"hook": NaN}',
        b'{"hook": "patient-view", "x": Infinity}',
        b'{"hook": "patient-view", "x": -Infinity}',
        b'{"hook": "patient-view", "x": 1e999}',
        b'{"hook": "patient-view", "x": ' + b"9" * 5000 + b"}",
        b'{"hook": "patient-view", "context": {"patientId": "\\ud800"}}',
        b'{"hook": "patient-view", "x": "\\udfff"}',
        b'{"hook": "patient-view", "\\ud83d": 1}',
        b'{"hook": "patient-view", "x": "\xed\xa0\x80"}',
        b'{"hook": "patient-view", "x": "\xff\xfe"}',
        b"\xff\xfe{\x00}\x00",
        b'{"hook": "patient-view"',
        b'{"hook": "patient-view"}}',
        b"\x00" * 100,
        b"null",
        b"12",
        b'"a string"',
        b"[{}]",
        b'{"hook": "patient-view", "context": {"patientId": "p"}, "prefetch": {"patient": {"resourceType": "Patient", "id": "p", "birthDate": "\\u0000"}}}',
    ],
)
async def test_odd_json_is_a_clean_4xx(client: httpx.AsyncClient, raw: bytes) -> None:
    response = await client.post(SERVICE, content=raw, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_utf8_bom_and_surrogate_pairs_are_fine(client: httpx.AsyncClient) -> None:
    body = hook_request(full_prefetch(), fhir_server=None)
    body["extension"] = {"emoji": "😀 \\ud83d\\ude00"}
    raw = b"\xef\xbb\xbf" + json.dumps(body).encode()
    response = await client.post(SERVICE, content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------- wrong types everywhere

WRONG_VALUES: list[Any] = [None, 0, -1, 1.5, True, "", "x", [], [1], {}, {"a": 1}, "x" * 10_000]

FIELDS: list[tuple[str, ...]] = [
    ("hook",),
    ("hookInstance",),
    ("fhirServer",),
    ("fhirAuthorization",),
    ("fhirAuthorization", "access_token"),
    ("fhirAuthorization", "token_type"),
    ("fhirAuthorization", "expires_in"),
    ("fhirAuthorization", "scope"),
    ("context",),
    ("context", "patientId"),
    ("context", "userId"),
    ("context", "encounterId"),
    ("prefetch",),
    ("prefetch", "patient"),
    ("prefetch", "conditions"),
    ("prefetch", "observations"),
    ("prefetch", "conditions", "entry"),
    ("prefetch", "conditions", "link"),
    ("prefetch", "patient", "birthDate"),
    ("prefetch", "patient", "id"),
    ("prefetch", "patient", "gender"),
    ("prefetch", "patient", "deceasedBoolean"),
    ("extension",),
]


def _set(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    node: Any = body
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node
    if isinstance(node, dict):
        node[path[-1]] = value
    return body


@pytest.mark.parametrize("path", FIELDS, ids=".".join)
async def test_wrong_types_in_every_field_never_give_a_500(client: httpx.AsyncClient, path: tuple[str, ...]) -> None:
    statuses = set()
    for value in WRONG_VALUES:
        body = _set(hook_request(full_prefetch(), fhir_server=None, token="t"), path, value)
        response = await client.post(SERVICE, json=body)
        statuses.add(response.status_code)
        assert response.status_code in (200, 400, 412), (value, response.text)
        payload = response.json()
        if response.status_code == 200:
            assert isinstance(payload["cards"], list)
        else:
            assert payload["resourceType"] == "OperationOutcome"
            assert "x" * 100 not in response.text, "values are not echoed"
    assert statuses, path


# ---------------------------------------------------------------- prefetch that does not fit its key


def _hook_log(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    records = [r for r in caplog.records if getattr(r, "event", None) == "hook"]
    assert records
    return json.loads(JsonFormatter().format(records[-1]))


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("conditions", searchset([observation()]), "wrong-type"),
        ("conditions", searchset([sle_condition(pid="someone-else")]), "other-patient"),
        ("conditions", searchset([{**sle_condition(), "subject": None}]), "other-patient"),
        ("conditions", {**searchset([sle_condition()]), "entry": ["junk", {"fullUrl": "x"}]}, "malformed-entries"),
        ("conditions", {**searchset([sle_condition()]), "entry": "junk"}, "malformed-entries"),
        ("patient", patient(pid="someone-else"), "other-patient"),
        ("patient", {k: v for k, v in patient().items() if k != "id"}, "other-patient"),
        ("observations", searchset([sle_condition()]), "wrong-type"),
        ("medicationRequests", searchset([observation()]), "wrong-type"),
    ],
)
async def test_prefetch_that_does_not_fit_its_key_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, key: str, value: Any, reason: str
) -> None:
    caplog.set_level(logging.INFO, logger="cds")
    prefetch = full_prefetch()
    prefetch[key] = value
    # no FHIR server to fall back on: required data -> 412, optional -> incomplete; never a card built from it
    async with app_client(base_settings(tmp_path, fhir_allowed_servers=[])) as client:
        response = await client.post(SERVICE, json=hook_request(prefetch, fhir_server=None))
    if key in ("patient", "conditions"):
        body = assert_outcome(response, 412, "processing")
        assert "not usable" in body["issue"][0]["diagnostics"]
    else:
        assert response.status_code == 200, response.text
        card = response.json()["cards"][0]
        assert "data incomplete" in card["summary"]
        report = card["extension"][REPORT_EXTENSION_KEY]
        assert report["incomplete"]
    logged = _hook_log(caplog)
    assert logged["prefetchRejected"] == {key: reason}
    text = json.dumps(logged)
    for secret in (PID, "someone-else", "Quuxworth", "1990-04-01"):
        assert secret not in text


async def test_unfit_prefetch_is_refetched_from_the_fhir_server(tmp_path: Path) -> None:
    transport = RecordingTransport()
    prefetch = full_prefetch()
    prefetch["conditions"] = searchset([observation()])
    async with app_client(base_settings(tmp_path), fhir_transport=transport) as client:
        response = await client.post(SERVICE, json=hook_request(prefetch))
    assert response.status_code == 200, response.text
    assert [r.url.path for r in transport.requests] == ["/fhir/Condition"]
    report = response.json()["cards"][0]["extension"][REPORT_EXTENSION_KEY]
    assert "Observation/obs-1" not in json.dumps(report), "the misplaced record is not used as evidence"


async def test_fhir_server_returning_another_patient_is_a_fhir_error(tmp_path: Path) -> None:
    def other(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=searchset([sle_condition(pid="someone-else")]))

    prefetch = full_prefetch()
    del prefetch["conditions"]
    async with app_client(base_settings(tmp_path), fhir_transport=RecordingTransport(other)) as client:
        response = await client.post(SERVICE, json=hook_request(prefetch))
    assert "do not fit" in assert_outcome(response, 412, "structure")["issue"][0]["diagnostics"]


async def test_invalid_fhir_records_are_dropped_and_the_exclusion_they_cause_is_shown(
    client: httpx.AsyncClient,
) -> None:
    prefetch = full_prefetch()
    broken = sle_condition()
    broken["onsetDateTime"] = "not a date"
    broken["clinicalStatus"] = "active"  # wrong type for a CodeableConcept
    prefetch["conditions"] = searchset([broken])
    response = await client.post(SERVICE, json=hook_request(prefetch, fhir_server=None))
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert len(cards) == 1, "an exclusion caused by an unusable record is not silent"
    card = cards[0]
    assert card["summary"].startswith("Not a candidate on the data read — data incomplete")
    assert "could not be used" in card["detail"]
    report = card["extension"][REPORT_EXTENSION_KEY]
    assert report["dataIssues"][0]["reference"] == "Condition/cond-sle"
    sle = next(c for c in report["criteria"] if c["id"] == "inc-sle-diagnosis")
    assert all("cond-sle" not in e["reference"] for e in sle["evidence"]), "never evidence"


async def test_exclusion_on_complete_data_stays_silent_despite_other_invalid_records(client: httpx.AsyncClient) -> None:
    prefetch = full_prefetch(birth="1940-01-01")  # 86: excluded by age (Patient is complete)
    broken = observation()
    broken["status"] = 42
    prefetch["observations"] = searchset([broken])
    response = await client.post(SERVICE, json=hook_request(prefetch, fhir_server=None))
    assert response.status_code == 200
    assert response.json() == {"cards": []}


# ---------------------------------------------------------------- markdown injection into the card

HOSTILE_TEXTS = [
    "[click me](javascript:alert(document.cookie))",
    "![img](https://evil.example/pixel.png)",
    "<script>alert(1)</script><img src=x onerror=alert(1)>",
    "<a href='https://evil.example'>lupus</a>",
    "`code` ```fence``` ~~strike~~ **bold** _em_",
    "cell|break | --- | injected |",
    "line one\n\n# Heading\n> quote\n- item\n\n| a | b |\n|---|---|\n| c | d |",
    "Lupus \u202egnirts desrever\u202c \u2066isolate\u2069",
    "zero\u200bwidth\u200cjoin\u200d\ufeff\u2060",
    "visit https://evil.example/login or www.evil.example or mail phish@evil.example",
    "http://snomed.info/sct.evil.example/x http://loinc.org/../phish http://snomed.info/sct@evil.example",
    "http://loinc.org|x@evil.example/path (http://snomed.info/sct|@evil.example) http://loinc.org|:pw@evil.example",
    "&lt;script&gt; &#x6a;avascript: \\[escaped\\]",
    "tab\there\rcarriage\x0bvt\x0cff\x1cfs\u2028ls\u2029ps\x85nel",
    "\x00\x07\x1b[31mansi\x7f\x9b",
    "tag\U000e0041\U000e0042chars",
]


async def test_hostile_strings_cannot_inject_markdown_html_or_links(client: httpx.AsyncClient) -> None:
    md = gfm()
    for text in HOSTILE_TEXTS:
        prefetch = full_prefetch()
        prefetch["conditions"] = searchset([sle_condition(text=text)])
        response = await client.post(SERVICE, json=hook_request(prefetch, fhir_server=None))
        assert response.status_code == 200, response.text
        card = response.json()["cards"][0]
        detail = card["detail"]
        html = md.render(detail)
        hrefs = re.findall(r'<a href="([^"]*)"', html)
        assert all(terminology_link(h) for h in hrefs), (text, hrefs)  # only the code systems' own URIs
        assert html.count("<a ") == len(hrefs)
        for tag in ("<img", "<script", "<h1", "<blockquote", "<code", "<del", "<strong>b", "<em>e", "<ol", "<table"):
            assert tag not in html, (text, tag)
        lines = detail.split("\n\n", 1)[1].splitlines()  # the verdict line, then the bullets
        assert all(line.startswith("- **") for line in lines), "no line was split or added"
        assert html.count("<li>") == len(lines)
        assert card["extension"][REPORT_EXTENSION_KEY]["criteria"]
        for ch in "\u202e\u202c\u2066\u2069\u200b\u200c\u200d\ufeff\u2060\x00\x07\x1b\x7f\x9b\U000e0041":
            assert ch not in detail, (text, repr(ch))
        assert "Systemic lupus erythematosus" not in card["summary"], "no data in the summary"
