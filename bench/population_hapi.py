"""``python -m bench.population_hapi``: `cds population` on a Synthea population loaded into a real HAPI.

Not a test. Issue 15, item 5, end to end on this machine, in one run:

1. the first N patients (whole chunks) of the cached Synthea population (`python -m bench.synthea`)
   are loaded into a HAPI FHIR server started here (`sandbox.HapiSandbox`, H2 on disk, a larger heap):
   per chunk, Synthea's Organization / Location / Practitioner / PractitionerRole files first (the
   patients' resources refer to them with conditional references, `Organization?identifier=...`, which
   HAPI resolves inside a transaction), then the patients' files type by type in reference order
   (Patient, Encounter, Condition, Medication, Observation, ... DiagnosticReport); each file goes as
   transaction Bundles of `PUT Type/id` (idempotent: a rerun changes nothing), a bounded number at a
   time; nothing is stripped from the resources;
2. `cds population --fhir-server <that HAPI>` runs end to end (`cds.population.run.PopulationRun`,
   the command's own code, with each stage timed: kick-off, export wait, download, partition,
   screening, database write);
3. on the NDJSON that run downloaded: the floor (reading and grouping it by patient without screening,
   one core), the screening phase on 1 and 2 Dask workers (`run_partitions`), the same phase doing only
   the grouping (`group_only`), and the peak RSS of a fresh worker screening all partitions and half
   of them (same partition size);
4. the cost on paper of 1 M and 10 M patients from the measured per-patient cost.

Writes ``bench/out/population-synthea.json`` and ``.md``. The machine is shared: the load average at
start and end is recorded.

    python -m bench.population_hapi --patients 1000          # needs 2 generated chunks
    python -m bench.population_hapi --cache /tmp/bc/synthea-5-15000001 --patients 5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from bench.synthea import CHUNK, REFERENCE_DATE, chunk_sizes, population_dir
from cds.population.partition import MEDICATIONS_FILE, group_partition, load_medications, partition_files
from cds.population.screening import PartitionResult, ScreenJob, group_only, run_partitions, screen_partition

OUT_DIR = Path(__file__).resolve().parent / "out"
SHARED_TYPES = ("Organization", "Location", "Practitioner", "PractitionerRole")
# A resource refers only to types earlier in this list (Synthea's bulk output; checked by HAPI,
# which rejects a reference to a resource it does not have).
PATIENT_TYPES = (
    "Patient",
    "Encounter",
    "Condition",
    "Medication",
    "Observation",
    "AllergyIntolerance",
    "MedicationRequest",
    "MedicationAdministration",
    "Procedure",
    "DiagnosticReport",
)
FHIR_JSON = "application/fhir+json"


class Refused(Exception):
    """The bench cannot run as asked (e.g. not enough generated chunks)."""


# -- the population ------------------------------------------------------------------------------


def population_size(root: Path) -> int:
    """The size the generator was asked for, from the directory name `synthea-<patients>-<seed>`."""
    try:
        return int(root.name.split("-")[1])
    except (IndexError, ValueError):
        raise Refused(f"{root}: not a population directory of `python -m bench.synthea` (synthea-N-SEED)") from None


def select_chunks(root: Path, patients: int) -> list[Path]:
    """The chunks holding the first `patients` patients; refuses unless they are whole chunks, all ready."""
    sizes = chunk_sizes(population_size(root))
    totals = [sum(sizes[: i + 1]) for i in range(len(sizes))]
    if patients not in totals:
        choices = ", ".join(str(t) for t in totals[:6]) + (", ..." if len(totals) > 6 else "")
        raise Refused(f"--patients must be a whole number of chunks of {root.name}: {choices}")
    needed = totals.index(patients) + 1
    ready: list[Path] = []
    for i in range(len(sizes)):  # only the contiguous prefix: the first N patients
        chunk = root / f"chunk-{i:03d}"
        if not (chunk / "fhir").is_dir():
            break
        ready.append(chunk)
    if len(ready) < needed:
        have = totals[len(ready) - 1] if ready else 0
        raise Refused(
            f"{patients} patients need chunks 000-{needed - 1:03d} of {root}; only {len(ready)} "
            f"({have} patients) are generated yet (`python -m bench.synthea` is resumable)"
        )
    return ready[:needed]


def chunk_files(chunk: Path) -> list[tuple[str, Path]]:
    """(type, file) of one chunk, in load order: shared resources, then the patients' types."""
    by_type: dict[str, list[Path]] = {}
    for path in sorted((chunk / "fhir").glob("*.ndjson")):
        by_type.setdefault(path.name.split(".")[0], []).append(path)  # Organization.<time>.ndjson
    order = [*SHARED_TYPES, *PATIENT_TYPES, *sorted(set(by_type) - {*SHARED_TYPES, *PATIENT_TYPES})]
    return [(t, p) for t in order for p in by_type.get(t, [])]


# -- loading -------------------------------------------------------------------------------------


@dataclass(slots=True)
class LoadStats:
    resources: int = 0
    bytes: int = 0
    transactions: int = 0
    seconds: float = 0.0
    by_type: Counter[str] = field(default_factory=Counter)
    type_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))


def transactions(path: Path, batch: int) -> Iterator[tuple[int, int, bytes]]:
    """(entries, bytes of NDJSON, transaction Bundle body) of PUTs, `batch` resources at a time."""
    entries: list[bytes] = []
    size = 0
    with path.open("rb") as fh:
        for line in fh:
            raw = line.strip()
            if not raw:
                continue
            res = json.loads(raw)
            url = f"{res['resourceType']}/{res['id']}".encode()
            entries.append(b'{"resource":' + raw + b',"request":{"method":"PUT","url":"' + url + b'"}}')
            size += len(line)
            if len(entries) >= batch:
                yield len(entries), size, _bundle(entries)
                entries, size = [], 0
    if entries:
        yield len(entries), size, _bundle(entries)


def _bundle(entries: list[bytes]) -> bytes:
    return b'{"resourceType":"Bundle","type":"transaction","entry":[' + b",".join(entries) + b"]}"


def post_transaction(http: httpx.Client, base_url: str, body: bytes, entries: int, where: str) -> None:
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, "Prefer": "return=minimal"}
    r = http.post(base_url, content=body, headers=headers)
    if r.status_code != 200:
        raise RuntimeError(f"{where}: transaction of {entries} PUTs failed: HTTP {r.status_code}: {r.text[:800]}")
    got = r.json().get("entry", [])
    statuses = [str(e.get("response", {}).get("status")) for e in got]
    bad = [s for s in statuses if not s.startswith("2")]
    if len(got) != entries or bad:
        raise RuntimeError(f"{where}: {len(got)} of {entries} entries answered, failures: {bad[:5]}")


def load_population(
    base_url: str, chunks: Sequence[Path], *, batch: int, concurrency: int, log: Callable[[str], None]
) -> LoadStats:
    """Load the chunks type by type (a barrier between types), `concurrency` transactions at a time."""
    stats = LoadStats()
    lock = threading.Lock()
    t0 = time.perf_counter()
    timeout = httpx.Timeout(900.0, connect=10.0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(timeout=timeout, limits=limits) as http, ThreadPoolExecutor(concurrency) as pool:
        for ci, chunk in enumerate(chunks):
            for rtype, path in chunk_files(chunk):
                pending: set[Future[None]] = set()
                t_type = time.perf_counter()

                def send(body: bytes, n: int, size: int, rtype: str = rtype, path: Path = path) -> None:
                    post_transaction(http, base_url, body, n, f"{path.parent.parent.name}/{path.name}")
                    with lock:
                        stats.resources += n
                        stats.bytes += size
                        stats.transactions += 1
                        stats.by_type[rtype] += n

                for n, size, body in transactions(path, batch):
                    if len(pending) >= 2 * concurrency:  # bounded: at most 2x concurrency bodies in memory
                        done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                        for f in done:
                            f.result()
                    pending.add(pool.submit(send, body, n, size))
                for f in pending:
                    f.result()
                stats.type_seconds[rtype] += time.perf_counter() - t_type
            elapsed = time.perf_counter() - t0
            log(
                f"  loaded {chunk.name} ({ci + 1}/{len(chunks)}): {stats.resources:,} resources in {elapsed:.0f} s "
                f"({stats.resources / elapsed:,.0f}/s); load average {os.getloadavg()[0]:.1f}"
            )
    stats.seconds = time.perf_counter() - t0
    return stats


def resource_count(http: httpx.Client, base_url: str, rtype: str) -> int:
    r = http.get(f"{base_url}/{rtype}", params={"_summary": "count"}, headers={"Accept": FHIR_JSON})
    r.raise_for_status()
    return int(r.json().get("total", -1))


# -- cds population, timed -----------------------------------------------------------------------


def timed_population(
    fhir_server: str, work: Path, as_of: date, workers: int, keep: Path
) -> tuple[dict[str, float], dict[str, Any]]:
    """`cds population --fhir-server URL --as-of DATE --workers N --format jsonl` with each stage timed.

    The command's own code (`PopulationRun`); its stage methods and the two partition/screening calls
    are wrapped with timers. The downloaded NDJSON is hard-linked into `keep` before the store stage
    deletes it (the floor and the worker runs read the same files)."""
    import cds.population.run as run_mod
    from cds.config import Settings

    times: dict[str, float] = {}
    info: dict[str, Any] = {}

    def timer(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[name] = times.get(name, 0.0) + time.perf_counter() - t0

        return wrapped

    class TimedRun(run_mod.PopulationRun):
        def _kick_off(self, directory: Path, state: run_mod.RunState) -> None:
            timer("export_kick_off", super()._kick_off)(directory, state)

        def _wait(self, directory: Path, state: run_mod.RunState) -> None:
            timer("export_wait", super()._wait)(directory, state)
            manifest = state.manifest or {}
            info["manifest_files"] = len(manifest.get("output", []))
            info["manifest_errors"] = len(manifest.get("error", []))

        def _download(self, directory: Path, state: run_mod.RunState) -> None:
            timer("download", super()._download)(directory, state)

        def _screen(self, directory: Path, state: run_mod.RunState) -> None:
            timer("partition_and_screen", super()._screen)(directory, state)

        def _store(self, directory: Path, state: run_mod.RunState) -> None:
            shutil.copytree(directory / "files", keep, copy_function=os.link)
            info["searched"] = sorted({*(state.types or []), "Patient"})
            info["incomplete"] = list(state.incomplete or ())
            timer("store", super()._store)(directory, state)

    # The module's own names, wrapped with timers for this run (a bench, not product code).
    names = vars(run_mod)
    real_partition, real_run = names["partition_files"], names["run_partitions"]

    def partition(files: Sequence[Path], out_dir: Path, k: int) -> Any:
        summary = real_partition(files, out_dir, k)
        info.update(partitions=k, exported_resources=summary.resources, exported_patients=summary.patients)
        return summary

    settings = Settings(database_url=f"sqlite:///{work / 'population.sqlite3'}", population_dir=str(work / "runs"))
    opts = run_mod.PopulationOptions(fhir_server=fhir_server, as_of=as_of, workers=workers, fmt="jsonl")
    out = io.StringIO()
    names["partition_files"] = timer("partition", partition)
    names["run_partitions"] = timer("screening", real_run)
    try:
        t0 = time.perf_counter()
        with httpx.Client(timeout=httpx.Timeout(settings.bulk_http_timeout, connect=10.0)) as http:
            status = TimedRun(opts, settings, out, sys.stderr, http).run()
        times["end_to_end"] = time.perf_counter() - t0
    finally:
        names["partition_files"], names["run_partitions"] = real_partition, real_run
    verdicts = Counter(json.loads(line)["verdict"] for line in out.getvalue().splitlines() if line.strip())
    info.update(exit_status=status, verdicts=dict(verdicts), screened=sum(verdicts.values()))
    return times, info


# -- floor and workers ---------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def screen_with_rss(index: int, path: str, job: ScreenJob) -> PartitionResult:
    """`screen_partition`, reporting the worker process's peak RSS (KiB) in `resources`."""
    r = screen_partition(index, path, job)
    return PartitionResult(r.index, r.lines, r.orphans, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def floor(files: list[Path], out_dir: Path, k: int) -> tuple[float, float, int]:
    """(partition s, group s, patients): read + group the NDJSON without screening, in this process."""
    part_s, summary = timed(lambda: partition_files(files, out_dir, k))

    def group() -> int:
        meds = load_medications(out_dir / MEDICATIONS_FILE)
        return sum(len(group_partition(p, meds)[0]) for p in summary.files)

    group_s, n = timed(group)
    return part_s, group_s, n


def on_cluster(
    parts: Sequence[Path], job: ScreenJob, scheduler: str, task: Callable[[int, str, ScreenJob], PartitionResult]
) -> tuple[float, int, int]:
    """(seconds, patients, peak worker RSS KiB) of `task` over the partitions on a running cluster."""
    n = peak = 0

    def on_result(r: PartitionResult) -> None:
        nonlocal n, peak
        n += len(r.lines)
        peak = max(peak, r.resources if task is screen_with_rss else 0)

    seconds, _ = timed(
        lambda: run_partitions(parts, job, workers=1, scheduler=scheduler, on_result=on_result, task=task)
    )
    return seconds, n, peak


@contextlib.contextmanager
def cluster(workers: int) -> Iterator[str]:
    from distributed import LocalCluster

    with LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
    ) as c:
        yield c.scheduler_address


def worker_runs(parts: list[Path], job: ScreenJob, log: Callable[[str], None]) -> dict[str, Any]:
    """Screening and grouping phases on 1 and 2 workers; peak RSS of fresh workers at N and N/2."""
    out: dict[str, Any] = {}
    warm = parts[: min(2, len(parts))]
    for workers in (1, 2):
        with cluster(workers) as addr:
            on_cluster(warm, job, addr, screen_partition)  # imports and unit tables in every worker
            g_s, g_n, _ = on_cluster(parts, job, addr, group_only)
            s_s, s_n, _ = on_cluster(parts, job, addr, screen_partition)
        out[f"workers_{workers}"] = {"screen_seconds": s_s, "patients": s_n, "group_seconds": g_s, "grouped": g_n}
        log(f"  {workers} worker(s): screening {s_n / s_s:,.1f} patients/s, grouping only {g_n / g_s:,.1f}/s")
    half = parts[: max(1, len(parts) // 2)]
    for name, subset in (("population", parts), ("half_population", half)):
        with cluster(1) as addr:
            _, n, peak = on_cluster(subset, job, addr, screen_with_rss)
        out[f"peak_rss_{name}"] = {"patients": n, "partitions": len(subset), "peak_rss_mib": peak / 1024}
        log(f"  peak worker RSS, {n} patients in {len(subset)} partitions: {peak / 1024:.0f} MiB")
    return out


# -- report --------------------------------------------------------------------------------------


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, cwd=OUT_DIR.parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def process_rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds a process has used (Linux /proc): the server's own cost, whatever the load."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def _delta(end: float | None, start: float | None) -> float | None:
    return end - start if end is not None and start is not None else None


def derive(r: dict[str, Any]) -> dict[str, Any]:
    """Rates, ratios and the cost on paper from the raw figures."""
    n = r["population"]["patients"]
    e2e = r["cds_population"]["seconds"]
    w1, w2 = r["workers"]["workers_1"], r["workers"]["workers_2"]
    fl = r["floor"]
    floor_rate = fl["patients"] / (fl["partition_seconds"] + fl["group_seconds"])
    per_core_rate = w1["patients"] / (fl["partition_seconds"] + w1["screen_seconds"])
    export_s = e2e["export_kick_off"] + e2e["export_wait"] + e2e["download"]
    ms = 1000 * w1["screen_seconds"] / w1["patients"]
    part_ms = 1000 * fl["partition_seconds"] / fl["patients"]
    export_ms = 1000 * export_s / n
    cost = {}
    for label, pop in (("1M", 1_000_000), ("10M", 10_000_000)):
        core_h = pop * (ms + part_ms) / 3.6e6
        cost[label] = {
            "screening_core_hours": core_h,
            "wall_hours_on_64_cores": core_h / 64,
            "export_hours_one_hapi_like_this": pop * export_ms / 3.6e6,
        }
    return {
        "export_seconds": export_s,
        "end_to_end_patients_per_s": n / e2e["end_to_end"],
        "end_to_end_patients_per_s_per_core": n / e2e["end_to_end"] / r["cds_population"]["workers"],
        "floor_patients_per_s": floor_rate,
        "screening_per_core_patients_per_s": per_core_rate,
        "ratio_screening_per_core_vs_floor": per_core_rate / floor_rate,
        "screening_phase_1_worker_patients_per_s": w1["patients"] / w1["screen_seconds"],
        "screening_phase_2_workers_patients_per_s": w2["patients"] / w2["screen_seconds"],
        "speedup_2_workers": w1["screen_seconds"] / w2["screen_seconds"],
        "grouping_phase_speedup_2_workers": w1["group_seconds"] / w2["group_seconds"],
        "screening_ms_per_patient_per_core": ms,
        "partition_ms_per_patient": part_ms,
        "export_ms_per_patient": export_ms,
        "load_resources_per_s": r["load"]["resources"] / r["load"]["seconds"] if r["load"]["seconds"] else None,
        "load_resources_per_hapi_cpu_s": (
            r["load"]["resources"] / r["load"]["hapi_cpu_seconds"] if r["load"].get("hapi_cpu_seconds") else None
        ),
        "export_hapi_cpu_ms_per_patient": (
            1000 * r["cds_population"]["hapi_cpu_seconds"] / n if r["cds_population"].get("hapi_cpu_seconds") else None
        ),
        "cost_on_paper": cost,
        "targets": {"ratio_screening_per_core_vs_floor": 0.5, "speedup_2_workers": 1.6},
    }


def markdown(r: dict[str, Any]) -> str:
    d = r["derived"]
    e = r["cds_population"]["seconds"]
    ld = r["load"]
    w = r["workers"]
    n = r["population"]["patients"]
    ratio_ok = "met" if d["ratio_screening_per_core_vs_floor"] >= 0.5 else "**missed**"
    speed_ok = "met" if d["speedup_2_workers"] >= 1.6 else "**missed**"
    rss_n, rss_h = w["peak_rss_population"], w["peak_rss_half_population"]
    floor_s = r["floor"]["partition_seconds"] + r["floor"]["group_seconds"]
    lines = [
        f"# `cds population` on a Synthea population in HAPI ({n:,} patients)",
        "",
        f"`python -m bench.population_hapi {' '.join(r['argv'])}` on {r['date']}, commit {r['commit']}, "
        f"{r['machine']['cpus']} cores, Python {r['machine']['python']}; load average at start "
        f"{r['load_average']['start'][0]:.1f}, before the screening runs {r['load_average']['before_workers'][0]:.1f}, "
        f"at the end {r['load_average']['end'][0]:.1f} (a shared machine: Synthea generation at nice 19 and "
        "other engineers' tests ran at the same time).",
        "",
        f"Population: {n:,} Synthea patients ({r['population']['chunks']} chunks of `{r['population']['cache']}`), "
        f"{ld['resources']:,} resources, {ld['bytes'] / 1e6:,.0f} MB NDJSON.",
        "",
        "| phase | seconds | rate |",
        "|---|---|---|",
        f"| HAPI start-up (H2 on disk, {r['hapi']['java_opts']}) | {r['hapi']['startup_seconds']:.0f} | - |",
        f"| load into HAPI ({ld['transactions']:,} transactions of <= {ld['batch']} PUTs, {ld['concurrency']} at a "
        f"time) | {ld['seconds']:.0f} | {d['load_resources_per_s'] or 0:,.0f} resources/s |",
        f"| - HAPI's own CPU during the load | {ld.get('hapi_cpu_seconds') or 0:.0f} CPU-s | "
        f"{d.get('load_resources_per_hapi_cpu_s') or 0:,.0f} resources per HAPI CPU-second |",
        f"| `cds population` end to end ({r['cds_population']['workers']} worker) | {e['end_to_end']:.1f} | "
        f"{d['end_to_end_patients_per_s']:,.2f} patients/s ({d['end_to_end_patients_per_s_per_core']:,.2f}/core) |",
        f"| - HAPI's own CPU during the run (mostly the export) | "
        f"{r['cds_population'].get('hapi_cpu_seconds') or 0:.0f} CPU-s | "
        f"{d.get('export_hapi_cpu_ms_per_patient') or 0:,.0f} ms per patient |",
        f"| - export kick-off | {e['export_kick_off']:.1f} | |",
        f"| - export, waiting for HAPI | {e['export_wait']:.1f} | |",
        f"| - download ({r['cds_population']['manifest_files']} files) | {e['download']:.1f} | |",
        f"| - partition | {e.get('partition', 0):.1f} | |",
        f"| - screening (Dask, cluster start included) | {e.get('screening', 0):.1f} | |",
        f"| - database write | {e['store']:.1f} | |",
        f"| floor: read + group the downloaded NDJSON, 1 core | {floor_s:.1f} | "
        f"{d['floor_patients_per_s']:,.1f} patients/s |",
        f"| screening phase, 1 worker | {w['workers_1']['screen_seconds']:.1f} | "
        f"{d['screening_phase_1_worker_patients_per_s']:,.1f} patients/s |",
        f"| screening phase, 2 workers | {w['workers_2']['screen_seconds']:.1f} | "
        f"{d['screening_phase_2_workers_patients_per_s']:,.1f} patients/s |",
        f"| grouping only (`group_only`), 1 / 2 workers | {w['workers_1']['group_seconds']:.1f} / "
        f"{w['workers_2']['group_seconds']:.1f} | |",
        "",
        "| target | result |",
        "|---|---|",
        f"| screening per core (partition + screen, 1 worker) >= 0.5x the read-and-group floor | {ratio_ok}: "
        f"{d['ratio_screening_per_core_vs_floor']:.2f}x ({d['screening_per_core_patients_per_s']:,.1f} vs "
        f"{d['floor_patients_per_s']:,.1f} patients/s) |",
        f"| screening phase on 2 workers >= 1.6x one | {speed_ok}: {d['speedup_2_workers']:.2f}x (grouping only: "
        f"{d['grouping_phase_speedup_2_workers']:.2f}x) |",
        f"| memory bounded by the partition, not the population | peak worker RSS {rss_n['peak_rss_mib']:.0f} MiB "
        f"for {rss_n['patients']:,} patients ({rss_n['partitions']} partitions), {rss_h['peak_rss_mib']:.0f} MiB for "
        f"{rss_h['patients']:,} ({rss_h['partitions']}) |",
        "",
        f"Verdicts: {r['cds_population']['verdicts']}; exit status {r['cds_population']['exit_status']}; "
        f"export: {r['cds_population']['exported_resources']:,} resources of the types the trial reads "
        f"(`_type` + `_typeFilter`), {r['cds_population']['partitions']} partitions.",
        "",
        "Cost on paper, from this run's per-patient cost (screening "
        f"{d['screening_ms_per_patient_per_core']:.1f} ms + partition {d['partition_ms_per_patient']:.2f} ms per "
        f"patient per core; export {d['export_ms_per_patient']:.1f} ms per patient from this one HAPI on H2):",
        "",
        "| patients | screening core-hours | wall hours on 64 cores | export hours, one server like this |",
        "|---|---|---|---|",
    ]
    for label, c in d["cost_on_paper"].items():
        lines.append(
            f"| {label} | {c['screening_core_hours']:,.1f} | {c['wall_hours_on_64_cores']:,.2f} | "
            f"{c['export_hours_one_hapi_like_this']:,.1f} |"
        )
    notes = [r["load"].get("hapi_cpu_note"), r["cds_population"].get("export_note")]
    for note in notes:
        if note:
            lines += ["", f"Note: {note}."]
    if n < 500:
        lines += [
            "",
            f"With {n} patients the fixed costs dominate (HAPI's export job scheduling, Dask cluster start, worker "
            "warm-up): the per-patient figures and the cost on paper are upper bounds, not rates.",
        ]
    lines += [
        "",
        "Screening scales with workers (partitions are independent; 64 cores assumes the measured per-core cost "
        "and a shared file system for the partitions); the export does not: it is one server's work, and a "
        "production FHIR server's bulk export (PostgreSQL, several nodes) is the figure to measure before "
        "planning 10 M patients.",
        "",
    ]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.population_hapi", description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=10_000, help="the first N patients (whole chunks)")
    parser.add_argument("--cache", type=Path, default=None, help="population directory (default: the 10,000 one)")
    parser.add_argument("--batch", type=int, default=250, help="PUTs per transaction Bundle when loading")
    parser.add_argument("--concurrency", type=int, default=2, help="transactions in flight when loading")
    parser.add_argument("--heap", default="4g", help="HAPI's Java heap (-Xmx)")
    parser.add_argument("--fhir-server", default=None, help="use this running server instead of starting one")
    parser.add_argument("--no-load", action="store_true", help="with --fhir-server: it already holds the population")
    parser.add_argument("--hapi-pid", type=int, default=None, help="with --fhir-server: its JVM (CPU seconds)")
    parser.add_argument("--render", type=Path, default=None, help="only rewrite the .md of this JSON report")
    parser.add_argument("--reset", action="store_true", help="with --fhir-server: $expunge everything before loading")
    parser.add_argument("--no-bulk-load", action="store_true", help="HAPI without its mass-ingestion settings")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "population-synthea.json")
    args = parser.parse_args(argv)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    if args.render:
        done = json.loads(args.render.read_text())
        done["derived"] = derive(done)
        args.render.write_text(json.dumps(done, indent=2) + "\n")
        args.render.with_suffix(".md").write_text(markdown(done))
        return 0

    root = args.cache or population_dir()
    try:
        chunks = select_chunks(root, args.patients)
    except Refused as err:
        print(f"refused: {err}", file=sys.stderr)
        return 2
    as_of = date.fromisoformat(f"{REFERENCE_DATE[:4]}-{REFERENCE_DATE[4:6]}-{REFERENCE_DATE[6:]}")
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": sys.argv[1:] if argv is None else argv,
        "commit": git_commit(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "load_average": {"start": os.getloadavg()},
        "population": {"patients": args.patients, "chunks": len(chunks), "chunk_size": CHUNK, "cache": str(root)},
    }
    log(f"population: {args.patients} patients in {len(chunks)} chunk(s) of {root}")

    from sandbox import HapiSandbox
    from sandbox.launcher import free_port

    java_opts = [f"-Xmx{args.heap}", "-XX:+UseSerialGC"]
    hapi = None
    if args.fhir_server:
        base_url = args.fhir_server.rstrip("/")
        report["hapi"] = {"attached": base_url, "java_opts": "(attached)", "startup_seconds": 0.0}
    else:
        port = free_port()
        hapi = HapiSandbox(
            port,
            disk=True,
            bulk_load=not args.no_bulk_load,
            java_opts=java_opts,
            startup_timeout=600,
            log_path=OUT_DIR / "logs" / "hapi-population.log",
        )
        log(f"starting HAPI on port {port} (H2 on disk, {' '.join(java_opts)}) ...")
        hapi.start()
        base_url = hapi.base_url
        report["hapi"] = {
            "java_opts": " ".join(java_opts),
            "bulk_load": hapi.bulk_load,
            "startup_seconds": hapi.startup_seconds,
            "port": port,
        }
        log(f"HAPI ready in {hapi.startup_seconds:.0f} s; loading ...")
    pid = hapi.pid if hapi is not None else args.hapi_pid
    try:
        if args.no_load:
            report["load"] = {"resources": 0, "bytes": 0, "transactions": 0, "seconds": 0.0, "batch": 0}
            report["load"]["concurrency"] = 0
        else:
            if args.reset and hapi is None:
                from sandbox.loader import expunge

                log(f"$expunge everything on {base_url}: {expunge(base_url)} rows")
            cpu0 = cpu_seconds(pid)
            stats = load_population(base_url, chunks, batch=args.batch, concurrency=args.concurrency, log=log)
            with httpx.Client(timeout=120) as http:
                counts = {t: resource_count(http, base_url, t) for t in ("Patient", "Observation", "Organization")}
            report["load"] = {
                "resources": stats.resources,
                "bytes": stats.bytes,
                "transactions": stats.transactions,
                "seconds": stats.seconds,
                "batch": args.batch,
                "concurrency": args.concurrency,
                "by_type": dict(stats.by_type),
                "seconds_by_type": dict(stats.type_seconds),
                "hapi_cpu_seconds": _delta(cpu_seconds(pid), cpu0),
                "server_counts": counts,
            }
            if hapi is not None:
                report["load"].update(hapi_peak_rss_mib=process_rss_mib(hapi.pid), h2_bytes=dir_bytes(hapi.db_dir))
            log(f"loaded {stats.resources:,} resources in {stats.seconds:.0f} s; server counts {counts}")
        with tempfile.TemporaryDirectory(prefix="bench-population-hapi-") as tmp:
            work = Path(tmp)
            log("cds population (1 worker) ...")
            cpu0 = cpu_seconds(pid)
            times, info = timed_population(base_url, work, as_of, 1, work / "exported")
            info["hapi_cpu_seconds"] = _delta(cpu_seconds(pid), cpu0)
            report["cds_population"] = {"seconds": times, "workers": 1, **info}
            log(f"cds population: {times['end_to_end']:.1f} s; {info['screened']} screened {info['verdicts']}")
            if hapi is not None:
                report["hapi"]["peak_rss_mib"] = process_rss_mib(hapi.pid)
            files = sorted((work / "exported").glob("*.ndjson"))
            k = int(info["partitions"])
            part_s, group_s, n = floor(files, work / "parts", k)
            report["floor"] = {"partition_seconds": part_s, "group_seconds": group_s, "patients": n}
            log(f"floor: {n} patients read and grouped in {part_s + group_s:.1f} s")
            job = ScreenJob(
                as_of=as_of,
                searched=frozenset(info["searched"]),
                incomplete=tuple(info["incomplete"]),
                medications_file=str(work / "parts" / MEDICATIONS_FILE),
            )
            report["load_average"]["before_workers"] = os.getloadavg()
            parts = sorted((work / "parts").glob("part-*.ndjson"))
            report["workers"] = worker_runs(parts, job, log)
    finally:
        if hapi is not None:
            hapi.stop()
            shutil.rmtree(hapi.db_dir, ignore_errors=True)
    report["load_average"]["end"] = os.getloadavg()
    report["derived"] = derive(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    log(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
