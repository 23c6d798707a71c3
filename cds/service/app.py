"""The FastAPI application factory and `serve()`.

``create_app(settings)`` builds a self-contained app: the shared FHIR gateway (one pooled httpx
client, bound to the FHIR allow-list, closed at shutdown), the JWT authenticator of the CDS client
(when ``CDS_AUTH_REQUIRED``), the feedback store (tables created at startup), CORS for the browser
sandbox, the OperationOutcome error mapping and JSON logs. At startup the security posture is logged
(authentication off, no trusted issuer, ``aud`` from the Host header, FHIR fetching off or open to
any server). Tests inject a fake engine (``evaluator``), a trial, an httpx ``fhir_transport`` or
``jwks_transport``, a ``clock`` for the authenticator, or a deterministic ``new_uuid``.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from cds.config import DEFAULT_PORT, Settings
from cds.engine import units
from cds.fhir.gateway import FhirGateway
from cds.service.api import router
from cds.service.auth import AuthConfig, JwtAuthenticator
from cds.service.errors import install_error_handlers
from cds.service.feedback import FeedbackStore
from cds.service.logs import configure_logging
from cds.service.state import (
    Evaluator,
    ServiceState,
    ServiceTrial,
    default_evaluator,
    default_trial,
    random_uuid,
)


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
    authenticator = (
        JwtAuthenticator(AuthConfig.from_settings(settings), transport=jwks_transport, clock=clock)
        if settings.auth_required
        else None
    )
    state = ServiceState(
        settings=settings,
        gateway=FhirGateway.from_settings(settings, transport=fhir_transport),
        store=FeedbackStore(settings.database_url),
        trial=trial or default_trial(),
        evaluator=evaluator or default_evaluator(),
        new_uuid=new_uuid or random_uuid,
        authenticator=authenticator,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log_security_posture(settings)
        state.store.create_tables()
        # Load the UCUM unit registry (~0.5 s) at start-up, not inside the first hook call.
        await run_in_threadpool(units.preload)
        try:
            yield
        finally:
            await state.gateway.aclose()
            if state.authenticator is not None:
                await state.authenticator.aclose()
            state.store.dispose()

    app = FastAPI(
        title=f"{state.trial.id} CDS Hooks prescreen",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.cds = state
    install_error_handlers(app)
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
    return app


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


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, settings: Settings | None = None) -> None:
    """Run the service with uvicorn (blocking). ``cds serve [--host] [--port]`` calls this."""
    import uvicorn

    settings = settings or Settings()
    app = create_app(settings)
    units.preload()
    # The process serves only this app: long-lived start-up objects (modules, FHIR model schemas,
    # the UCUM registry) leave the collector's generations, so collections during hook calls stay
    # short (p99). Not done in create_app: tests and the demo build many apps in one process.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )
