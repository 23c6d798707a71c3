"""Bounded time and memory under concurrency (`cds.service.limits`), readiness, and the depth error.

The engine here is the real one behind a gate (`GatedEngine`): it waits until the test opens the
gate, so a test can hold evaluation or large-body slots for as long as it needs.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import date
from typing import Any

import httpx
import pytest
from conftest import ClientFactory
from service_helpers import RecordingEngine, full_prefetch, hook_request

from cds.config import Settings
from cds.engine.model import Report
from sandbox import free_port

SERVICE = "/cds-services/nct04582136-prescreen"


class GatedEngine(RecordingEngine):
    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def __call__(
        self,
        resources: list[dict[str, Any]],
        *,
        patient_id: str,
        as_of: date,
        searched: frozenset[str],
        incomplete: tuple[str, ...],
    ) -> Report:
        self.entered.release()
        self.gate.wait(10)
        return super().__call__(resources, patient_id=patient_id, as_of=as_of, searched=searched, incomplete=incomplete)


@pytest.fixture
def gated() -> Iterator[GatedEngine]:
    engine = GatedEngine()
    yield engine
    engine.gate.set()  # never leave a thread waiting


def _hook(pad: int = 0) -> bytes:
    body = hook_request(full_prefetch(), fhir_server=None)
    if pad:
        body["extension"] = {"pad": "x" * pad}
    return json.dumps(body).encode()


def _assert_503(response: httpx.Response, code: str) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == code
    assert "cards" not in outcome


async def _post(client: httpx.AsyncClient, body: bytes | AsyncIterator[bytes]) -> httpx.Response:
    return await client.post(SERVICE, content=body, headers={"Content-Type": "application/json"})


async def test_an_evaluation_past_the_deadline_is_503_never_a_verdict(
    make_client: ClientFactory, settings: Settings, gated: GatedEngine
) -> None:
    fast = settings.model_copy(update={"request_deadline": 1.5})
    async with make_client(fast, evaluator=gated) as client:
        gated.gate.set()
        assert (await _post(client, _hook())).status_code == 200  # warm: the engine's models are loaded
        gated.gate.clear()
        response = await _post(client, _hook())
        _assert_503(response, "timeout")
        assert "deadline" in response.json()["issue"][0]["diagnostics"]
        gated.gate.set()
        assert (await _post(client, _hook())).status_code == 200, "the slot came back when the thread finished"


async def test_evaluations_beyond_the_slots_queue_then_get_503(
    make_client: ClientFactory, settings: Settings, gated: GatedEngine
) -> None:
    limited = settings.model_copy(update={"max_concurrent_evaluations": 1, "max_queued": 1, "queue_timeout": 0.3})
    async with make_client(limited, evaluator=gated) as client:
        first = asyncio.create_task(_post(client, _hook()))
        await asyncio.to_thread(gated.entered.acquire, True, 5)  # the first holds the only slot
        queued, refused = await asyncio.gather(_post(client, _hook()), _post(client, _hook()))
        gated.gate.set()
        assert (await first).status_code == 200
    _assert_503(queued, "throttled")  # waited queue_timeout in the queue
    _assert_503(refused, "throttled")  # the queue was full: refused at once


async def test_large_bodies_are_read_only_while_holding_a_slot(
    make_client: ClientFactory, settings: Settings, gated: GatedEngine
) -> None:
    limited = settings.model_copy(update={"large_body_bytes": 5000, "max_concurrent_large_bodies": 1, "max_queued": 0})
    large = _hook(pad=20_000)

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the slot is needed mid-stream
        for start in range(0, len(large), 4096):
            yield large[start : start + 4096]

    async with make_client(limited, evaluator=gated) as client:
        holder = asyncio.create_task(_post(client, large))
        await asyncio.to_thread(gated.entered.acquire, True, 5)  # large body 1 is in the engine
        _assert_503(await _post(client, large), "throttled")
        _assert_503(await _post(client, chunked()), "throttled")
        feedback = await client.post(f"{SERVICE}/feedback", json={"feedback": [{"card": "c", "outcome": "accepted"}]})
        assert feedback.status_code == 200, "a small body needs no large-body slot"
        gated.gate.set()
        assert (await holder).status_code == 200
        assert (await _post(client, chunked())).status_code == 200, "the slot is released with the answer"


@pytest.mark.parametrize("depth", [65, 1_100, 10_000, 150_000])
async def test_the_depth_error_is_named_at_any_depth(client: httpx.AsyncClient, depth: int) -> None:
    # regression: 10,000 levels were answered "not valid JSON" (the recursion limit tripped first)
    body = b'{"hook": "patient-view", "context": {"patientId": "p"}, "prefetch": {"x": ' + b"[" * depth
    body += b"]" * depth + b"}}"
    response = await _post(client, body)
    assert response.status_code == 400
    assert "nested deeper than 64 levels" in response.json()["issue"][0]["diagnostics"]


async def test_ready_is_200_while_the_database_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    assert (await client.get("/health")).status_code == 200


async def test_ready_is_503_while_the_database_is_unreachable_and_health_stays_200(
    make_client: ClientFactory, settings: Settings
) -> None:
    unreachable = settings.model_copy(
        update={
            "database_url": f"postgresql://cds@127.0.0.1:{free_port()}/cds",
            "database_migrate": False,
            "database_connect_timeout": 1.0,
        }
    )
    async with make_client(unreachable) as client:
        _assert_503(await client.get("/ready"), "transient")
        assert (await client.get("/health")).status_code == 200, "liveness: the process itself is fine"


async def test_feedback_while_the_database_is_unreachable_is_503_with_retry_after(
    make_client: ClientFactory, settings: Settings
) -> None:
    unreachable = settings.model_copy(
        update={
            "database_url": f"postgresql://cds@127.0.0.1:{free_port()}/cds",
            "database_migrate": False,
            "database_connect_timeout": 1.0,
        }
    )
    async with make_client(unreachable) as client:
        response = await client.post(f"{SERVICE}/feedback", json={"feedback": [{"card": "c"}]})
        _assert_503(response, "transient")
        assert "127.0.0.1" not in response.text


async def test_a_large_body_hands_its_memory_back_after_the_answer(
    make_client: ClientFactory, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (issue 14, idle RSS): a worker kept the high-water mark of its largest request."""
    from cds.service import limits

    released: list[int] = []
    monkeypatch.setattr(limits, "release_memory", lambda: released.append(1))
    limited = settings.model_copy(update={"large_body_bytes": 5000})
    async with make_client(limited) as client:
        assert (await _post(client, _hook())).status_code == 200
        await asyncio.sleep(0)
        assert released == [], "a small body changes nothing"
        assert (await _post(client, _hook(pad=20_000))).status_code == 200
        await asyncio.sleep(0)
        assert released == [1]


def test_release_memory_collects_and_trims() -> None:
    from cds.service.limits import release_memory

    release_memory()  # glibc: malloc_trim; elsewhere a collection only - never raises


def test_workers_skip_the_migration_their_parent_applied(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from cds.service.serving import MIGRATED_BY_PARENT, worker_settings

    url = f"sqlite:///{tmp_path}/w.sqlite3"
    monkeypatch.setenv("CDS_DATABASE_URL", url)
    monkeypatch.delenv(MIGRATED_BY_PARENT, raising=False)
    assert worker_settings().database_migrate, "started alone, a worker migrates"
    monkeypatch.setenv(MIGRATED_BY_PARENT, "sqlite:///elsewhere.sqlite3")
    assert worker_settings().database_migrate, "another database was migrated"
    monkeypatch.setenv(MIGRATED_BY_PARENT, url)
    assert not worker_settings().database_migrate


def test_migrate_once_migrates_in_a_child_and_marks_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from cds.service.serving import MIGRATED_BY_PARENT, migrate_once
    from cds.store.database import Database, DatabaseUnavailable

    url = f"sqlite:///{tmp_path}/m.sqlite3"
    monkeypatch.delenv(MIGRATED_BY_PARENT, raising=False)
    migrate_once(url)
    import os

    assert os.environ[MIGRATED_BY_PARENT] == url
    database = Database(url)
    assert database.current_revision() is not None
    database.dispose()
    monkeypatch.delenv(MIGRATED_BY_PARENT)
    with pytest.raises(DatabaseUnavailable):
        migrate_once(f"postgresql://cds@127.0.0.1:{free_port()}/none")
    assert MIGRATED_BY_PARENT not in os.environ


def test_serve_with_workers_becomes_a_bare_uvicorn_supervisor(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The parent of several workers is replaced (exec) by uvicorn's own supervisor of
    `cds.service.app:app_factory`, after the migration: it keeps none of the CLI's imports (settings,
    database layer: about 70 MB of a 2-worker deployment's memory)."""
    import os

    from cds.config import Settings
    from cds.service import serving

    url = f"sqlite:///{tmp_path}/s.sqlite3"
    monkeypatch.delenv(serving.MIGRATED_BY_PARENT, raising=False)
    monkeypatch.setenv("CDS_DATABASE_URL", url)
    execs: list[list[str]] = []

    def exec_process(argv: list[str]) -> None:
        execs.append(argv)
        raise SystemExit(0)  # what exec would never do: end here

    monkeypatch.setattr(serving, "exec_process", exec_process)
    with pytest.raises(SystemExit):
        serving.serve(host="127.0.0.1", port=8123, workers=3, settings=Settings(database_url=url, log_level="WARNING"))
    [argv] = execs
    assert argv[1:5] == ["-m", "uvicorn", "cds.service.app:app_factory", "--factory"]
    assert argv[argv.index("--workers") + 1] == "3"
    assert argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--log-level") + 1] == "warning"
    assert os.environ[serving.MIGRATED_BY_PARENT] == url, "migrated once, before the exec"
