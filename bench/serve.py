"""One app under uvicorn, for the benchmarks (started as a subprocess by `bench.servers`).

    python -m bench.serve service --port P [--workers N]
    python -m bench.serve floor --port P

``service`` is the CDS Hooks service as shipped: ``cds.service.app.create_app`` with default
settings except what the ``CDS_*`` environment sets (as-of date, a throw-away feedback database,
the EHR's JWKS, the FHIR allow-list), prepared like `cds.service.serving.serve` prepares it (the
database migrated once by the parent of several workers, `migrate_once`; then `ship`:
``units.preload(); gc.collect(); gc.freeze()`` once per worker process, before serving). ``floor``
is a bare FastAPI app with one route that reads the body, decodes it with ``json.loads`` and
returns a fixed card: the least any service can do with the same request. Both run with the same
uvicorn configuration (`uvicorn_options`).

The service app also gets a ``GET /bench/stats`` route: the number of HTTP requests its FHIR
gateway sent, and the latest request URLs (so the harness can check that the fetch-path floor
sends exactly the service's queries).
"""

from __future__ import annotations

import argparse
import json
from collections import deque
from datetime import date
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

REPO = Path(__file__).resolve().parents[1]
AS_OF = date(2026, 11, 1)  # the service runs with CDS_AS_OF = AS_OF (bench.run)
FIXED_RESPONSE: dict[str, Any] = json.loads(
    (REPO / "cds" / "service" / "examples" / "patient-view-response.json").read_text(encoding="utf-8")
)
RECENT_URLS = 64  # FHIR request URLs kept for /bench/stats


def uvicorn_options(port: int, workers: int = 1) -> dict[str, Any]:
    """The one uvicorn configuration of every benchmarked app (service and floor alike)."""
    return {
        "host": "127.0.0.1",
        "port": port,
        "log_level": "warning",
        "access_log": False,
        "lifespan": "on",
        "workers": workers,
    }


def _apply_overlay() -> None:
    """``BENCH_OVERLAY``: a directory holding another version of the ``cds`` package (e.g. the
    service of an earlier commit), served instead of the working tree's: before/after comparisons."""
    import os
    import sys

    overlay = os.environ.get("BENCH_OVERLAY")
    if overlay and overlay not in sys.path:
        sys.path.insert(0, overlay)


def app_factory() -> FastAPI:
    """The app named by ``BENCH_KIND`` (what every uvicorn worker process builds, once)."""
    import os

    _apply_overlay()
    return service_app() if os.environ.get("BENCH_KIND") == "service" else floor_app()


# --------------------------------------------------------------------------------------------
# The floor


def floor_app() -> FastAPI:
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/cds-services/{service_id}")
    async def hook(service_id: str, request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        if not isinstance(body, dict):
            return JSONResponse({"error": "not an object"}, status_code=400)
        return JSONResponse(FIXED_RESPONSE)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


# --------------------------------------------------------------------------------------------
# The service


def service_app() -> FastAPI:
    """The real app with default settings, except what the environment (``CDS_*``, set by
    `bench.servers.AppProcess`) says: as-of date, database, auth keys, FHIR allow-list; then
    prepared for serving as `cds.service.serving.serve` does (`ship`)."""
    import httpx

    from cds.service.app import create_app

    try:
        from cds.service.serving import worker_settings
    except ImportError:  # an overlay (BENCH_OVERLAY) older than this
        from cds.config import Settings as worker_settings
    app = create_app(worker_settings())

    fhir_requests = [0]
    recent: deque[str] = deque(maxlen=RECENT_URLS)

    async def count(request: httpx.Request) -> None:
        fhir_requests[0] += 1
        recent.append(str(request.url))

    http: httpx.AsyncClient = app.state.cds.gateway.http
    http.event_hooks = {"request": [count], "response": []}

    async def stats() -> dict[str, Any]:
        return {"fhirRequests": fhir_requests[0], "recentUrls": list(recent)}

    app.add_api_route("/bench/stats", stats, methods=["GET"])
    ship()
    return app


def ship() -> None:
    """What `cds.service.serving.serve` does between ``create_app`` and ``uvicorn.run``: load the UCUM
    registry, then move every start-up object out of the collector's generations. uvicorn calls
    `app_factory` once in each worker process before it serves, so this runs once per worker."""
    import gc

    from cds.engine import units

    units.preload()
    gc.collect()
    gc.freeze()


def migrate_once() -> None:
    """What `cds.service.serving.serve` does before it starts several workers: migrate the database once
    (`cds.service.serving.migrate_once`: in a child process; the workers skip it)."""
    import os

    try:
        from cds.service.serving import migrate_once as migrate
    except ImportError:  # an overlay (BENCH_OVERLAY) older than this: its workers migrate themselves
        return
    if os.environ.get("CDS_DATABASE_MIGRATE", "true").lower() not in ("0", "false", "no", "off"):
        migrate(os.environ["CDS_DATABASE_URL"])


def main(argv: list[str] | None = None) -> int:
    import os

    _apply_overlay()
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("kind", choices=("service", "floor"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ["BENCH_KIND"] = args.kind
    if args.kind == "service" and args.workers > 1:
        migrate_once()
    uvicorn.run("bench.serve:app_factory", factory=True, **uvicorn_options(args.port, args.workers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
