"""The FastAPI application factory and `serve()`.

``create_app(settings)`` builds a self-contained app: the shared FHIR gateway (one pooled httpx
client, bound to the FHIR allow-list, closed at shutdown), the service's database (`cds.store`,
migrated at startup unless ``CDS_DATABASE_MIGRATE=false``) holding the feedback and the JWT ids seen
by the authenticator of the CDS client (when ``CDS_AUTH_REQUIRED``), the per-process concurrency
limits (`cds.service.limits`), CORS for the browser sandbox, the OperationOutcome error mapping, JSON
logs, and one CDS service per enabled trial (``CDS_ENABLED_TRIALS``, default every registered trial;
``trial=`` serves that one trial only). At startup the security posture is logged (authentication
off, no trusted issuer, ``aud`` from the Host header, FHIR fetching off or open to any server) and
the services served. Tests inject a fake engine (``evaluator``), a trial, an httpx ``fhir_transport`` or
``jwks_transport``, a ``clock`` for the authenticator, or a deterministic ``new_uuid``.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.concurrency import run_in_threadpool

from cds.config import Settings
from cds.engine import units
from cds.fhir.gateway import FhirGateway
from cds.service.api import router
from cds.service.auth import AuthConfig, JwtAuthenticator
from cds.service.errors import error_response, install_error_handlers
from cds.service.feedback import FeedbackStore
from cds.service.limits import EngineRunner, Slots
from cds.service.logs import configure_logging
from cds.service.serving import worker_settings
from cds.service.state import (
    Evaluator,
    ServiceState,
    ServiceTrial,
    enabled_trials,
    random_uuid,
    trial_service,
)
from cds.store.database import Database, DatabaseUnavailable
from cds.store.replay import ReplayStore
from cds.worklist.routes import install_worklist


def create_app(
    settings: Settings | None = None,
    *,
    evaluator: Evaluator | None = None,
    trial: ServiceTrial | None = None,
    fhir_transport: httpx.AsyncBaseTransport | None = None,
    new_uuid: Callable[[], str] | None = None,
    jwks_transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    database = Database.from_settings(settings)
    authenticator = (
        JwtAuthenticator(
            AuthConfig.from_settings(settings),
            replay=ReplayStore(database, clock=clock),
            transport=jwks_transport,
            clock=clock,
        )
        if settings.auth_required
        else None
    )
    # A test's `evaluator` replaces the engine of every service (each gets its own otherwise).
    services = [trial_service(t, evaluator) for t in ((trial,) if trial is not None else enabled_trials(settings))]

    def slots(name: str, size: int) -> Slots:
        return Slots(
            name,
            size,
            max_queued=settings.max_queued,
            queue_timeout=settings.queue_timeout,
            retry_after=settings.retry_after,
        )

    state = ServiceState(
        settings=settings,
        database=database,
        gateway=FhirGateway.from_settings(settings, transport=fhir_transport),
        store=FeedbackStore(database),
        services={s.id: s for s in services},
        large_bodies=slots("large request bodies", settings.max_concurrent_large_bodies),
        engine=EngineRunner(slots("evaluations", settings.max_concurrent_evaluations)),
        new_uuid=new_uuid or random_uuid,
        authenticator=authenticator,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log_security_posture(settings)
        logging.getLogger("cds.service").info(
            "serving %d CDS service(s)",
            len(state.services),
            extra={"event": "services", "services": list(state.services), "trials": [s.trial.id for s in services]},
        )
        if settings.database_migrate:
            await run_in_threadpool(database.upgrade)
        # Load the UCUM unit registry (~0.5 s) at start-up, not inside the first hook call.
        await run_in_threadpool(units.preload)
        try:
            yield
        finally:
            await state.gateway.aclose()
            if state.authenticator is not None:
                await state.authenticator.aclose()
            state.engine.shutdown()
            database.dispose()

    app = FastAPI(
        title=f"{', '.join(s.trial.id for s in services)} CDS Hooks prescreen",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.cds = state
    install_error_handlers(app)
    install_database_error_handler(app, settings.retry_after)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_origin_regex=settings.cors_origin_regex or None,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Content-Type", "Authorization"],
        allow_credentials=False,
        max_age=600,
    )
    app.include_router(router)
    install_worklist(app, settings, database, clock=clock)
    return app


def install_database_error_handler(app: FastAPI, retry_after: int) -> None:
    """A database that cannot be reached (connection refused or lost, pool exhausted) answers 503 +
    Retry-After, like `/ready`; the SQL error's text (it may quote data) goes nowhere."""

    async def database_error(request: Request, exc: Exception) -> Response:
        logging.getLogger("cds.service").warning(
            "database unavailable", extra={"event": "store.unavailable", "error": type(exc).__name__}
        )
        return error_response(DatabaseUnavailable("the database is unavailable", retry_after=retry_after))

    for error in (OperationalError, InterfaceError, PoolTimeout):
        app.add_exception_handler(error, database_error)


def log_security_posture(settings: Settings) -> None:
    """Say at startup what is open: warnings for what a production deployment must not run with."""
    log = logging.getLogger("cds.service")

    def warn(event: str, message: str) -> None:
        log.warning(message, extra={"event": event})

    if not settings.auth_required:
        log.info(
            "client authentication is OFF: any caller is served (demo and tests only)",
            extra={"event": "security.auth_off"},
        )
    else:
        if not settings.trusted_issuers:
            warn("security.no_issuer", "no trusted JWT issuer configured (CDS_AUTH_ISSUERS): every call is refused")
        if not settings.auth_jwks_file and not settings.trusted_jku:
            warn("security.no_keys", "no JWT keys configured (CDS_AUTH_JWKS_FILE, CDS_AUTH_JKU_ALLOWED)")
        if not settings.public_base_url:
            warn("security.aud_from_host", "CDS_PUBLIC_BASE_URL unset: JWT aud is checked against the Host header")
        if settings.auth_trust_sandbox:
            warn("security.sandbox_trusted", "the public CDS Hooks sandbox is trusted: development only")
    if "*" in settings.fhir_allowed_servers:
        warn("security.fhir_any", "CDS_FHIR_ALLOWED_SERVERS=*: the service fetches from ANY fhirServer (SSRF risk)")
    elif not settings.fhir_allowed_servers:
        log.info(
            "FHIR fetching is off (CDS_FHIR_ALLOWED_SERVERS empty): prefetch only",
            extra={"event": "security.fhir_off"},
        )


def app_factory() -> FastAPI:
    """The app of one worker process of ``cds serve --workers N`` (settings from the environment,
    `worker_settings`), prepared for serving (`prepare_process`). uvicorn calls it once in each
    worker process."""
    app = create_app(worker_settings())
    prepare_process()
    return app


def prepare_process() -> None:
    """Load the UCUM registry, then move every long-lived start-up object (modules, FHIR model
    schemas, the registry) out of the collector's generations, so collections during hook calls
    stay short (p99). Not done in create_app: tests and the demo build many apps in one process."""
    units.preload()
    gc.collect()
    gc.freeze()
