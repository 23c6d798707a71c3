"""``python -m bench.population``: population screening throughput against its same-run floor.

Not a test. Generates a synthetic population as exported NDJSON (one file per resource type, from
`sandbox.generate_cohort`, deterministic for a seed), then measures on this machine, in one run:

* floor: reading and grouping that NDJSON by patient without screening (partitioning to disk, then
  reading each partition and grouping it; in this process, one core);
* screening end to end on one Dask worker (partition + screen every patient), patients/s;
* the screening phase alone on 1 and on 2 Dask workers (clusters started beforehand; the 2-worker
  speed-up needs 2 free cores: the load average is recorded);
* peak RSS of a worker process screening the population and half of it with the same partition
  size: bounded by the partition (and so by the largest patient), not by the population.

With ``--synthea DIR`` (a population from ``python -m bench.synthea``: whole chunks of Synthea's
Bulk Data NDJSON, the types the trial reads, as a Bulk Data export with ``_type`` would give them)
the same figures are measured on Synthea patients instead of the synthetic cohort; the half
population is the first half of the chunks. ``bench.population_hapi`` measures the export from a
real HAPI on top of this.

Writes ``bench/out/population.json`` (``population-synthea-ndjson.json`` with ``--synthea``) and
prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from cds.config import setting_default
from cds.engine.record import AUX_TYPES, READ_TYPES
from cds.population.partition import MEDICATIONS_FILE, group_partition, load_medications, partition_files
from cds.population.screening import PartitionResult, ScreenJob, run_partitions, screen_partition
from sandbox import COHORT_AS_OF, generate_cohort

OUT = Path(__file__).resolve().parent / "out" / "population.json"
SYNTHEA_AS_OF = date(2026, 11, 1)  # bench.synthea's reference date (Synthea -r/-e)
SEARCHED = frozenset(
    {
        "Patient",
        "Condition",
        "Observation",
        "MedicationStatement",
        "MedicationRequest",
        "MedicationAdministration",
        "Procedure",
        "AllergyIntolerance",
        "Medication",
    }
)


def write_population(directory: Path, n: int, seed: int) -> tuple[list[Path], int]:
    """The cohort as NDJSON files by resource type; returns the files and their total size."""
    directory.mkdir(parents=True, exist_ok=True)
    handles: dict[str, Any] = {}
    try:
        for bundle in generate_cohort(n, seed):
            for entry in bundle["entry"]:
                r = entry["resource"]
                fh = handles.get(r["resourceType"])
                if fh is None:
                    fh = handles[r["resourceType"]] = (directory / f"{r['resourceType']}.ndjson").open("w")
                fh.write(json.dumps(r, separators=(",", ":")) + "\n")
    finally:
        for fh in handles.values():
            fh.close()
    files = sorted(directory.glob("*.ndjson"))
    return files, sum(f.stat().st_size for f in files)


def synthea_population(root: Path, max_chunks: int | None = None) -> tuple[list[Path], list[Path], int]:
    """(files, files of the first half of the chunks, bytes) of a bench.synthea population: its
    complete chunks (the first `max_chunks`), the resource types the engine reads."""
    chunks = sorted(p for p in root.glob("chunk-*") if (p / "fhir").is_dir())[:max_chunks]
    if len(chunks) < 2:
        raise SystemExit(f"{root}: {len(chunks)} complete chunk(s); at least 2 are needed (python -m bench.synthea)")
    wanted = set(READ_TYPES) | set(AUX_TYPES)

    def files(of: list[Path]) -> list[Path]:
        return sorted(f for c in of for f in (c / "fhir").glob("*.ndjson") if f.name.split(".")[0] in wanted)

    everything = files(chunks)
    return everything, files(chunks[: len(chunks) // 2]), sum(f.stat().st_size for f in everything)


def screen_with_rss(index: int, path: str, job: ScreenJob) -> PartitionResult:
    """`screen_partition`, reporting the worker's peak RSS (KiB) in `resources`."""
    result = screen_partition(index, path, job)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return PartitionResult(index=result.index, lines=result.lines, orphans=result.orphans, resources=peak)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def floor(files: list[Path], work: Path, partitions: int) -> tuple[float, int]:
    """Read + group the NDJSON without screening (one process)."""

    def run() -> int:
        summary = partition_files(files, work / "floor-parts", partitions)
        meds = load_medications(work / "floor-parts" / MEDICATIONS_FILE)
        count = 0
        for part in summary.files:
            patients, _ = group_partition(part, meds)
            count += len(patients)
        return count

    return timed(run)


def screen_phase(parts: list[Path], job: ScreenJob, scheduler: str) -> tuple[float, int, int]:
    """(seconds, patients screened, peak worker RSS KiB) for the screening phase on a running cluster."""
    patients = 0
    peak = 0

    def on_result(r: PartitionResult) -> None:
        nonlocal patients, peak
        patients += len(r.lines)
        peak = max(peak, r.resources)

    seconds, _ = timed(
        lambda: run_partitions(parts, job, workers=1, scheduler=scheduler, on_result=on_result, task=screen_with_rss)
    )
    return seconds, patients, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.population", description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--partition-patients", type=int, default=250, help="about this many patients per partition")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--synthea", type=Path, default=None, help="a bench.synthea population directory")
    parser.add_argument("--chunks", type=int, default=None, help="with --synthea: at most this many chunks")
    args = parser.parse_args(argv)
    out: Path = args.out or (OUT if args.synthea is None else OUT.with_name("population-synthea-ndjson.json"))

    from distributed import LocalCluster

    as_of: date = COHORT_AS_OF if args.synthea is None else SYNTHEA_AS_OF
    with tempfile.TemporaryDirectory(prefix="bench-population-") as tmp:
        work = Path(tmp)
        if args.synthea is None:
            gen_s, (files, size) = timed(lambda: write_population(work / "ndjson", args.patients, args.seed))
            half_files, _ = write_population(work / "half", args.patients // 2, args.seed)
            source = f"synthetic cohort (sandbox.generate_cohort, seed {args.seed}; {gen_s:.1f} s to generate)"
        else:
            files, half_files, size = synthea_population(args.synthea, args.chunks)
            args.patients = partition_files(files, work / "count", 1).patients
            source = f"Synthea ({args.synthea.name})"
        if args.synthea is None:
            k = max(2, args.patients // args.partition_patients)
        else:  # as `cds population` partitions: by bytes (Synthea patients are ~0.3 MB each)
            k = max(4, -(-size // int(setting_default("population_partition_bytes"))))
        k_half = max(1, k // 2)
        print(f"population: {args.patients} patients, {size / 1e6:.1f} MB NDJSON, {source}")

        floor_s, floor_n = floor(files, work, k)
        print(f"floor (read + group, 1 core): {floor_n / floor_s:,.0f} patients/s")

        def partition(src: list[Path], name: str, count: int) -> tuple[float, list[Path], ScreenJob]:
            seconds, summary = timed(lambda: partition_files(src, work / name, count))
            job = ScreenJob(
                as_of=as_of, searched=SEARCHED, incomplete=(), medications_file=str(work / name / MEDICATIONS_FILE)
            )
            return seconds, summary.files, job

        part_s, parts, job = partition(files, "parts", k)
        _, half_parts, half_job = partition(half_files, "half-parts", k_half)
        figures: dict[str, Any] = {}
        for workers in (1, 2):
            with LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
            ) as cluster:
                addr = cluster.scheduler_address
                screen_phase(parts[:1], job, addr)  # warm-up: imports and unit tables in every worker
                if workers == 2:
                    screen_phase(parts[1:2], job, addr)
                seconds, n, peak = screen_phase(parts, job, addr)
                figures[f"workers_{workers}"] = {"seconds": seconds, "patients": n, "peak_rss_mib": peak / 1024}
            rate = n / seconds
            print(
                f"screening phase, {workers} worker(s): {rate:,.0f} patients/s, peak worker RSS {peak / 1024:.0f} MiB"
            )

        # A fresh worker: its peak RSS (ru_maxrss) never goes down, so the half population is not
        # measured on the worker that screened the whole one.
        with LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
        ) as cluster:
            _, n_half, peak_half = screen_phase(half_parts, half_job, cluster.scheduler_address)
            figures["half_population"] = {"patients": n_half, "peak_rss_mib": peak_half / 1024}

        one = figures["workers_1"]
        two = figures["workers_2"]
        floor_rate = floor_n / floor_s
        e2e_rate = one["patients"] / (part_s + one["seconds"])
        report = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "python": sys.version.split()[0]},
            "population": {"patients": args.patients, "ndjson_bytes": size, "partitions": k, "source": source},
            "floor_patients_per_s": floor_rate,
            "end_to_end_1_worker_patients_per_s": e2e_rate,
            "screening_1_worker_patients_per_s": one["patients"] / one["seconds"],
            "screening_2_workers_patients_per_s": two["patients"] / two["seconds"],
            "ratio_end_to_end_per_core_vs_floor": e2e_rate / floor_rate,
            "speedup_2_workers": one["seconds"] / two["seconds"],
            "peak_worker_rss_mib": {
                "population": one["peak_rss_mib"],
                "half_population": figures["half_population"]["peak_rss_mib"],
            },
            "per_patient_ms_1_core": 1000 * one["seconds"] / one["patients"],
            "targets": {"ratio_vs_floor": 0.5, "speedup_2_workers": 1.6},
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        ratio = report["ratio_end_to_end_per_core_vs_floor"]
        speedup = report["speedup_2_workers"]
        ms = report["per_patient_ms_1_core"]
        print(f"end to end per core: {e2e_rate:,.0f} patients/s = {ratio:.2f} x floor (target >= 0.5)")
        print(f"2 workers vs 1: {speedup:.2f} x (target >= 1.6; load average {os.getloadavg()[0]:.1f})")
        hours_1m = ms * 1e6 / 3.6e6
        print(f"per patient: {ms:.2f} ms/core: 1 M ~ {hours_1m:.1f} core-hours, 10 M ~ {10 * hours_1m:.0f}")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
