"""Reading FHIR exports from files and splitting them per patient (an I/O edge of the CLI).

Accepted inputs (`read_inputs`):

* a FHIR Bundle in a `.json` file (collection, searchset, transaction, batch and their responses);
  a `.json` file holding one resource of a type the engine does not read (the `parameters.json`
  manifest of a Synthea Bulk Data export) is skipped like any unread resource; any other lone
  resource is an error (not a Bundle);
  in transaction bundles, `urn:uuid:` fullUrls are resolved: every reference to an entry's fullUrl
  becomes `<Type>/<id>` (an entry without an id takes the uuid as its id);
* NDJSON (`.ndjson`, FHIR Bulk Data: one resource per line, one file per type): the NDJSON files
  of one directory form one export, so a patient's data is gathered across its files;
* a directory: every `*.json` and `*.ndjson` file below it, recursively, in sorted order.

Resources of types the engine does not read (Encounter, Claim, ...) are not passed on; they are
counted per file (`Contents.skipped`) so the CLI reports them in one line per file. A bad file is
an `InputFileError` naming it; the other inputs are still read. When an NDJSON file of an export
is unreadable, the export is still screened but the types that file holds are reported as
`incomplete` (criteria that need them become `unknown`), never silently absent.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cds import fhirjson
from cds.bounded import read_file_bounded
from cds.engine.record import AUX_TYPES, READ_TYPES
from cds.errors import InputFileError

BUNDLE_TYPES = frozenset({"collection", "searchset", "transaction", "batch", "transaction-response", "batch-response"})
MAX_FILE_BYTES = 512 * 1024 * 1024
INPUT_SUFFIXES = (".json", ".ndjson")
_KEPT_TYPES = frozenset(READ_TYPES) | frozenset(AUX_TYPES)


@dataclass
class PatientData:
    patient_id: str
    resources: list[Mapping[str, Any]] = field(default_factory=list)


@dataclass
class BundleContents:
    patients: list[PatientData]
    searched: frozenset[str]  # resource types present in the input (its data domains)
    unassigned: int  # resources that named no patient of the input
    source: str = "<input>"
    # file -> resource type -> count, for resources of types the engine does not read
    skipped: dict[str, Counter[str]] = field(default_factory=dict)
    incomplete: frozenset[str] = frozenset()  # types an unreadable file of the input held


@dataclass
class InputError:
    source: str
    message: str


@dataclass
class _Entry:
    source: str  # the file it came from
    full_url: str | None
    resource: Mapping[str, Any]


# ---------------------------------------------------------------------------------------------
# files


def input_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The files to read: each path as given, a directory expanded to its *.json / *.ndjson files."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in INPUT_SUFFIXES and p.is_file())
        else:
            yield path


def read_inputs(paths: Sequence[Path]) -> Iterator[BundleContents | InputError]:
    """Read every input in order; NDJSON files are grouped per directory into one export."""
    ndjson_groups: dict[Path, list[Path]] = {}
    order: list[Path | tuple[Path]] = []  # a file, or (directory,) for an NDJSON export
    for f in input_files(paths):
        if f.suffix == ".ndjson":
            group = f.parent
            if group not in ndjson_groups:
                ndjson_groups[group] = []
                order.append((group,))
            ndjson_groups[group].append(f)
        else:
            order.append(f)
    for item in order:
        if isinstance(item, tuple):
            yield from read_ndjson_export(ndjson_groups[item[0]])
        else:
            try:
                yield read_bundle_file(item)
            except InputFileError as err:
                yield InputError(str(item), err.message)


def _open_checked(path: Path) -> bytes:
    try:
        return read_file_bounded(
            path, MAX_FILE_BYTES, lambda: InputFileError(f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
        )
    except OSError as err:
        raise InputFileError(f"{path}: cannot read ({err.strerror})") from None


def read_bundle_file(path: Path) -> BundleContents:
    raw = _open_checked(path)
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputFileError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise InputFileError(f"{path}: JSON nested too deeply") from None
    rtype = data.get("resourceType") if isinstance(data, Mapping) else None
    if isinstance(rtype, str) and rtype != "Bundle" and rtype not in _KEPT_TYPES:
        # a lone resource the engine does not read (e.g. the Parameters manifest of a Bulk Data
        # export): nothing to screen, reported with the skipped types
        return BundleContents([], frozenset(), 0, str(path), {str(path): Counter({rtype: 1})})
    return split_bundle(data, source=str(path))


def _ndjson_resources(path: Path) -> list[Mapping[str, Any]]:
    raw = _open_checked(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputFileError(f"{path}: not UTF-8 ({err.reason})") from None
    out: list[Mapping[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            res = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputFileError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
        except RecursionError:
            raise InputFileError(f"{path}:{lineno}: JSON nested too deeply") from None
        if not isinstance(res, Mapping) or not isinstance(res.get("resourceType"), str):
            raise InputFileError(f"{path}:{lineno}: not a FHIR resource (no resourceType)")
        out.append(res)
    return out


def _type_named_by(path: Path) -> str | None:
    """Bulk Data file names start with the resource type: `Condition.ndjson`, `Condition-2.ndjson`,
    `Condition_2.ndjson`, `Condition.002.ndjson`."""
    stem = path.name.removesuffix(".ndjson")
    head = stem.replace("_", "-").replace(".", "-").split("-")[0]
    return head if head in _KEPT_TYPES else None


def read_ndjson_export(files: Sequence[Path]) -> Iterator[BundleContents | InputError]:
    """One Bulk Data export: the resources of all `files` grouped per patient.

    An unreadable file is reported (an `InputError`) and the export is still screened, with the
    types that file holds (named by the file, else every type the engine reads) marked incomplete.
    """
    entries: list[_Entry] = []
    incomplete: set[str] = set()
    for f in files:
        try:
            entries.extend(_Entry(str(f), None, r) for r in _ndjson_resources(f))
        except InputFileError as err:
            named = _type_named_by(f)
            lost = {named} if named else set(READ_TYPES) - {"Patient"}
            incomplete |= lost
            yield InputError(str(f), f"{err.message}; reported as incomplete: {', '.join(sorted(lost))}")
    source = str(files[0].parent) if files else "<ndjson>"
    try:
        contents = _split(entries, source=source, what="NDJSON export")
    except InputFileError as err:
        yield InputError(source, err.message)
        return
    contents.incomplete = frozenset(incomplete)
    yield contents


# ---------------------------------------------------------------------------------------------
# grouping per patient


def _bundle_entries(bundle: Mapping[str, Any], source: str) -> Iterator[_Entry]:
    if not isinstance(bundle.get("entry", []), list):
        raise InputFileError(f"{source}: Bundle.entry is not a list")
    for e in fhirjson.bundle_entries(bundle)[0]:
        yield _Entry(source, e.full_url, e.resource)


def split_bundle(data: Any, source: str = "<input>") -> BundleContents:
    """Group a Bundle's resources per Patient. References may be `Patient/id`, absolute URLs or
    `urn:uuid:` fullUrls (transaction bundles)."""
    if not isinstance(data, Mapping) or data.get("resourceType") != "Bundle":
        raise InputFileError(f"{source}: not a FHIR Bundle (resourceType must be 'Bundle')")
    btype = data.get("type")
    if btype not in BUNDLE_TYPES:
        raise InputFileError(f"{source}: unsupported Bundle.type {btype!r}")
    return _split(list(_bundle_entries(data, source)), source=source, what="Bundle")


def _with_ids(entries: list[_Entry]) -> tuple[list[_Entry], dict[str, str]]:
    """Entries with ids given to `urn:uuid:` entries without one, and the fullUrl -> `Type/id` map
    (`cds.fhirjson.with_local_ids`)."""
    resolved, index = fhirjson.with_local_ids(fhirjson.Entry(e.full_url, e.resource) for e in entries)
    return [_Entry(e.source, r.full_url, r.resource) for e, r in zip(entries, resolved, strict=True)], index


def _split(entries: list[_Entry], *, source: str, what: str) -> BundleContents:
    entries, local = _with_ids(entries)
    urn_refs = fhirjson.urn_index(local)
    patients: dict[str, PatientData] = {}
    skipped: dict[str, Counter[str]] = {}
    kept: list[_Entry] = []
    for e in entries:
        rtype = e.resource.get("resourceType")
        if rtype not in _KEPT_TYPES:
            skipped.setdefault(e.source, Counter())[str(rtype) if isinstance(rtype, str) else "(no type)"] += 1
            continue
        kept.append(e)
        if rtype == "Patient":
            pid = fhirjson.resource_id(e.resource)
            if pid is not None:
                patients.setdefault(pid, PatientData(pid)).resources.append(e.resource)
    if not patients:
        raise InputFileError(f"{source}: no Patient resource in the {what}")
    searched: set[str] = {"Patient"}
    unassigned = 0
    shared: dict[str, list[Mapping[str, Any]]] = {}  # Medication id -> resources (ids may repeat)
    for e in kept:
        res = e.resource
        rtype = str(res.get("resourceType"))
        if rtype == "Patient":
            continue
        searched.add(rtype)
        if urn_refs:
            res = fhirjson.resolve_local_references(res, urn_refs)
        pid = fhirjson.subject_patient(res)
        if pid is not None and pid in patients:
            patients[pid].resources.append(res)
        elif rtype in AUX_TYPES:
            shared.setdefault(str(res.get("id", "")), []).append(res)
        else:
            unassigned += 1
    if shared:
        # a shared Medication goes to every patient whose resources reference it (a large Bulk
        # Data export would otherwise give every Medication to every patient)
        for p in patients.values():
            wanted = {mid for r in p.resources if (mid := _medication_id(r)) is not None}
            p.resources.extend(m for mid in sorted(wanted & shared.keys()) for m in shared[mid])
    return BundleContents(list(patients.values()), frozenset(searched), unassigned, source, skipped)


def _medication_id(res: Mapping[str, Any]) -> str | None:
    return fhirjson.referenced_id(res.get("medicationReference"), "Medication")


def skipped_summary(path: str, counts: Mapping[str, int]) -> str:
    """One line for the resources of one file that the engine does not read."""
    total = sum(counts.values())
    kinds = ", ".join(f"{t} {n}" for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"note: {path}: skipped {total} resource(s) of types not read by this service ({kinds})"
