"""NDJSON to per-patient groups, with bounded memory.

Exported NDJSON files are read line by line and each line is written, unchanged, to one of K
partition files chosen by a stable hash of the patient it belongs to (`crc32(id) % K`, the same on
every machine and process). A screening task then reads one partition and holds only that
partition's patients in memory. Resources point at their patient through `subject` / `patient`
(`Patient/ID`, absolute `.../Patient/ID`, `Patient/ID/_history/N`); Patient resources through their
`id`. Medication resources belong to nobody: they go to a shared file and each patient gets the ones
its medication records reference (`medicationReference`). Lines naming no patient are counted.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cds.engine.record import AUX_TYPES
from cds.errors import InputFileError
from cds.fhirjson import referenced_id, subject_patient

MEDICATIONS_FILE = "medications.ndjson"


def partition_of(patient_id: str, partitions: int) -> int:
    return zlib.crc32(patient_id.encode("utf-8")) % partitions


def iter_ndjson(path: Path) -> Iterator[tuple[int, bytes, Any]]:
    """(line number, raw line, parsed JSON) for every non-blank line; bad JSON raises naming the line."""
    with path.open("rb") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError:
                raise InputFileError(f"{path.name}: line {n} is not valid JSON") from None
            yield n, line if line.endswith(b"\n") else line + b"\n", data


@dataclass(slots=True)
class PartitionSummary:
    partitions: int
    patients: int = 0  # Patient resources seen
    resources: int = 0
    unassigned: int = 0  # resources naming no patient (and not Medication)
    medications: int = 0
    files: list[Path] = field(default_factory=list)
    types: set[str] = field(default_factory=set)


def partition_files(ndjson_files: Iterable[Path], out_dir: Path, partitions: int) -> PartitionSummary:
    """Split NDJSON files into `partitions` files under `out_dir` (plus the shared Medication file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = PartitionSummary(partitions=partitions)
    summary.files = [out_dir / f"part-{k:04d}.ndjson" for k in range(partitions)]
    with ExitStack() as stack:
        outs: list[BinaryIO] = [stack.enter_context(p.open("wb")) for p in summary.files]
        meds = stack.enter_context((out_dir / MEDICATIONS_FILE).open("wb"))
        for path in ndjson_files:
            for _n, line, data in iter_ndjson(path):
                if not isinstance(data, Mapping):
                    summary.unassigned += 1
                    continue
                summary.resources += 1
                rtype = data.get("resourceType")
                if isinstance(rtype, str):
                    summary.types.add(rtype)
                if rtype in AUX_TYPES:
                    meds.write(line)
                    summary.medications += 1
                    continue
                pid = subject_patient(data)
                if pid is None:
                    summary.unassigned += 1
                    continue
                if rtype == "Patient":
                    summary.patients += 1
                outs[partition_of(pid, partitions)].write(line)
    return summary


def load_medications(path: Path) -> dict[str, Mapping[str, Any]]:
    """Shared Medication resources by reference ("Medication/<id>")."""
    out: dict[str, Mapping[str, Any]] = {}
    if not path.exists():
        return out
    for _n, _line, data in iter_ndjson(path):
        if isinstance(data, Mapping) and isinstance(data.get("id"), str):
            out[f"Medication/{data['id']}"] = data
    return out


def medication_refs(resource: Mapping[str, Any]) -> Iterator[str]:
    mid = referenced_id(resource.get("medicationReference"), "Medication")
    if mid is not None:
        yield f"Medication/{mid}"


def group_partition(
    path: Path, medications: Mapping[str, Mapping[str, Any]]
) -> tuple[list[tuple[str, list[Any]]], int]:
    """The patients of one partition file, in patient id order, as (patient id, resources), and the
    number of resources whose patient has no Patient resource (those are not screened). Each
    patient also gets the shared Medications its records reference."""
    groups: dict[str, list[Any]] = {}
    has_patient: set[str] = set()
    for _n, _line, data in iter_ndjson(path):
        if not isinstance(data, Mapping):
            continue
        pid = subject_patient(data)
        if pid is None:
            continue
        groups.setdefault(pid, []).append(data)
        if data.get("resourceType") == "Patient":
            has_patient.add(pid)
    out: list[tuple[str, list[Any]]] = []
    orphans = 0
    for pid in sorted(groups):
        resources = groups.pop(pid)
        if pid not in has_patient:
            orphans += len(resources)
            continue
        refs = {ref for r in resources for ref in medication_refs(r)}
        resources.extend(medications[ref] for ref in sorted(refs) if ref in medications)
        out.append((pid, resources))
    return out, orphans
