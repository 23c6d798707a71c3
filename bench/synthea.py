"""``python -m bench.synthea``: a Synthea population for the population bench (issue 15), cached outside git.

    python -m bench.synthea                 # 10,000 living patients (default), into the cache
    python -m bench.synthea --patients 500  # a smaller population (its own cache directory)

Synthea 3.3.0 (Maven Central, resolved through `fixtures/synthea/pom.xml`, like the committed corpus)
with its stock modules: no keep module and no derived module, so the population has Synthea's own
prevalence (lupus is rare in it, as in a real health system). Reproducible: the population is built as
fixed chunks, each one Synthea run with its own seed (`SEED + chunk`) and clinician seed, one generator
thread per run (Synthea shares its clinician random generator between threads), and a fixed reference
and end date; chunks run two at a time (one per core). Output: Synthea's Bulk Data NDJSON
(`exporter.fhir.bulk_data`), limited with `exporter.fhir.included_resources` to the types the trials
read (Synthea always adds Encounter), two years of history, plus the Organization, Location and
Practitioner files the patients' resources refer to (so a FHIR server accepts them).

The cache is `$CDS_BENCH_CACHE` (default `~/.cache/cds-bench`)/`synthea-<patients>-<seed>/`: one
`chunk-NNN/` per run, written to a temporary directory and renamed when the run succeeded, so an
interrupted generation resumes with the chunks it has not finished. A `--nice` level keeps it behind
other work on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POM = REPO / "fixtures" / "synthea" / "pom.xml"
SEED = 15_000_001
PATIENTS = 10_000
CHUNK = 500
PARALLEL = 2
REFERENCE_DATE = "20261101"  # Synthea -r/-e: same as the committed corpus; screen with --as-of 2026-11-01
AGES = "18-85"  # an adult health system's population (both trials are adult-only)
STATE = "Massachusetts"
# What the trials read (cds.engine.record.READ_TYPES and AUX_TYPES) that Synthea writes; Synthea adds
# Encounter itself. Kept literal so generating a population does not import the service.
INCLUDED = (
    "Patient",
    "Condition",
    "Observation",
    "MedicationRequest",
    "MedicationAdministration",
    "Procedure",
    "AllergyIntolerance",
    "DiagnosticReport",
    "Medication",
)
OPTIONS = (
    "--exporter.years_of_history=2",
    "--exporter.fhir.export=true",
    "--exporter.fhir.bulk_data=true",
    f"--exporter.fhir.included_resources={','.join(INCLUDED)}",
    "--exporter.fhir_stu3.export=false",
    "--exporter.fhir_dstu2.export=false",
    "--exporter.ccda.export=false",
    "--exporter.csv.export=false",
    "--exporter.text.export=false",
    "--exporter.cpcds.export=false",
    "--exporter.bfd.export=false",
    # Organizations, Locations and Practitioners: the patients' resources refer to them (by identifier)
    "--exporter.hospital.fhir.export=true",
    "--exporter.practitioner.fhir.export=true",
    "--exporter.groups.fhir.export=false",
    "--exporter.metadata.export=false",
    "--exporter.clinical_note.export=false",
    "--exporter.symptoms.csv.export=false",
    "--generate.only_alive_patients=true",
    "--generate.thread_pool_size=1",
)


def cache_root() -> Path:
    return Path(os.environ.get("CDS_BENCH_CACHE", Path.home() / ".cache" / "cds-bench"))


def population_dir(patients: int = PATIENTS, seed: int = SEED) -> Path:
    return cache_root() / f"synthea-{patients}-{seed}"


def chunk_sizes(patients: int, chunk: int = CHUNK) -> list[int]:
    full, rest = divmod(patients, chunk)
    return [chunk] * full + ([rest] if rest else [])


def synthea_classpath() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cp.txt"
        cmd = ["mvn", "-q", "-B", "-f", str(POM), "dependency:build-classpath", f"-Dmdep.outputFile={out}"]
        subprocess.run(cmd, check=True)
        return out.read_text(encoding="utf-8").strip()


def run_chunk(classpath: str, target: Path, index: int, size: int, seed: int, nice: int) -> float:
    """One Synthea run into `target` (renamed into place on success); returns its wall time."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as tmp:
        work = Path(tmp)
        cmd = [
            *(["nice", "-n", str(nice)] if nice else []),
            "java",
            "-Xmx1g",
            "-cp",
            classpath,
            "App",
            "-s",
            str(seed + index),
            "-cs",
            str(seed + index),
            "-r",
            REFERENCE_DATE,
            "-e",
            REFERENCE_DATE,
            "-a",
            AGES,
            "-p",
            str(size),
            f"--exporter.baseDirectory={work / 'output'}/",
            *OPTIONS,
            STATE,
        ]
        with (work / "synthea.log").open("w") as log:
            subprocess.run(cmd, cwd=work, check=True, stdout=log, stderr=subprocess.STDOUT)
        (work / "output" / "fhir").rename(work / "fhir")
        shutil.rmtree(work / "output")
        os.rename(work, target)
        # the TemporaryDirectory cleanup finds nothing left to remove
        work.mkdir()
    return time.perf_counter() - t0


def generate(patients: int = PATIENTS, seed: int = SEED, nice: int = 0) -> Path:
    root = population_dir(patients, seed)
    root.mkdir(parents=True, exist_ok=True)
    sizes = chunk_sizes(patients)
    todo = [(i, n) for i, n in enumerate(sizes) if not (root / f"chunk-{i:03d}" / "fhir").is_dir()]
    print(f"Synthea population: {patients} patients in {len(sizes)} chunks at {root}; {len(todo)} to run", flush=True)
    if todo:
        classpath = synthea_classpath()
        with ThreadPoolExecutor(PARALLEL) as pool:
            futures = {i: pool.submit(run_chunk, classpath, root / f"chunk-{i:03d}", i, n, seed, nice) for i, n in todo}
            for i, fut in futures.items():
                print(f"  chunk {i:03d}: {sizes[i]} patients in {fut.result():.0f} s", flush=True)
    return root


def ndjson_files(root: Path) -> dict[str, list[Path]]:
    """The population's NDJSON files by resource type (all chunks)."""
    files: dict[str, list[Path]] = {}
    for path in sorted(root.glob("chunk-*/fhir/*.ndjson")):
        files.setdefault(path.name.split(".")[0], []).append(path)  # Organization.<time>.ndjson
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=PATIENTS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--nice", type=int, default=0, help="run Synthea at this nice level")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    root = generate(args.patients, args.seed, args.nice)
    files = ndjson_files(root)
    size = sum(p.stat().st_size for paths in files.values() for p in paths)
    print(f"done in {time.perf_counter() - t0:.0f} s: {size / 1e6:.0f} MB of NDJSON, types {sorted(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
