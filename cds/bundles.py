"""Reading FHIR Bundles from files and splitting them per patient (an I/O edge of the CLI)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds.engine.record import AUX_TYPES, OPTIONAL_TYPES, READ_TYPES
from cds.errors import InputFileError

BUNDLE_TYPES = frozenset({"collection", "searchset", "transaction", "batch", "transaction-response", "batch-response"})
MAX_FILE_BYTES = 512 * 1024 * 1024


@dataclass
class PatientData:
    patient_id: str
    resources: list[Mapping[str, Any]] = field(default_factory=list)


@dataclass
class BundleContents:
    patients: list[PatientData]
    searched: frozenset[str]  # resource types present in the bundle (its data domains)
    unassigned: int  # resources that named no patient of the bundle


def read_bundle_file(path: Path) -> BundleContents:
    try:
        size = path.stat().st_size
    except OSError as err:
        raise InputFileError(f"{path}: cannot read ({err.strerror})") from None
    if size > MAX_FILE_BYTES:
        raise InputFileError(f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    try:
        with path.open("rb") as fh:
            data = json.load(fh)
    except OSError as err:
        raise InputFileError(f"{path}: cannot read ({err.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputFileError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise InputFileError(f"{path}: JSON nested too deeply") from None
    return split_bundle(data, source=str(path))


def _entries(bundle: Mapping[str, Any], source: str) -> Iterator[tuple[str | None, Mapping[str, Any]]]:
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise InputFileError(f"{source}: Bundle.entry is not a list")
    for e in entries:
        if not isinstance(e, Mapping):
            continue
        search = e.get("search")
        if isinstance(search, Mapping) and search.get("mode") == "outcome":
            continue
        res = e.get("resource")
        if not isinstance(res, Mapping):
            continue
        full_url = e.get("fullUrl")
        yield (full_url if isinstance(full_url, str) else None), res


def split_bundle(data: Any, source: str = "<input>") -> BundleContents:
    """Group a Bundle's resources per Patient. References may be `Patient/id`, absolute URLs or
    `urn:uuid:` fullUrls (transaction bundles)."""
    if not isinstance(data, Mapping) or data.get("resourceType") != "Bundle":
        raise InputFileError(f"{source}: not a FHIR Bundle (resourceType must be 'Bundle')")
    btype = data.get("type")
    if btype not in BUNDLE_TYPES:
        raise InputFileError(f"{source}: unsupported Bundle.type {btype!r}")
    entries = list(_entries(data, source))
    patients: dict[str, PatientData] = {}
    alias: dict[str, str] = {}  # fullUrl -> patient id
    for full_url, res in entries:
        if res.get("resourceType") != "Patient":
            continue
        pid = res.get("id")
        if not isinstance(pid, str) or not pid:
            if full_url and full_url.startswith("urn:uuid:"):
                pid = full_url.removeprefix("urn:uuid:")
                res = {**res, "id": pid}
            else:
                continue
        patients.setdefault(pid, PatientData(pid)).resources.append(res)
        if full_url:
            alias[full_url] = pid
    if not patients:
        raise InputFileError(f"{source}: no Patient resource in the Bundle")
    searched: set[str] = set()
    unassigned = 0
    for _full_url, res in entries:
        rtype = res.get("resourceType")
        if rtype == "Patient":
            continue
        if rtype in READ_TYPES or rtype in AUX_TYPES or rtype in OPTIONAL_TYPES:
            searched.add(str(rtype))
        pid = _patient_of(res, alias)
        if pid is not None and pid in patients:
            patients[pid].resources.append(_with_local_patient_ref(res, pid))
        elif rtype in AUX_TYPES:
            for p in patients.values():  # shared Medication resources are visible to every patient
                p.resources.append(res)
        else:
            unassigned += 1
    searched.add("Patient")
    return BundleContents(list(patients.values()), frozenset(searched), unassigned)


def _subject_ref(res: Mapping[str, Any]) -> str | None:
    for key in ("subject", "patient"):
        ref = res.get(key)
        if isinstance(ref, Mapping) and isinstance(ref.get("reference"), str):
            return str(ref["reference"])
    return None


def _patient_of(res: Mapping[str, Any], alias: Mapping[str, str]) -> str | None:
    ref = _subject_ref(res)
    if ref is None:
        return None
    if ref in alias:
        return alias[ref]
    parts = ref.split("/")
    for i in range(len(parts) - 1):
        if parts[i] == "Patient":
            return parts[i + 1]
    return None


def _with_local_patient_ref(res: Mapping[str, Any], pid: str) -> Mapping[str, Any]:
    """Rewrite a urn:uuid subject reference to Patient/<id> so the engine can match it."""
    ref = _subject_ref(res)
    if ref is None or ref.startswith("Patient/") or "/Patient/" in ref:
        return res
    key = "subject" if "subject" in res else "patient"
    return {**res, key: {**res[key], "reference": f"Patient/{pid}"}}
