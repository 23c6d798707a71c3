"""`cds population` with SMART Backend Services (respx at the transport): the bearer token on the
kick-off, the polls and, only when the manifest says `requiresAccessToken` and only on the FHIR
server's origin, the downloads; no token in logs, output, messages or the database."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cds.cli import main as cli_main
from cds.config import Settings
from cds.errors import FhirOutsideBase
from cds.fhir.smart_backend import BackendClient, BackendServicesAuth, load_signing_key, resource_scopes
from cds.population.bulk import BulkExportClient
from cds.population.run import PopulationOptions, export_plan, run_population, trial_for
from tests.smart_mocks import smart_configuration as shared_smart_configuration

from .fake_bulk import BASE, FIXTURES, FakeBulkServer, bundle_resources, ndjson_by_type

TOKEN_URL = "http://auth.bulk.test/token"
TOKEN = "secret-access-token-42"
FILES = sorted(FIXTURES.glob("*.json"))[:2]


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("key") / "client.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def smart_configuration(router: respx.MockRouter, **extra: object) -> respx.Route:
    return shared_smart_configuration(router, BASE, TOKEN_URL, **extra)


def token_route(router: respx.MockRouter) -> respx.Route:
    return router.post(TOKEN_URL).mock(
        return_value=httpx.Response(200, json={"access_token": TOKEN, "token_type": "bearer", "expires_in": 300})
    )


def run(settings: Settings, **kw: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    opts = PopulationOptions(fhir_server=BASE, fmt="jsonl", **kw)  # type: ignore[arg-type]
    with httpx.Client() as http:
        code = run_population(opts, settings, out, err, http=http)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def settings(tmp_path: Path, key_file: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        population_dir=str(tmp_path / "runs"),
        bulk_client_id="population-client",
        bulk_private_key=str(key_file),
    )


def bearer(route: respx.Route) -> list[str | None]:
    return [c.request.headers.get("Authorization") for c in route.calls]


# ---------------------------------------------------------------------------------- the client


def client(http: httpx.Client, key_file: Path) -> BulkExportClient:
    auth = BackendServicesAuth(http, BackendClient("c", load_signing_key(key_file), TOKEN_URL), "system/Patient.rs")
    return BulkExportClient(BASE, http, max_file_bytes=10_000, auth=auth)


@respx.mock
@pytest.mark.parametrize("requires", [True, False])
def test_a_download_carries_the_token_only_when_the_manifest_requires_it(
    tmp_path: Path, key_file: Path, requires: bool
) -> None:
    token_route(respx.mock)
    file = respx.get(f"{BASE}/Binary/1").mock(return_value=httpx.Response(200, content=b"{}\n"))
    with httpx.Client() as http:
        client(http, key_file).download(f"{BASE}/Binary/1", tmp_path / "1.ndjson", requires_access_token=requires)
    assert bearer(file) == ([f"Bearer {TOKEN}"] if requires else [None])


@respx.mock
def test_a_file_needing_the_token_on_another_origin_is_refused_and_the_token_not_sent(
    tmp_path: Path, key_file: Path
) -> None:
    tokens = token_route(respx.mock)
    elsewhere = respx.get("http://files.elsewhere.test/1").mock(return_value=httpx.Response(200, content=b"{}\n"))
    with httpx.Client() as http, pytest.raises(FhirOutsideBase, match="token not sent"):
        client(http, key_file).download(
            "http://files.elsewhere.test/1", tmp_path / "1.ndjson", requires_access_token=True
        )
    assert elsewhere.call_count == 0
    assert tokens.call_count == 0


@respx.mock
def test_a_file_elsewhere_without_requires_access_token_is_fetched_without_the_token(
    tmp_path: Path, key_file: Path
) -> None:
    elsewhere = respx.get("http://files.elsewhere.test/1").mock(return_value=httpx.Response(200, content=b"{}\n"))
    with httpx.Client() as http:
        client(http, key_file).download("http://files.elsewhere.test/1", tmp_path / "1.ndjson")
    assert bearer(elsewhere) == [None]


# ---------------------------------------------------------------------------------- the command


@respx.mock
@pytest.mark.parametrize("requires", [True, False])
def test_population_authorizes_kick_off_polls_and_downloads_without_leaking_the_token(
    settings: Settings, scheduler: str, caplog: pytest.LogCaptureFixture, requires: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    smart_configuration(respx.mock)
    tokens = token_route(respx.mock)
    server = FakeBulkServer(respx.mock, ndjson_by_type(bundle_resources(FILES)), requires_access_token=requires)
    code, out, err = run(settings, scheduler=scheduler)
    assert code == 0, err
    assert len(out.splitlines()) == len(FILES)
    assert tokens.call_count == 1  # cached for the whole run
    expected_scope = resource_scopes(export_plan(trial_for("nct04582136"))[0])
    assert f"scope={expected_scope.replace(' ', '+').replace('/', '%2F')}" in tokens.calls[0].request.content.decode()
    assert set(bearer(server.capability)) == {f"Bearer {TOKEN}"}
    assert set(bearer(server.kick_off)) == {f"Bearer {TOKEN}"}
    assert set(bearer(server.status)) == {f"Bearer {TOKEN}"}
    downloads = {h for route in server.downloads.values() for h in bearer(route)}
    assert downloads == ({f"Bearer {TOKEN}"} if requires else {None})
    assert TOKEN not in caplog.text
    assert TOKEN not in out
    assert TOKEN not in err
    database = Path(settings.database_url.removeprefix("sqlite:///")).read_bytes()
    assert TOKEN.encode() not in database
    runs = Path(settings.population_dir)
    assert all(TOKEN.encode() not in p.read_bytes() for p in runs.rglob("*") if p.is_file())


@respx.mock
def test_a_poll_answered_401_renews_the_token_once(settings: Settings, scheduler: str) -> None:
    smart_configuration(respx.mock)
    tokens = token_route(respx.mock)
    server = FakeBulkServer(respx.mock, ndjson_by_type(bundle_resources(FILES[:1])))
    manifest = {
        "transactionTime": "t",
        "request": "r",
        "output": [{"type": t, "url": f"{BASE}/Binary/{t}"} for t in sorted(server.files)],
        "error": [],
    }
    server.status.side_effect = [httpx.Response(401), httpx.Response(200, json=manifest)]
    code, _, err = run(settings, scheduler=scheduler)
    assert code == 0, err
    assert tokens.call_count == 2
    assert server.status.call_count == 2


@respx.mock
def test_a_refusing_token_endpoint_is_one_clear_error(settings: Settings) -> None:
    smart_configuration(respx.mock)
    respx.post(TOKEN_URL).mock(return_value=httpx.Response(401, json={"error": "invalid_client"}))
    FakeBulkServer(respx.mock, {})
    code, out, err = run(settings)
    assert code == 2
    assert out == ""
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: SMART backend authorization: the token endpoint refused the client (HTTP 401, invalid_client)"
    ]


@respx.mock
def test_an_explicit_token_url_works_without_discovery_and_v1_servers_get_v1_scopes(settings: Settings) -> None:
    respx.get(f"{BASE}/.well-known/smart-configuration").mock(return_value=httpx.Response(404))
    tokens = respx.post("http://other-auth.test/token").mock(
        return_value=httpx.Response(200, json={"access_token": TOKEN, "token_type": "Bearer"})
    )
    server = FakeBulkServer(respx.mock, ndjson_by_type(bundle_resources(FILES[:1])))
    code, _, err = run(settings, token_url="http://other-auth.test/token", partitions=1)
    assert code == 0, err
    assert "system%2FPatient.rs" in tokens.calls[0].request.content.decode()
    assert set(bearer(server.kick_off)) == {f"Bearer {TOKEN}"}


@respx.mock
def test_a_server_advertising_only_v1_scopes_is_asked_for_v1_scopes(settings: Settings) -> None:
    smart_configuration(respx.mock, capabilities=["permission-v1"])
    tokens = token_route(respx.mock)
    FakeBulkServer(respx.mock, ndjson_by_type(bundle_resources(FILES[:1])))
    code, _, err = run(settings, partitions=1)
    assert code == 0, err
    body = tokens.calls[0].request.content.decode()
    assert "system%2FPatient.read" in body
    assert ".rs" not in body


@respx.mock
def test_a_server_without_private_key_jwt_is_refused_before_any_export(settings: Settings) -> None:
    smart_configuration(respx.mock, token_endpoint_auth_methods_supported=["client_secret_basic"])
    server = FakeBulkServer(respx.mock, {})
    code, _, err = run(settings)
    assert code == 2
    assert "does not support private_key_jwt" in err
    assert server.kick_off.call_count == 0


def test_half_an_authorization_configuration_is_refused_by_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["population", "--fhir-server", BASE, "--client-id", "population-client"])
    assert code == 2
    assert "error: SMART backend authorization needs both --client-id and --private-key" in capsys.readouterr().err


@respx.mock
def test_without_authorization_settings_no_token_is_asked_for(tmp_path: Path) -> None:
    """HAPI has no authorization: auth stays optional."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", population_dir=str(tmp_path / "runs"))
    discovery = respx.get(f"{BASE}/.well-known/smart-configuration").mock(return_value=httpx.Response(404))
    server = FakeBulkServer(respx.mock, ndjson_by_type(bundle_resources(FILES[:1])))
    code, _, err = run(settings, partitions=1)
    assert code == 0, err
    assert discovery.call_count == 0
    assert set(bearer(server.kick_off)) == {None}
