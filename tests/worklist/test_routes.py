"""The /worklist routes in-process: never anonymous, CSRF on every POST, cookie flags, status
changes with their audit entry, the CSV export, the report view and escaping of stored text."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cds.config import Settings
from cds.population.store import PopulationStore
from cds.service.app import create_app
from cds.worklist.auth import hash_password
from tests.worklist.builders import FHIR, NOW, REFERRED, TRIAL, db_url, run_info, seed

PASSWORD = "correct horse battery"
HASH = hash_password(PASSWORD)


def settings_for(tmp_path: Path, **extra: object) -> Settings:
    return Settings(
        database_url=db_url(tmp_path),
        auth_required=False,
        fhir_allowed_servers=[],
        worklist_users=[f"alice:{HASH}"],
        log_level="WARNING",
        **extra,  # type: ignore[arg-type]
    )


async def _client(settings: Settings, base_url: str = "http://cds.test") -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, clock=NOW.timestamp)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    seed(db_url(tmp_path))
    async for c in _client(settings_for(tmp_path)):
        yield c


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
    form = await client.get("/worklist/login")
    return await client.post(
        "/worklist/login", data={"user": "alice", "password": password, "csrf": csrf_of(form.text)}
    )


@pytest.mark.parametrize("path", ["/worklist", "/worklist/export.csv", "/worklist/audit", "/worklist/report/1"])
async def test_every_page_needs_a_sign_in(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == "/worklist/login"


async def test_a_post_without_a_session_changes_nothing(client: httpx.AsyncClient) -> None:
    response = await client.post("/worklist/status", data={"trial": TRIAL, "patient": "base-candidate"})
    assert response.status_code == 303
    assert response.headers["location"] == "/worklist/login"


async def test_sign_in_sets_a_strict_http_only_session_cookie(client: httpx.AsyncClient) -> None:
    response = await sign_in(client)
    assert response.status_code == 303
    cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith("cds_worklist="))
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/worklist" in cookie
    assert "Secure" not in cookie  # plain http in this test: see the https test below
    page = await client.get("/worklist")
    assert page.status_code == 200
    assert "Signed in as <strong>alice</strong>" in page.text


async def test_over_https_the_cookies_are_secure(tmp_path: Path) -> None:
    seed(db_url(tmp_path))
    async for client in _client(settings_for(tmp_path), base_url="https://cds.test"):
        response = await sign_in(client)
        cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith("cds_worklist="))
        assert "Secure" in cookie


async def test_a_wrong_password_is_401_and_no_session(client: httpx.AsyncClient) -> None:
    response = await sign_in(client, password="wrong password!")
    assert response.status_code == 401
    assert "Wrong user name or password" in response.text
    assert not any(v.startswith("cds_worklist=") for v in response.headers.get_list("set-cookie"))
    assert (await client.get("/worklist")).status_code == 303


async def test_sign_in_without_the_form_token_is_refused(client: httpx.AsyncClient) -> None:
    await client.get("/worklist/login")
    response = await client.post("/worklist/login", data={"user": "alice", "password": PASSWORD, "csrf": "forged"})
    assert response.status_code == 403


async def test_the_page_ranks_candidates_and_sends_a_strict_csp(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    page = await client.get("/worklist")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src" not in csp
    assert "'unsafe-inline'" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    order = re.findall(r'data-patient="([^"]+)"', page.text)
    assert order == ["base-candidate", "var-hcg-missing", "var-pred-no-dose", "real-synthea-quiet", REFERRED]
    assert "referred by clinician" in page.text
    assert "<script" not in page.text
    assert "eligible" not in page.text.replace("not eligibility decisions", "").replace("ineligible", "")


async def test_filters_narrow_the_list(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    page = await client.get("/worklist", params={"verdict": "possible-candidate", "criterion": "exc-pregnancy"})
    assert re.findall(r'data-patient="([^"]+)"', page.text) == ["var-hcg-missing", "real-synthea-quiet"]
    referred = await client.get("/worklist", params={"verdict": "referred"})
    assert re.findall(r'data-patient="([^"]+)"', referred.text) == [REFERRED]


async def test_a_status_change_needs_the_csrf_token(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    form = {"server": FHIR, "trial": TRIAL, "patient": "base-candidate", "status": "contacted", "expected": "new"}
    refused = await client.post("/worklist/status", data={**form, "csrf": "forged"})
    assert refused.status_code == 403
    assert "base-candidate" not in (await client.get("/worklist/audit")).text


async def test_a_status_change_is_saved_and_audited(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    csrf = csrf_of((await client.get("/worklist")).text)
    form = {
        "server": FHIR,
        "trial": TRIAL,
        "patient": "base-candidate",
        "status": "contacted",
        "expected": "new",
        "csrf": csrf,
    }
    response = await client.post("/worklist/status", data={**form, "back": "verdict=likely-candidate&evil=x"})
    assert response.status_code == 303
    assert response.headers["location"] == "/worklist?verdict=likely-candidate"
    audit = (await client.get("/worklist/audit")).text
    assert re.search(
        r"<td>alice</td><td>NCT04582136</td><td>base-candidate</td><td>new → contacted</td>"
        rf"<td>{re.escape(FHIR)}</td>",
        audit,
    )
    stale = await client.post("/worklist/status", data={**form, "status": "declined"})
    assert stale.status_code == 409


async def test_a_status_change_for_a_patient_not_on_the_list_is_404(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    csrf = csrf_of((await client.get("/worklist")).text)
    form = {
        "server": FHIR,
        "trial": TRIAL,
        "patient": "var-age-17",
        "status": "contacted",
        "expected": "new",
        "csrf": csrf,
    }
    assert (await client.post("/worklist/status", data=form)).status_code == 404
    on_list = {**form, "patient": "base-candidate"}
    for server in ("https://other-fhir.test/r4", ""):  # the same patient id of another (or no) server
        assert (await client.post("/worklist/status", data={**on_list, "server": server})).status_code == 404
    unknown = await client.post("/worklist/status", data={**form, "patient": "base-candidate", "status": "on-study"})
    assert unknown.status_code == 400


async def test_the_csv_export_is_an_attachment_of_the_filtered_rows(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    response = await client.get("/worklist/export.csv", params={"verdict": "possible-candidate"})
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith("attachment;")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["patient"] for r in rows] == ["var-hcg-missing", "var-pred-no-dose", "real-synthea-quiet"]
    assert rows[0]["research_subject_status"] == "potential-candidate"


async def test_the_report_view_renders_the_stored_report(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    page = (await client.get("/worklist")).text
    result_id = re.search(r'href="/worklist/report/(\d+)">var-hcg-missing<', page)
    assert result_id
    report = await client.get(f"/worklist/report/{result_id.group(1)}")
    assert report.status_code == 200
    assert "Possible candidate: 1 to verify" in report.text
    assert 'id="exc-pregnancy"' in report.text
    assert report.headers["cache-control"] == "no-store"
    assert (await client.get("/worklist/report/99999")).status_code == 404


async def test_stored_text_is_escaped_on_the_page_and_in_the_chart(tmp_path: Path) -> None:
    url = db_url(tmp_path)
    seed(url, referral=False)
    hostile = {
        "trial": TRIAL,
        "patient": "Patient/p-x",
        "asOf": "2026-11-01",
        "verdict": "possible-candidate",
        "criteria": [
            {"id": "inc-x<img>", "kind": "inclusion", "status": "unknown", "title": '<script>alert(1)</script>"'},
        ],
    }
    store = PopulationStore(url)
    store.save_run(run_info("run-newest", 2), [json.dumps(hostile)], completed_at=NOW)
    store.dispose()
    async for client in _client(settings_for(tmp_path)):
        await sign_in(client)
        page = (await client.get("/worklist")).text
        assert "<script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<img>" not in page
        assert "<svg" in page


async def test_sign_out_ends_the_session(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    csrf = csrf_of((await client.get("/worklist")).text)
    response = await client.post("/worklist/logout", data={"csrf": csrf})
    assert response.status_code == 303
    assert (await client.get("/worklist")).status_code == 303


async def test_the_status_form_names_the_fhir_server_of_the_row(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    page = (await client.get("/worklist")).text
    assert f'<input type="hidden" name="server" value="{FHIR}">' in page
    assert f'data-server="{FHIR}"' in page
    rows = list(csv.DictReader(io.StringIO((await client.get("/worklist/export.csv")).text)))
    assert {r["fhir_server"] for r in rows} == {FHIR}
