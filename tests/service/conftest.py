from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from service_helpers import AS_OF, FHIR, RecordingEngine

from cds.config import Settings
from cds.service.app import create_app

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path}/feedback.sqlite3",
        as_of=AS_OF,
        fhir_timeout=0.5,
        fhir_connect_timeout=0.5,
        fhir_deadline=2.0,
        fhir_allowed_servers=[FHIR],
        auth_required=False,  # JWT authentication is tested in tests/security
    )


@pytest.fixture
def engine() -> RecordingEngine:
    return RecordingEngine()


@pytest.fixture
def make_client(engine: RecordingEngine) -> ClientFactory:
    """Build an app (lifespan run) and an httpx client talking to it in-process."""

    @asynccontextmanager
    async def factory(settings: Settings, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
        kwargs.setdefault("evaluator", engine)
        app = create_app(settings, **kwargs)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://cds.test") as client:
                yield client

    return factory


@pytest.fixture
async def client(make_client: ClientFactory, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(settings) as c:
        yield c
