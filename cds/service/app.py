"""The FastAPI application factory and `serve()`.

``create_app(settings)`` builds a self-contained app: the shared FHIR gateway (one pooled httpx
client, closed at shutdown), the feedback store (tables created at startup), CORS for the browser
sandbox, the OperationOutcome error mapping and JSON logs. Tests inject a fake engine
(``evaluator``), a trial, an httpx ``fhir_transport`` or a deterministic ``new_uuid``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from cds.config import Settings
from cds.engine import units
from cds.fhir.gateway import FhirGateway
from cds.service.api import router
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
) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)
    state = ServiceState(
        settings=settings,
        gateway=FhirGateway.from_settings(settings, transport=fhir_transport),
        store=FeedbackStore(settings.database_url),
        trial=trial or default_trial(),
        evaluator=evaluator or default_evaluator(),
        new_uuid=new_uuid or random_uuid,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.store.create_tables()
        # Load the UCUM unit registry (~0.5 s) at start-up, not inside the first hook call.
        await run_in_threadpool(units.preload)
        try:
            yield
        finally:
            await state.gateway.aclose()
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


def serve(host: str = "127.0.0.1", port: int = 8080, settings: Settings | None = None) -> None:
    """Run the service with uvicorn (blocking). ``cds serve [--host] [--port]`` calls this."""
    import uvicorn

    settings = settings or Settings()
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )
