"""The benchmark harness: ``python -m bench [--quick] [--skip-fetch] [--out DIR]``.

Measures in one run, against floors measured in the same run on the same machine:

1. prefetch path: hook latency (p50/p95/p99) of the service as shipped (a uvicorn subprocess
   prepared like `cds.service.serving.serve`, real HTTP over loopback, the EHR's JWT verified; and the
   same without authentication, so the JWT's cost stays visible) for a non-lupus patient, a typical
   SLE record and records of 1,000 / 2,500 / 5,000 Observations, against a bare FastAPI endpoint
   under the same uvicorn configuration that decodes the same body and returns a fixed card;
2. fetch path: the same hook without prefetch, ``fhirServer`` = a local HAPI FHIR server
   (`sandbox.HapiSandbox`), against exactly the queries the service sends (its fallback
   Observation search is dated from the trial's cut-off) issued directly in parallel with one
   pooled httpx client; FHIR requests per hook are counted and the two query sets compared;
3. scaling: engine time and peak memory per patient at 100 / 1,000 / 10,000 Observations;
4. concurrency: throughput and latency with 1, 8 and 32 concurrent EHR clients.

Every loop is bounded in count and in time; everything is loopback. Writes ``report.json``,
``report.md`` and ``latency_vs_size.png`` to ``bench/out/``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from bench import records
from bench.ehr_auth import EhrIdentity
from bench.load import Stats, post_load, timed
from bench.serve import AS_OF, REPO
from bench.servers import AppProcess

if TYPE_CHECKING:
    from datetime import date

    from bench.fetch import FloorResult
    from cds.fhir.gateway import GatewayLimits
    from cds.service.prefetch import PrefetchQuery

OUT = REPO / "bench" / "out"


@dataclass(frozen=True)
class Plan:
    quick: bool

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    @property
    def cell_seconds(self) -> float:
        return 6.0 if self.quick else 20.0


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# Machine and provenance


def machine() -> dict[str, Any]:
    import importlib.metadata as md
    import importlib.util

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    versions: dict[str, str | None] = {}
    for name in ("fastapi", "starlette", "uvicorn", "httpx", "pydantic", "fhir.resources"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "ram_gb": _ram_gb(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "uvicorn_loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "uvicorn_http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "versions": versions,
    }


def _ram_gb() -> float | None:
    try:
        import psutil  # type: ignore[import-untyped]

        return round(float(psutil.virtual_memory().total) / 2**30, 1)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------------------------
# Records and requests


@dataclass(frozen=True)
class Case:
    name: str
    label: str
    resources: list[dict[str, Any]]
    cards: int  # cards the service answers with prefetch


def cases(plan: Plan) -> list[Case]:
    return [
        Case("non-lupus", "non-lupus patient", records.non_lupus(), 0),
        Case("typical", "typical SLE record", records.typical(), 1),
        Case("obs-1000", "SLE, 1,000 Observations", records.grown(1000), 1),
        Case("obs-2500", "SLE, 2,500 Observations", records.grown(2500), 1),
        Case("heavy", "SLE, 5,000 Observations", records.grown(5000), 1),
    ]


def hook_body(case: Case, *, prefetch: bool, fhir_server: str | None = None, patient_id: str | None = None) -> bytes:
    from cds.service.demo import build_request

    resources = records.with_id(case.resources, patient_id) if patient_id else case.resources
    request = build_request(records.bundle(resources), hook_instance="d2c7a3b0-0000-4000-8000-00000000b0b0")
    if not prefetch:
        request.pop("prefetch", None)
    if fhir_server is None:
        request.pop("fhirServer", None)
    else:
        request["fhirServer"] = fhir_server
    return json.dumps(request).encode()


def request_resources(body: bytes) -> list[dict[str, Any]]:
    """The resources a prefetch request carries (what the engine gets)."""
    from cds.fhir.gateway import bundle_resources

    prefetch = json.loads(body)["prefetch"]
    out: list[dict[str, Any]] = []
    for value in prefetch.values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            out += bundle_resources(value)
        elif isinstance(value, dict):
            out.append(value)
    return out


def cards_check(expected: int) -> Callable[[httpx.Response], None]:
    def check(r: httpx.Response) -> None:
        got = len(r.json().get("cards", []))
        if got != expected:
            raise RuntimeError(f"expected {expected} card(s), got {got}")

    return check


# --------------------------------------------------------------------------------------------
# 1. Prefetch path


def bench_prefetch(plan: Plan, ehr: EhrIdentity, env: dict[str, str], all_cases: list[Case]) -> dict[str, Any]:
    bodies = {c.name: hook_body(c, prefetch=True) for c in all_cases}
    sizes = {c.name: len(request_resources(bodies[c.name])) for c in all_cases}
    counts = {
        "non-lupus": (300, 60),
        "typical": (300, 60),
        "obs-1000": (80, 20),
        "obs-2500": (40, 12),
        "heavy": (30, 10),
    }
    variants: list[tuple[str, str, bool]] = [
        ("floor", "floor", False),
        ("service", "service", True),
        ("service, no auth", "service", False),
    ]
    results: dict[str, dict[str, Any]] = {}
    server_side: dict[str, dict[str, Any]] = {}
    for label, kind, auth in variants:
        run_env = {**env, **(ehr.env() if auth else {"CDS_AUTH_REQUIRED": "false"})}
        with AppProcess(kind, env=run_env, name=label.replace(", ", "-").replace(" ", "-")) as app:
            results[label] = {}
            for c in all_cases:
                n = plan.n(*counts[c.name])
                _, offset = app.hook_log()
                tokens = ehr.tokens(app.hook_url, n + 3) if auth else None
                check = cards_check(c.cards) if kind == "service" else None
                stats = asyncio.run(
                    post_load(
                        app.hook_url,
                        bodies[c.name],
                        requests=n,
                        max_seconds=plan.cell_seconds,
                        check=check,
                        tokens=tokens,
                    )
                )
                results[label][c.name] = stats.to_json()
                if kind == "service":
                    server_side.setdefault(label, {})[c.name] = server_side_medians(app.hook_log(offset)[0])
                log(f"prefetch {label:18} {c.name:10} p50 {stats.p50_ms:8.2f} ms  p95 {stats.p95_ms:8.2f} ms")
    return {
        "requests": {c.name: {"resources": sizes[c.name], "bytes": len(bodies[c.name])} for c in all_cases},
        "results": results,
        "server_side_median_ms": server_side,
        "ratios": {
            label: {
                c.name: {
                    "p50": round(results[label][c.name]["p50_ms"] / results["floor"][c.name]["p50_ms"], 2),
                    "p95": round(results[label][c.name]["p95_ms"] / results["floor"][c.name]["p95_ms"], 2),
                }
                for c in all_cases
            }
            for label in results
            if label != "floor"
        },
    }


def server_side_medians(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the service's own timings over its "hook call" log records (a fast-path call
    has no evaluateMs: the engine did not run), and the share of fast-path calls."""
    out: dict[str, Any] = {
        key: round(statistics.median(float(r[key]) for r in rows), 2)
        for key in ("fetchMs", "evaluateMs", "totalMs")
        if rows and all(key in r for r in rows)
    }
    out["fastPath"] = round(sum(1 for r in rows if r.get("fastPath")) / len(rows), 2) if rows else None
    return out


def bench_auth(plan: Plan, ehr: EhrIdentity) -> dict[str, Any]:
    """In process: the service's JWT check of one hook call (ES384 verification and claims)."""
    try:
        from cds.config import Settings
        from cds.service.auth import AuthConfig, JwtAuthenticator

        settings = Settings(
            auth_required=True, auth_issuers=[ehr.env()["CDS_AUTH_ISSUERS"]], auth_jwks_file=str(ehr.jwks_file)
        )
        authenticator = JwtAuthenticator(AuthConfig.from_settings(settings))
    except Exception as exc:  # the auth module belongs to the service and may change shape
        return {"unavailable": f"{type(exc).__name__}: {exc}"[:300]}
    audience = "http://127.0.0.1:8080/cds-services/nct04582136-prescreen"
    n = plan.n(200, 50)
    tokens = [f"Bearer {ehr.token(audience)}" for _ in range(n + 5)]

    async def run() -> list[float]:
        times = []
        for i, token in enumerate(tokens):
            t = time.perf_counter()
            await authenticator.authenticate(token, audience)
            if i >= 5:
                times.append(time.perf_counter() - t)
        await authenticator.aclose()
        return times

    times = asyncio.run(run())
    out = {"verify_ms_median": round(statistics.median(times) * 1000, 3), "n": len(times)}
    log(f"auth: JWT check {out['verify_ms_median']} ms (median of {len(times)})")
    return out


def bench_components(plan: Plan, all_cases: list[Case]) -> dict[str, Any]:
    """In-process breakdown of the prefetch path per record: where the service's time goes. Like the
    shipped service (`bench.serve.ship`), everything alive before a measured step (modules, schemas,
    the UCUM registry, and here the benchmark's own records and the step's inputs) is moved out of
    the collector's generations first, so that collections scan only what the step allocates, as in
    the service (without this, the 3.7 MB body's json.loads took 25-130 ms depending on what else
    the benchmark process held)."""
    import contextlib
    import importlib

    from bench.serve import ship

    for module in ("cds.engine", "cds.service.models", "cds.trials.nct04582136", "cds.fhir.safejson", "cards.render"):
        with contextlib.suppress(ImportError):  # older service versions
            importlib.import_module(module)
    ship()
    try:
        return _components(plan, all_cases)
    finally:
        gc.unfreeze()


def _components(plan: Plan, all_cases: list[Case]) -> dict[str, Any]:
    from cds.engine import evaluate, units
    from cds.service.models import parse_request
    from cds.trials.nct04582136 import TRIAL

    units.preload()
    loads_bounded: Callable[..., Any] | None
    try:
        from cds.fhir.safejson import loads_bounded
    except ImportError:  # older service versions decode with json.loads
        loads_bounded = None

    def median_ms(fn: Callable[[], Any], reps: int) -> float:
        fn()
        times = []
        deadline = time.perf_counter() + 10
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
            if time.perf_counter() > deadline:
                break
        return round(statistics.median(times) * 1000, 3)

    out: dict[str, Any] = {}
    for c in all_cases:
        body = hook_body(c, prefetch=True)
        resources = request_resources(body)
        pid = records.patient_id(c.resources)
        searched = {r["resourceType"] for r in resources} | {
            "Patient", "Condition", "Observation", "MedicationStatement", "MedicationRequest",
            "MedicationAdministration", "Procedure", "AllergyIntolerance",
        }  # fmt: skip
        reps = plan.n(20, 5) if len(resources) > 2000 else plan.n(60, 15)
        gc.collect()
        gc.freeze()  # this record's inputs too: a step's collections scan only what the step allocates
        row = {
            "json.loads": median_ms(lambda b=body: json.loads(b), reps),  # type: ignore[misc]
            "parse_request": median_ms(lambda b=body: parse_request(json.loads(b)), reps),  # type: ignore[misc]
            "engine": median_ms(
                lambda r=resources, p=pid, s=searched: evaluate(r, patient_id=p, as_of=AS_OF, searched=s),  # type: ignore[misc]
                reps,
            ),
            "fast_path_check": median_ms(
                lambda r=resources, p=pid, s=searched: TRIAL.certainly_excluded_without_evaluation(  # type: ignore[misc]
                    r, patient_id=p, searched=s
                ),
                reps,
            ),
        }
        try:
            from cards.models import CdsResponse
            from cards.render import render_cards

            report = evaluate(resources, patient_id=pid, as_of=AS_OF, searched=searched)

            def render(rep: Any = report) -> bytes:
                return json.dumps(CdsResponse(cards=render_cards(rep, TRIAL)).to_json()).encode()

            row["cards+json"] = median_ms(render, reps)
        except Exception as exc:  # the card renderer belongs to the service and may change shape
            log(f"components: cards not measured ({type(exc).__name__})")
        if loads_bounded is not None:
            row["safejson.loads_bounded"] = median_ms(lambda b=body: loads_bounded(b), reps)  # type: ignore[misc]
        out[c.name] = row
        log(f"components {c.name:10} {row}")
    return out


# --------------------------------------------------------------------------------------------
# 2. Fetch path


def bench_fetch(plan: Plan, ehr: EhrIdentity, env: dict[str, str], all_cases: list[Case]) -> dict[str, Any]:
    from bench.fetch import first_pages
    from cds.config import Settings
    from cds.fhir.gateway import GatewayLimits
    from cds.service.prefetch import queries_for
    from cds.trials.nct04582136 import TRIAL
    from sandbox import HapiSandbox, free_port, load_bundles

    chosen = [c for c in all_cases if c.name in ("non-lupus", "typical", "heavy")]
    ids = {c.name: f"bench-{c.name}" for c in chosen}
    counts = {"non-lupus": (60, 10), "typical": (60, 10), "heavy": (30, 6)}
    limits = GatewayLimits.from_settings(Settings())
    queries = queries_for(TRIAL)  # the service's (`ServiceState.queries`)
    since = TRIAL.observation_cutoff(AS_OF)  # what the service passes to gather_data (CDS_AS_OF = AS_OF)
    out: dict[str, Any] = {
        "limits": {"page_size": limits.page_size, "max_pages": limits.max_pages},
        "observation_since": since.isoformat(),
    }
    started = time.monotonic()
    with HapiSandbox(port=free_port()) as fhir:
        out["hapi_startup_s"] = round(time.monotonic() - started, 1)
        t = time.monotonic()
        for c in chosen:
            load_bundles(fhir.base_url, [records.bundle(records.with_id(c.resources, ids[c.name]))])
        out["hapi_load_s"] = round(time.monotonic() - t, 1)
        log(f"HAPI up in {out['hapi_startup_s']} s, loaded in {out['hapi_load_s']} s at {fhir.base_url}")
        fetch_env = {**env, **ehr.env(), "CDS_FHIR_ALLOWED_SERVERS": fhir.base_url}
        results: dict[str, Any] = {"service": {}, "floor": {}}
        same_queries: dict[str, Any] = {}
        server_side: dict[str, Any] = {}
        with AppProcess("service", env=fetch_env, name="service-fetch") as app:
            bodies = {
                c.name: hook_body(c, prefetch=False, fhir_server=fhir.base_url, patient_id=ids[c.name]) for c in chosen
            }
            out["warmup"] = asyncio.run(
                _warm_fhir(app, ehr, fhir.base_url, bodies, ids, queries, since, limits, plan.n(120, 20), plan)
            )
            log(f"fetch: HAPI warmed up with {out['warmup']['rounds']} rounds in {out['warmup']['seconds']} s")
            for c in chosen:
                n = plan.n(*counts[c.name])
                body = bodies[c.name]
                warm = 3
                before = app.fhir_requests()
                _, offset = app.hook_log()
                stats = asyncio.run(
                    post_load(
                        app.hook_url,
                        body,
                        requests=n,
                        warmup=warm,
                        max_seconds=plan.cell_seconds * 2,
                        check=cards_check(c.cards),
                        tokens=ehr.tokens(app.hook_url, n + warm),
                    )
                )
                per_hook = (app.fhir_requests() - before) / (stats.n + warm)
                server_side[c.name] = server_side_medians(app.hook_log(offset)[0])
                service_urls = _one_hook_urls(app, body, ehr)
                if c.name == "typical":
                    out["observation_query"] = next(
                        (u for u in service_urls if "/Observation?" in u and "_getpages" not in u), None
                    )
                floor_stats, floor_result = asyncio.run(
                    _fetch_floor(fhir.base_url, queries, ids[c.name], since, limits, n, plan)
                )
                same = first_pages(service_urls) == first_pages(floor_result.urls)
                same_queries[c.name] = same
                if not same:
                    same_queries[f"{c.name} (urls)"] = {"service": service_urls, "floor": floor_result.urls}
                results["service"][c.name] = {**stats.to_json(), "fhir_requests_per_hook": round(per_hook, 2)}
                results["floor"][c.name] = {
                    **floor_stats.to_json(),
                    "fhir_requests_per_hook": floor_result.requests,
                    "resources": floor_result.resources,
                    "truncated": floor_result.truncated,
                }
                log(
                    f"fetch {c.name:10} service p50 {stats.p50_ms:8.1f} ms p95 {stats.p95_ms:8.1f} ms "
                    f"({per_hook:.1f} req) | floor p50 {floor_stats.p50_ms:8.1f} ms p95 {floor_stats.p95_ms:8.1f} "
                    f"({floor_result.requests} req, {floor_result.resources} resources"
                    f"{', truncated' if floor_result.truncated else ''}) | same queries: {same}"
                )
    out["results"] = results
    out["same_queries"] = same_queries
    out["server_side_median_ms"] = server_side
    out["ratios"] = {"service": {c: _ratio(results["service"][c], results["floor"][c]) for c in results["service"]}}
    return out


async def _warm_fhir(
    app: AppProcess,
    ehr: EhrIdentity,
    base: str,
    bodies: dict[str, bytes],
    ids: dict[str, str],
    queries: tuple[PrefetchQuery, ...],
    since: date,
    limits: GatewayLimits,
    rounds: int,
    plan: Plan,
) -> dict[str, Any]:
    """Warm HAPI (its JIT and caches: the first ~100 searches are markedly slower) and both clients
    before anything is measured, so neither the service nor the floor pays for a cold server: rounds
    of one floor query set and one service hook per record, alternating, bounded in count and time."""
    from bench.fetch import direct_queries, floor_client

    started = time.perf_counter()
    deadline = started + (10 if plan.quick else 45)
    done = 0
    async with floor_client(limits) as http, httpx.AsyncClient(timeout=60.0, trust_env=False) as client:
        while done < rounds and time.perf_counter() < deadline:
            for name, body in bodies.items():
                await direct_queries(http, base, queries, ids[name], since, limits)
                headers = {"Content-Type": "application/json", "Authorization": f"Bearer {ehr.token(app.hook_url)}"}
                r = await client.post(app.hook_url, content=body, headers=headers)
                r.raise_for_status()
            done += 1
    return {"rounds": done, "seconds": round(time.perf_counter() - started, 1)}


def _one_hook_urls(app: AppProcess, body: bytes, ehr: EhrIdentity) -> list[str]:
    """The FHIR request URLs of one more hook call (the service's gateway records them)."""
    from bench.serve import RECENT_URLS

    before, _ = app.fhir_stats()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {ehr.token(app.hook_url)}"}
    r = httpx.post(app.hook_url, content=body, headers=headers, timeout=60.0, trust_env=False)
    r.raise_for_status()
    after, urls = app.fhir_stats()
    sent = after - before
    if sent > RECENT_URLS:
        raise RuntimeError(f"one hook sent {sent} FHIR requests, more than the {RECENT_URLS} kept")
    return urls[len(urls) - sent :] if sent else []


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    return {"p50": round(a["p50_ms"] / b["p50_ms"], 2), "p95": round(a["p95_ms"] / b["p95_ms"], 2)}


async def _fetch_floor(
    base: str,
    queries: tuple[PrefetchQuery, ...],
    patient_id: str,
    since: date,
    limits: GatewayLimits,
    n: int,
    plan: Plan,
) -> tuple[Stats, FloorResult]:
    from bench.fetch import direct_queries, floor_client

    last: list[FloorResult] = []
    async with floor_client(limits) as http:

        async def one() -> None:
            last[:] = [await direct_queries(http, base, queries, patient_id, since, limits)]

        for _ in range(3):
            await one()
        stats = await timed(one, concurrency=1, requests=n, max_seconds=plan.cell_seconds * 2)
    return stats, last[0]


# --------------------------------------------------------------------------------------------
# 3. Scaling (engine, in process)


def bench_scaling(plan: Plan) -> dict[str, Any]:
    from cds.engine import evaluate, units

    units.preload()
    sizes = (100, 1000, 10000)
    shapes = {
        "history": (7.0, "weekly panels going back in time (the record grows with history)"),
        "dense": (0.0, "every Observation inside the 30-day window (worst case: all are read)"),
    }
    out: dict[str, Any] = {"sizes": list(sizes), "shapes": {}}
    for shape, (spacing, about) in shapes.items():
        rows = []
        for n in sizes:
            rec = records.grown(n, spacing)
            pid = records.patient_id(rec)
            report = evaluate(rec, patient_id=pid, as_of=AS_OF)
            reps = plan.n(5, 2) if n >= 10000 else plan.n(15, 4)
            times = []
            deadline = time.perf_counter() + (8 if plan.quick else 25)
            for _ in range(reps):
                gc.collect()
                t = time.perf_counter()
                evaluate(rec, patient_id=pid, as_of=AS_OF)
                times.append(time.perf_counter() - t)
                if time.perf_counter() > deadline:
                    break
            gc.collect()
            tracemalloc.start()
            evaluate(rec, patient_id=pid, as_of=AS_OF)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            ms = statistics.median(times) * 1000
            gc_free_ms = None
            if n == sizes[-1]:  # how much of the largest run is the cyclic garbage collector's
                gc.collect()
                gc.disable()
                try:
                    t = time.perf_counter()
                    evaluate(rec, patient_id=pid, as_of=AS_OF)
                    gc_free_ms = round((time.perf_counter() - t) * 1000, 2)
                finally:
                    gc.enable()
            rows.append(
                {
                    "observations": n,
                    "resources": len(rec),
                    "engine_ms": round(ms, 2),
                    "us_per_resource": round(ms * 1000 / len(rec), 2),
                    "peak_mb": round(peak / 2**20, 2),
                    "verdict": report.verdict.value,
                    "runs": len(times),
                    "engine_ms_gc_disabled": gc_free_ms,
                }
            )
            log(f"scaling {shape:8} {n:6} obs: {ms:9.2f} ms, peak {peak / 2**20:7.1f} MB, {report.verdict.value}")
        out["shapes"][shape] = {"about": about, "rows": rows, "fit": _fit(rows)}
    return out


def _fit(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Least squares t = a + b*n over the sizes, and the log-log exponent between the two largest."""
    import math

    xs = [float(r["resources"]) for r in rows]
    ys = [float(r["engine_ms"]) for r in rows]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    exponent = math.log(ys[-1] / ys[-2]) / math.log(xs[-1] / xs[-2])
    gc_free = rows[-1].get("engine_ms_gc_disabled")
    if gc_free:
        gc_free_exponent = math.log(float(gc_free) / ys[-2]) / math.log(xs[-1] / xs[-2])
    return {
        "loglog_exponent_gc_disabled": round(gc_free_exponent, 2) if gc_free else None,
        "slope_us_per_resource": round(b * 1000, 2),
        "intercept_ms": round(a, 2),
        "loglog_exponent": round(exponent, 2),
    }


# --------------------------------------------------------------------------------------------
# 4. Concurrency


def bench_concurrency(plan: Plan, ehr: EhrIdentity, env: dict[str, str], typical: Case) -> dict[str, Any]:
    body = hook_body(typical, prefetch=True)
    levels = (1, 8, 32)
    counts = {1: (150, 40), 8: (400, 100), 32: (600, 160)}
    results: dict[str, Any] = {}
    for label, kind, auth, workers in (
        ("floor", "floor", False, 1),
        ("service", "service", True, 1),
    ):
        run_env = {**env, **(ehr.env() if auth else {"CDS_AUTH_REQUIRED": "false"})}
        with AppProcess(kind, env=run_env, workers=workers, name=f"{label}-concurrency") as app:
            results[label] = {}
            for c in levels:
                n = plan.n(*counts[c])
                stats = asyncio.run(
                    post_load(
                        app.hook_url,
                        body,
                        concurrency=c,
                        requests=n,
                        warmup=3,
                        max_seconds=plan.cell_seconds,
                        tokens=ehr.tokens(app.hook_url, n + 3) if auth else None,
                    )
                )
                results[label][str(c)] = stats.to_json()
                log(
                    f"concurrency {label:8} {c:3} clients: {stats.throughput_rps:7.1f} req/s, "
                    f"p50 {stats.p50_ms:7.1f} ms, p95 {stats.p95_ms:7.1f} ms"
                )
    return {"record": typical.name, "levels": list(levels), "results": results}


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests per cell (about 3 minutes)")
    parser.add_argument("--skip-fetch", action="store_true", help="skip the fetch path (no Java/HAPI needed)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    plan = Plan(quick=args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report: dict[str, Any] = {"machine": machine(), "mode": "quick" if plan.quick else "full", "as_of": str(AS_OF)}
    report["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    if report["loadavg_at_start"][0] > 0.5:
        log(f"warning: the machine is busy (load average {report['loadavg_at_start']}): figures will be noisy")
    log(f"machine: {report['machine']['cores']} cores, {report['machine']['ram_gb']} GB, {report['machine']['cpu']}")
    all_cases = cases(plan)
    with tempfile.TemporaryDirectory(prefix="cds-bench-") as tmp:
        ehr = EhrIdentity(Path(tmp))
        env = {
            "CDS_AS_OF": str(AS_OF),
            "CDS_DATABASE_URL": f"sqlite:///{tmp}/feedback.sqlite3",
            "CDS_LOG_LEVEL": "INFO",
            "CDS_FHIR_ALLOWED_SERVERS": "",
        }
        report["prefetch"] = bench_prefetch(plan, ehr, env, all_cases)
        report["components"] = bench_components(plan, all_cases)
        report["auth"] = bench_auth(plan, ehr)
        report["scaling"] = bench_scaling(plan)
        report["concurrency"] = bench_concurrency(plan, ehr, env, all_cases[1])
        if args.skip_fetch:
            report["fetch"] = {"skipped": "--skip-fetch"}
        else:
            try:
                report["fetch"] = bench_fetch(plan, ehr, env, all_cases)
            except Exception as exc:  # a missing JDK/Maven must not lose the other sections
                report["fetch"] = {"skipped": f"{type(exc).__name__}: {exc}"[:2000]}
                log(f"fetch path skipped: {report['fetch']['skipped']}")
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]

    from bench.report import write_report

    paths = write_report(report, args.out)
    log(f"done in {report['duration_s']} s: " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
