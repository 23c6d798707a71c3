"""Scaling with worker processes, memory under big concurrent bodies, the decoder's cost.

    python -m bench.scale            # about 6 minutes on 2 cores
    python -m bench.scale --quick    # fewer requests per cell

Measured in one run, against the floor app (`bench.serve`: a bare FastAPI route that
``json.loads`` the body and returns a fixed card) under the same uvicorn configuration and the
same worker counts:

1. workers: hooks/s and p50/p95 of the typical SLE record with 1, 2 and 4 uvicorn workers (8
   concurrent EHR clients, every call with its own ES384 JWT, replay ids in the database), and the
   non-lupus fast path at 2 workers. The database is a throw-away PostgreSQL (fsync on) when the
   server binaries are present (`sandbox.postgres`), else a SQLite file. The load generator runs
   in this process and shares the machine's cores: the floor's own scaling shows what the machine
   allows, and the target is a ratio of gains (service 1->2 workers >= 0.9x the floor's).
2. memory: 8 concurrent hook calls each carrying a 20,000-Observation prefetch (about 15 MB),
   against ``cds serve --workers N`` itself (N = 1, 2; its own parent process) with the shipped
   limits; peak RSS of the server's process tree (sampled every 20 ms), every answer's status (200,
   or 503 with Retry-After) and latency against the request deadline + 1 s.
3. decoder: `cds.fhir.safejson.loads_bounded` against `json.loads` on the same bytes, per record.

Every loop is bounded in count and time; everything is on 127.0.0.1. Writes ``scale.json`` and
``scale.md`` to ``bench/out/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench import records
from bench.ehr_auth import EhrIdentity
from bench.load import BadResponse, post_load
from bench.run import OUT, Case, cards_check, hook_body, log, machine
from bench.serve import AS_OF
from bench.servers import AppProcess

WORKERS = (1, 2, 4)
CLIENTS = 8
MEMORY_ROUNDS = 3  # bursts of 8 big calls against 2 workers (see bench_memory)
START_TIMEOUT = 240.0  # seconds for every worker to answer /health (slow on a loaded machine)


class _Stopper:
    def __init__(self, app: AppProcess) -> None:
        self.app = app

    def close(self) -> None:
        self.app.stop()


@contextmanager
def database_url(tmp: str) -> Iterator[tuple[str, str]]:
    """(URL, label) of the service's database for the run: a real PostgreSQL when possible."""
    from sandbox.postgres import PostgresUnavailable, TempPostgres

    try:
        server = TempPostgres(durable=True).start()
    except PostgresUnavailable as exc:
        log(f"PostgreSQL unavailable ({exc}): SQLite file instead")
        yield f"sqlite:///{tmp}/bench.sqlite3", "SQLite file"
        return
    try:
        yield server.create_database("bench"), "PostgreSQL (throw-away cluster, fsync on)"
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# 1. workers


def _failed(reason: str) -> dict[str, Any]:
    """A cell whose load run was refused (a non-200 answer stops it): no figures, the reason kept."""
    nan = float("nan")
    return {"error": reason[:300], "throughput_rps": nan, "p50_ms": nan, "p95_ms": nan, "n": 0}


def bench_workers(quick: bool, ehr: EhrIdentity, env: dict[str, str]) -> dict[str, Any]:
    typical = Case("typical", "typical SLE record", records.typical(), 1)
    non_lupus = Case("non-lupus", "non-lupus patient", records.non_lupus(), 0)
    bodies = {c.name: hook_body(c, prefetch=True) for c in (typical, non_lupus)}
    n = 150 if quick else 400
    seconds = 8.0 if quick else 20.0
    results: dict[str, dict[str, Any]] = {"floor": {}, "service": {}}
    for workers in WORKERS:
        for kind in ("floor", "service"):
            run_env = {**env, **(ehr.env() if kind == "service" else {"CDS_AUTH_REQUIRED": "false"})}
            app = AppProcess(kind, env=run_env, workers=workers, name=f"scale-{kind}")
            app.start(timeout=START_TIMEOUT)
            try:
                cells = [typical] + ([non_lupus] if workers == 2 else [])
                for case in cells:
                    check = cards_check(case.cards) if kind == "service" else None
                    tokens = ehr.tokens(app.hook_url, n + 3 * CLIENTS + 3) if kind == "service" else None
                    try:
                        # warm every worker: a few rounds of concurrent calls before measuring
                        asyncio.run(
                            post_load(
                                app.hook_url,
                                bodies[case.name],
                                concurrency=CLIENTS,
                                requests=3 * CLIENTS,
                                warmup=0,
                                max_seconds=seconds,
                                check=check,
                                tokens=tokens,
                            )
                        )
                        stats = asyncio.run(
                            post_load(
                                app.hook_url,
                                bodies[case.name],
                                concurrency=CLIENTS,
                                requests=n,
                                warmup=3,
                                max_seconds=seconds,
                                check=check,
                                tokens=tokens,
                            )
                        )
                    except BadResponse as exc:  # e.g. 503 on a machine too loaded to answer in time
                        log(f"workers {workers} {kind:7} {case.name:9} FAILED: {exc}")
                        results[kind].setdefault(case.name, {})[str(workers)] = _failed(str(exc))
                        continue
                    results[kind].setdefault(case.name, {})[str(workers)] = stats.to_json()
                    log(
                        f"workers {workers} {kind:7} {case.name:9} {stats.throughput_rps:7.1f} hooks/s  "
                        f"p50 {stats.p50_ms:7.1f} ms  p95 {stats.p95_ms:7.1f} ms  (n={stats.n})"
                    )
            finally:
                app.stop()

    def rps(kind: str, case: str, workers: int) -> float:
        return float(results[kind][case][str(workers)]["throughput_rps"])

    gains = {
        kind: {str(w): round(rps(kind, "typical", w) / rps(kind, "typical", 1), 2) for w in WORKERS}
        for kind in ("floor", "service")
    }
    return {
        "clients": CLIENTS,
        "results": results,
        "gain_vs_1_worker": gains,
        "gain_ratio_1_to_2": round(gains["service"]["2"] / gains["floor"]["2"], 2),
        "non_lupus_2_workers_vs_floor": round(rps("service", "non-lupus", 2) / rps("floor", "non-lupus", 2), 2),
    }


# --------------------------------------------------------------------------------------------
# 2. memory under 8 concurrent 15 MB bodies


class RssSampler:
    """Peak RSS (bytes) of a process and its children, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sizes(self) -> dict[int, int]:
        """RSS (bytes) of each process of the tree."""
        import psutil  # type: ignore[import-untyped]

        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return {}
        sizes = {}
        for proc in procs:
            try:
                sizes[proc.pid] = int(proc.memory_info().rss)
            except psutil.Error:
                continue
        return sizes

    def _total(self) -> int:
        return sum(self._sizes().values())

    def _run(self) -> None:
        while not self._stop.is_set():
            sizes = self._sizes()
            total = sum(sizes.values())
            if total > self.peak:
                self.peak = total
                self.at_peak.clear()
                self.at_peak.update(sizes)  # each process's RSS when the tree peaked
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.at_peak: dict[int, int] = {}
        self.idle = self._sizes()
        self.baseline = sum(self.idle.values())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


async def _big_calls(url: str, body: bytes, tokens: list[str]) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=len(tokens), max_keepalive_connections=len(tokens))
    async with httpx.AsyncClient(timeout=120.0, limits=limits, trust_env=False) as client:

        async def one(token: str) -> dict[str, Any]:
            started = time.perf_counter()
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
            try:
                r = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                return {"status": None, "error": type(exc).__name__, "seconds": time.perf_counter() - started}
            return {
                "status": r.status_code,
                "retryAfter": r.headers.get("Retry-After"),
                "cards": len(r.json().get("cards", [])) if r.status_code == 200 else None,
                "seconds": round(time.perf_counter() - started, 3),
            }

        return list(await asyncio.gather(*(one(t) for t in tokens)))


def bench_memory(ehr: EhrIdentity, env: dict[str, str], observations: int = 20_000) -> dict[str, Any]:
    from cds.config import Settings

    case = Case(f"obs-{observations}", f"SLE, {observations:,} Observations", records.grown(observations), 1)
    body = hook_body(case, prefetch=True)
    deadline = Settings().request_deadline
    out: dict[str, Any] = {"bodyBytes": len(body), "concurrent": 8, "deadlineSeconds": deadline}
    for workers in (1, 2):
        app = AppProcess("service", env={**env, **ehr.env()}, workers=workers, name="scale-memory", shipped=True)
        app.start(timeout=START_TIMEOUT)
        with contextlib.closing(_Stopper(app)):
            pid = app._proc.pid if app._proc is not None else 0
            tokens = ehr.tokens(app.hook_url, 1 + 8 * MEMORY_ROUNDS)
            single = asyncio.run(_big_calls(app.hook_url, body, [next(tokens)]))[0]  # alone: its own cost
            rounds = []
            # The kernel hands the 8 connections to whichever worker accepts first: one round may
            # land on one worker only. Several rounds; the figure is the highest peak, and each
            # round says how many processes were busy (RSS over idle by > 40 MB) at its peak.
            for _ in range(MEMORY_ROUNDS if workers > 1 else 1):
                with RssSampler(pid) as sampler:
                    answers = asyncio.run(_big_calls(app.hook_url, body, [next(tokens) for _ in range(8)]))
                busy = sum(1 for p, rss in sampler.at_peak.items() if rss - sampler.idle.get(p, rss) > 40 * 2**20)
                rounds.append((sampler, answers, busy))
            sampler, answers, busy = max(rounds, key=lambda r: r[0].peak)
            every = [a for _, round_answers, _ in rounds for a in round_answers]
            statuses = [a["status"] for a in answers]
            ok = all(a["status"] == 200 or (a["status"] == 503 and a["retryAfter"] is not None) for a in every)
            slowest = max(a["seconds"] for a in every)
            cell = {
                "single": single,
                "baselineRssMB": round(sampler.baseline / 2**20, 1),
                "peakRssMB": round(sampler.peak / 2**20, 1),
                "busyAtPeak": busy,
                "rounds": [
                    {
                        "peakRssMB": round(s.peak / 2**20, 1),
                        "busyAtPeak": b,
                        "statuses": [a["status"] for a in round_answers],
                    }
                    for s, round_answers, b in rounds
                ],
                "statuses": statuses,
                "allAnswered": ok,
                "slowestSeconds": round(slowest, 2),
                "withinDeadlinePlus1s": slowest <= deadline + 1.0,
                "answers": answers,
            }
            out[f"{workers}w"] = cell
            log(
                f"memory {workers}w: 8 x {len(body) / 1e6:.1f} MB: peak RSS {cell['peakRssMB']} MB "
                f"(idle {cell['baselineRssMB']} MB, {busy} process(es) busy at the peak), statuses {statuses}, "
                f"slowest {slowest:.2f} s (all rounds); alone {single['status']} in {single['seconds']} s; "
                f"rounds {[(r['peakRssMB'], r['busyAtPeak']) for r in cell['rounds']]}"
            )
    return out


# --------------------------------------------------------------------------------------------
# 3. decoder


def bench_decoder(quick: bool) -> dict[str, Any]:
    from cds.fhir.safejson import loads_bounded

    cases = [
        ("non-lupus", records.non_lupus()),
        ("typical", records.typical()),
        ("obs-1000", records.grown(1000)),
        ("obs-2500", records.grown(2500)),
        ("heavy", records.grown(5000)),
        ("obs-20000", records.grown(20_000)),
    ]
    out: dict[str, Any] = {}
    for name, resources in cases:
        body = hook_body(Case(name, name, resources, 1), prefetch=True)
        reps = max(5, min(200, int(20e6 / len(body))) // (4 if quick else 1))
        json.loads(body)
        loads_bounded(body)
        plain_times: list[float] = []
        bounded_times: list[float] = []
        for _ in range(reps):  # interleaved, so machine noise hits both alike
            t = time.perf_counter()
            json.loads(body)
            plain_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            loads_bounded(body)
            bounded_times.append(time.perf_counter() - t)
        base = statistics.median(plain_times) * 1000
        bounded = statistics.median(bounded_times) * 1000
        out[name] = {
            "bytes": len(body),
            "json.loads_ms": round(base, 3),
            "loads_bounded_ms": round(bounded, 3),
            "ratio": round(bounded / base, 2),
        }
        log(f"decoder {name:9} {len(body) / 1e6:6.2f} MB  json.loads {base:8.2f} ms  bounded {bounded:8.2f} ms")
    return out


# --------------------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    w = report["workers"]
    lines = [
        "# Scaling, memory and decoder (python -m bench.scale)",
        "",
        f"Run {m['date']} on {m['cores']} cores ({m['cpu']}), Python {m['python']}, commit "
        f"{m['git_commit'][:7]}; load average at start {report['loadavg_start']}, at end {report['loadavg_end']}. "
        f"Database: {report['database']}. {w['clients']} concurrent clients, the load generator on the same cores.",
        "",
        "## Workers (typical SLE record; service with the EHR's JWT on every call)",
        "",
        "| workers | floor hooks/s | floor p50 / p95 ms | service hooks/s | service p50 / p95 ms "
        "| service gain | floor gain |",
        "|---|---|---|---|---|---|---|",
    ]
    for workers in WORKERS:
        f = w["results"]["floor"]["typical"][str(workers)]
        s = w["results"]["service"]["typical"][str(workers)]
        lines.append(
            f"| {workers} | {f['throughput_rps']:.1f} | {f['p50_ms']:.1f} / {f['p95_ms']:.1f} | "
            f"{s['throughput_rps']:.1f} | {s['p50_ms']:.1f} / {s['p95_ms']:.1f} | "
            f"{w['gain_vs_1_worker']['service'][str(workers)]}x | {w['gain_vs_1_worker']['floor'][str(workers)]}x |"
        )
    for kind in ("floor", "service"):
        for case_name, cells in w["results"][kind].items():
            for workers_key, cell in cells.items():
                if "error" in cell:
                    reason = cell["error"][:160]
                    lines.append(f"\n- {kind}, {case_name}, {workers_key} worker(s): no figures ({reason})")
    nl_f = w["results"]["floor"]["non-lupus"]["2"]
    nl_s = w["results"]["service"]["non-lupus"]["2"]
    lines += [
        "",
        f"- 1 -> 2 workers: service gain / floor gain = **{w['gain_ratio_1_to_2']}** (target >= 0.9).",
        f"- Non-lupus fast path, 2 workers: service {nl_s['throughput_rps']:.1f} hooks/s "
        f"(p50 {nl_s['p50_ms']:.1f} ms) vs floor {nl_f['throughput_rps']:.1f} hooks/s "
        f"(p50 {nl_f['p50_ms']:.1f} ms): **{w['non_lupus_2_workers_vs_floor']}x** (target >= 0.8).",
        "",
        "## Memory: 8 concurrent hook calls with a 20,000-Observation prefetch",
        "",
    ]
    mem = report["memory"]
    lines.append(
        f"Body {mem['bodyBytes'] / 1e6:.1f} MB each; request deadline {mem['deadlineSeconds']:g} s; "
        "`cds serve --workers N` with the shipped limits (large-body slots and queue per worker). With 2 "
        f"workers, {MEMORY_ROUNDS} bursts of 8 (the kernel may hand a whole burst to one worker): the "
        "highest peak, and how many processes were busy (RSS > idle + 40 MB) at it."
    )
    lines += [
        "",
        "| workers | peak RSS (tree) | busy at peak | idle RSS | statuses (that burst) | slowest (all) | all answered "
        "| <= deadline + 1 s | every burst: peak MB (busy) |",
    ]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for key in ("1w", "2w"):
        c = mem.get(key)
        if c:
            bursts = ", ".join(f"{r['peakRssMB']} ({r['busyAtPeak']})" for r in c.get("rounds", []))
            lines.append(
                f"| {key[0]} | {c['peakRssMB']} MB | {c.get('busyAtPeak', '-')} | {c['baselineRssMB']} MB | "
                f"{c['statuses']} | {c['slowestSeconds']} s | {c['allAnswered']} | {c['withinDeadlinePlus1s']} | "
                f"{bursts} |"
            )
    lines += ["", "## Decoder: `loads_bounded` vs `json.loads` on the same bytes", ""]
    lines += ["| record | MB | json.loads ms | loads_bounded ms | ratio |", "|---|---|---|---|---|"]
    for rerun, info in report.get("rerun", {}).items():
        lines.insert(
            3,
            f"The {rerun} section was measured again on {info['date']} (commit {info['git_commit'][:7]}, "
            f"load average {info['loadavg']}).\n",
        )
    for name, d in report["decoder"].items():
        lines.append(
            f"| {name} | {d['bytes'] / 1e6:.2f} | {d['json.loads_ms']} | {d['loads_bounded_ms']} | {d['ratio']}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("workers", "memory", "decoder"), default=None)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"machine": machine(), "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    if args.only in (None, "decoder"):
        report["decoder"] = bench_decoder(args.quick)
    with tempfile.TemporaryDirectory(prefix="cds-scale-") as tmp, database_url(tmp) as (url, label):
        report["database"] = label
        ehr = EhrIdentity(Path(tmp))
        env = {
            "CDS_AS_OF": str(AS_OF),
            "CDS_DATABASE_URL": url,
            "CDS_LOG_LEVEL": "INFO",
            "CDS_FHIR_ALLOWED_SERVERS": "",
        }
        if args.only in (None, "workers"):
            report["workers"] = bench_workers(args.quick, ehr, env)
        if args.only in (None, "memory"):
            report["memory"] = bench_memory(ehr, env)
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    full = args.out / "scale.json"
    if args.only is not None and full.exists():  # one section again: replace it in the last full run
        merged = json.loads(full.read_text(encoding="utf-8"))
        merged[args.only] = report[args.only]
        merged.setdefault("rerun", {})[args.only] = {
            "date": report["machine"]["date"],
            "git_commit": report["machine"]["git_commit"],
            "loadavg": [report["loadavg_start"], report["loadavg_end"]],
        }
        report = merged
    name = "scale"
    full.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if all(key in report for key in ("workers", "memory", "decoder")):
        (args.out / "scale.md").write_text(markdown(report), encoding="utf-8")
    log(f"wrote {args.out / name}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
