"""One app under uvicorn, for the benchmarks (started as a subprocess by `bench.servers`).

    python -m bench.serve service --port P [--patch NAME ...]
    python -m bench.serve floor --port P

``service`` is the real CDS Hooks app (``cds.service.app.create_app``, default settings except what
the ``CDS_*`` environment sets: as-of date, a throw-away feedback database, the EHR's JWKS, the
FHIR allow-list). ``floor`` is a bare FastAPI app with one route that
reads the body, decodes it with ``json.loads`` and returns a fixed card: the least any service can
do with the same request. Both run with the same uvicorn configuration (`uvicorn_config`).

``--patch`` applies, in this process only, a service-side change that the benchmark recommends, so
its effect can be measured before anyone edits the service (see `PATCHES`). The service app also
gets a ``GET /bench/stats`` route that returns the number of HTTP requests its FHIR gateway sent.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

REPO = Path(__file__).resolve().parents[1]
AS_OF = date(2026, 11, 1)
FIXED_RESPONSE: dict[str, Any] = json.loads(
    (REPO / "cds" / "service" / "examples" / "patient-view-response.json").read_text(encoding="utf-8")
)


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
    """``BENCH_OVERLAY``: a directory holding another version of the ``cds`` package (e.g. the engine
    of an earlier commit), served instead of the working tree's: before/after comparisons."""
    import os
    import sys

    overlay = os.environ.get("BENCH_OVERLAY")
    if overlay and overlay not in sys.path:
        sys.path.insert(0, overlay)


def app_factory() -> FastAPI:
    """The app named by ``BENCH_KIND`` / ``BENCH_PATCHES`` (what every uvicorn worker builds)."""
    import os

    _apply_overlay()
    patches = [p for p in os.environ.get("BENCH_PATCHES", "").split(",") if p]
    return service_app(patches) if os.environ.get("BENCH_KIND") == "service" else floor_app()


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
# Patches: recommended service-side changes, applied here only


def patch_skip_not_applicable(app: FastAPI) -> None:
    """cds/service/api.py `call_service`: when the Condition search was complete and no Condition
    carries a lupus code (`Trial.not_applicable`), the verdict is certainly `excluded`; unless
    `show_excluded_card` is set, answer ``{"cards": []}`` without running the engine (and without
    the thread-pool hop).

    Emulated by intercepting the engine call (the route's only ``run_in_threadpool`` with the
    evaluator) and returning a one-criterion excluded report, which renders to no card."""
    import cds.service.api as api
    from cds.engine.model import CriterionResult, Kind, Report, Status

    state = app.state.cds
    trial = state.trial
    original = api.__dict__["run_in_threadpool"]

    async def run_in_threadpool(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if isinstance(func, partial) and func.func is state.evaluator and not state.settings.show_excluded_card:
            kw = func.keywords
            resources = func.args[0] if func.args else kw["resources"]
            complete = "Condition" in kw["searched"] and "Condition" not in kw["incomplete"]
            if complete and trial.not_applicable(r for r in resources if r.get("resourceType") == "Condition"):
                result = CriterionResult("inc-sle-diagnosis", Kind.INCLUSION, Status.NOT_MET, "no lupus code")
                return Report(trial.id, f"Patient/{kw['patient_id']}", kw["as_of"], (result,))
        return await original(func, *args, **kwargs)

    api.__dict__["run_in_threadpool"] = run_in_threadpool


def patch_no_copy(app: FastAPI) -> None:
    """cds/fhir/gateway.py `bundle_entries` and cds/service/prefetch.py `_obtain`: do not deep-copy
    resources that are already plain JSON (every prefetched resource, and every fetched one once
    `fast-fetch` is in): ``plain(v)`` only for fhirpy objects (AttrDict), identity for a ``dict``."""
    import cds.fhir.gateway as gateway
    import cds.service.prefetch as prefetch

    original = gateway.__dict__["plain"]

    def plain(value: Any) -> Any:
        return value if type(value) is dict else original(value)

    gateway.__dict__["plain"] = plain
    if "plain" in prefetch.__dict__:
        prefetch.__dict__["plain"] = plain


def patch_fast_fetch(app: FastAPI) -> None:
    """cds/fhir/gateway.py: decode FHIR responses without the ``AttrDict`` object_hook (`_decode`),
    and in `FhirGateway.search` fetch the first page with ``client._fetch_resource`` (as `follow`
    already does for next pages) instead of fhirpy's ``fetch_raw()``, which turns every entry into
    a fhirpy resource object only for `plain` to copy it back. Implies `no-copy`."""
    import cds.fhir.gateway as gateway
    from cds.errors import FhirServerError

    original_loads = gateway.__dict__["loads_bounded"]

    def loads_bounded(raw: Any, **kwargs: Any) -> Any:
        kwargs.pop("object_hook", None)
        return original_loads(raw, **kwargs)

    async def search(
        self: gateway.FhirGateway, client: gateway.PooledFHIRClient, resource_type: str, params: Mapping[str, str]
    ) -> gateway.SearchResult:
        searchset = client.resources(resource_type).search(**params).limit(self.limits.page_size)
        bundle = await client._fetch_resource(resource_type, searchset.params)
        if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
            raise FhirServerError(f"the FHIR server did not return a Bundle for a {resource_type} search")
        return await self.follow(client, bundle)

    gateway.__dict__["loads_bounded"] = loads_bounded
    gateway.FhirGateway.search = search  # type: ignore[method-assign]
    patch_no_copy(app)


def patch_observation_window(app: FastAPI) -> None:
    """cds/service/prefetch.py `_obtain` (FHIR fallback only, not the advertised templates, whose
    tokens cannot hold a date): add ``date=ge<as-of minus the trial's Observation look-back>`` to
    the Observation search; the engine reads no older Observation."""
    from cds.service.prefetch import PrefetchQuery

    state = app.state.cds
    as_of = state.settings.as_of or date.today()
    lookback = state.trial.policy.observation_lookback_days
    cutoff = date.fromordinal(as_of.toordinal() - lookback)
    queries = []
    for q in state.queries:
        if q.resource_type == "Observation":
            q = PrefetchQuery(q.key, q.resource_type, (*q.params, ("date", f"ge{cutoff.isoformat()}")), q.read)
        queries.append(q)
    state.queries = tuple(queries)


def patch_gc_freeze(app: FastAPI) -> None:
    """cds/service/app.py `lifespan`: after start-up (``units.preload()``), call ``gc.freeze()`` so
    that the long-lived start-up objects (modules, pydantic/FHIR schemas, the UCUM registry) leave
    the collector's generations and full collections during hook calls stay short."""
    import gc

    from cds.engine import units

    units.preload()
    gc.collect()
    gc.freeze()


PATCHES: dict[str, Callable[[FastAPI], None]] = {
    "skip-not-applicable": patch_skip_not_applicable,
    "no-copy": patch_no_copy,
    "fast-fetch": patch_fast_fetch,
    "observation-window": patch_observation_window,
    "gc-freeze": patch_gc_freeze,
}


# --------------------------------------------------------------------------------------------
# The service


def service_app(patches: list[str]) -> FastAPI:
    """The real app with default settings, except what the environment (``CDS_*``, set by
    `bench.servers.AppProcess`) says: as-of date, database, auth keys, FHIR allow-list."""
    from cds.config import Settings
    from cds.service.app import create_app

    app = create_app(Settings())
    for name in patches:
        PATCHES[name](app)

    fhir_requests = [0]

    async def count(request: httpx.Request) -> None:
        fhir_requests[0] += 1

    http: httpx.AsyncClient = app.state.cds.gateway.http
    http.event_hooks = {"request": [count], "response": []}

    async def stats() -> dict[str, Any]:
        return {"fhirRequests": fhir_requests[0], "patches": patches}

    app.add_api_route("/bench/stats", stats, methods=["GET"])
    return app


def main(argv: list[str] | None = None) -> int:
    import os

    _apply_overlay()
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("kind", choices=("service", "floor"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--patch", action="append", default=[], choices=sorted(PATCHES))
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ["BENCH_KIND"] = args.kind
    os.environ["BENCH_PATCHES"] = ",".join(args.patch)
    uvicorn.run("bench.serve:app_factory", factory=True, **uvicorn_options(args.port, args.workers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
