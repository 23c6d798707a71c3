"""Session-wide fixtures. The real HAPI FHIR server and a real PostgreSQL are started once per
test session, on demand.

`hapi_base_url` builds the Maven launcher if needed and starts HAPI on a free loopback port (about
25 s), or attaches to `HAPI_SANDBOX_URL`. Without Java/Maven the integration tests are skipped with
the reason, except when `CDS_REQUIRE_HAPI=1` (as `.ci/run` sets): then they fail, never skip.

`postgres_url` is a fresh, empty database on a real PostgreSQL server (dropped after the test):
the session's throw-away cluster (`sandbox.postgres.TempPostgres`, about 5 s to start), or the
server of `CDS_TEST_POSTGRES_URL` (an admin URL; a database is created per test). Without
PostgreSQL the tests using it are skipped with the reason, except when `CDS_REQUIRE_POSTGRES=1`
(as `.ci/run` sets): then they fail. `service_processes` starts real ``cds serve`` processes
against a database URL and returns their base URLs (`tests.processes.ServiceProcesses`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import ServiceProcesses

FIXTURE_PATIENTS = Path(__file__).resolve().parents[1] / "fixtures" / "patients"


def _unavailable(reason: str) -> None:
    if os.environ.get("CDS_REQUIRE_HAPI") == "1":
        pytest.fail(f"HAPI FHIR sandbox required (CDS_REQUIRE_HAPI=1) but unavailable: {reason}", pytrace=False)
    pytest.skip(f"HAPI FHIR sandbox unavailable: {reason}")


@pytest.fixture(scope="session")
def hapi_base_url() -> Iterator[str]:
    """Base URL of a real HAPI FHIR R4 server for the whole session, stopped at the end."""
    from sandbox import TARGET_DIR, HapiSandbox, SandboxError, free_port

    url = os.environ.get("HAPI_SANDBOX_URL")
    log = TARGET_DIR / "hapi-sandbox-pytest.log"
    try:
        # A generous start-up timeout: HAPI takes about 25 s alone, minutes on a busy 2-core machine.
        sandbox = (
            HapiSandbox(base_url=url, log_path=log, startup_timeout=600.0)
            if url
            else HapiSandbox(free_port(), log_path=log, startup_timeout=600.0)
        )
        sandbox.start()
    except SandboxError as exc:
        _unavailable(str(exc))
        raise  # unreachable: _unavailable always raises
    try:
        yield sandbox.base_url
    finally:
        sandbox.stop()


@pytest.fixture(scope="session")
def hapi_with_fixtures(hapi_base_url: str) -> str:
    """HAPI with every fixture patient loaded (idempotent PUTs with the fixtures' own ids)."""
    from sandbox import load_bundles

    load_bundles(hapi_base_url, sorted(FIXTURE_PATIENTS.glob("*.json")))
    return hapi_base_url


def _postgres_unavailable(reason: str) -> None:
    if os.environ.get("CDS_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL required (CDS_REQUIRE_POSTGRES=1) but unavailable: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable: {reason}")


class _AttachedPostgres:
    """An existing server named by CDS_TEST_POSTGRES_URL (its admin URL): one database per test."""

    def __init__(self, admin_url: str) -> None:
        from sqlalchemy.engine import make_url

        self.admin = make_url(admin_url)

    def _admin(self, statement: str) -> None:
        import psycopg

        url = self.admin
        with psycopg.connect(
            host=url.host or "127.0.0.1",
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname=url.database or "postgres",
        ) as conn:
            conn.autocommit = True
            conn.execute(statement.encode())

    def create_database(self) -> str:
        name = f"cds_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.admin.set(database=name).render_as_string(hide_password=False)

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        pass


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """A real PostgreSQL server for the session (see the module docstring)."""
    from sandbox.postgres import PostgresUnavailable, TempPostgres

    attached = os.environ.get("CDS_TEST_POSTGRES_URL")
    server: TempPostgres | _AttachedPostgres
    try:
        server = _AttachedPostgres(attached) if attached else TempPostgres().start()
    except (PostgresUnavailable, ImportError) as exc:
        _postgres_unavailable(str(exc))
        raise  # unreachable: _postgres_unavailable always raises
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: object) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty PostgreSQL database, dropped after the test."""
    from sqlalchemy.engine import make_url

    url = postgres_server.create_database()  # type: ignore[attr-defined]
    try:
        yield url
    finally:
        postgres_server.drop_database(make_url(url).database)  # type: ignore[attr-defined]


@pytest.fixture
def service_processes(tmp_path: Path) -> Iterator[ServiceProcesses]:
    """``service_processes.start(n, database_url, env)`` -> base URLs of real service processes,
    stopped after the test."""
    processes = ServiceProcesses(tmp_path)
    try:
        yield processes
    finally:
        processes.stop_all()


@pytest.fixture
def strict_engine() -> Iterator[None]:
    """A rule that raises fails the test instead of becoming "unknown" (`pytestmark =
    pytest.mark.usefixtures("strict_engine")` in engine and rule tests)."""
    from cds.engine.trial import set_strict

    set_strict(True)
    try:
        yield
    finally:
        set_strict(False)
