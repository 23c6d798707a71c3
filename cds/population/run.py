"""`cds population`: export a population with FHIR Bulk Data, screen every patient, store the results.

A run lives in a directory `<population_dir>/runs/<run id>/` with a `state.json` that records how far
it got: `kicked-off` (status URL kept), `exported` (manifest kept), `downloaded`, `screened`,
`stored`. Running the same command again (same server, trial, group, since, as-of) resumes an
unfinished run from its last stage instead of starting a second export; `--restart` discards it.
Files are written as `*.part` and renamed when complete, so an interruption never leaves a
truncated file that looks whole. The database gets the run and all its results in one transaction
at the end (`PopulationStore.save_run`), keyed by the run id: nothing half-written, no duplicates.

Manifest `error` entries (NDJSON OperationOutcomes) are reported on stderr. Their resource types
(named in the issue text; all exported types if none is named) are passed to the engine as
`incomplete`, so criteria needing them are "unknown" rather than silently "not met", and the exit
status is 1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import SQLAlchemyError

from cds import trials
from cds.config import Settings
from cds.engine.record import AUX_TYPES
from cds.engine.trial import Trial
from cds.errors import CdsError, FhirError, SmartAuthorizationFailed
from cds.fhir.smart_backend import (
    BackendClient,
    BackendServicesAuth,
    SmartConfiguration,
    check_private_key_jwt,
    discover,
    load_signing_key,
    resource_scopes,
    scope_version,
)
from cds.fhirjson import subject_patient
from cds.population.bulk import BulkExportClient, ExportRequest, Manifest, PollPolicy, operation_outcome_texts
from cds.population.partition import MEDICATIONS_FILE, iter_ndjson, medication_refs, partition_files
from cds.population.screening import PartitionResult, ScreenJob, run_partitions
from cds.population.store import PopulationStore, RunInfo

STAGES = ("new", "kicked-off", "exported", "downloaded", "screened", "stored")
MAX_PARTITIONS = 1024
MEDICATION_FETCH_FILE = "9999-Medication.ndjson"
MEDICATION_BATCH = 100


def trial_for(trial_id: str) -> Trial:
    """The registered trial `cds population --trial` names (`cds.trials.UnknownTrial`, a ValueError, if none)."""
    return trials.get(trial_id)


def export_plan(trial: Trial) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The resource types the trial reads (as the hook's prefetch, plus shared Medication) and the
    `_typeFilter` queries that narrow them the same way (the hook's own queries: Observation codes
    in the window, codes read over the whole record, categories read by text; several filters of one
    type are OR-ed). A type one query reads whole gets no filter: a filter would narrow the export
    to what the others select (the reports entered in error, say, instead of every report)."""
    from cds.service.prefetch import PATIENT_TOKEN, queries_for

    types: list[str] = []
    filters: dict[str, list[str]] = {}
    whole: set[str] = set()
    for q in queries_for(trial):
        if q.resource_type not in types:
            types.append(q.resource_type)
        narrowing = [(n, v) for n, v in q.params if PATIENT_TOKEN not in v]
        if narrowing:
            filters.setdefault(q.resource_type, []).append(
                f"{q.resource_type}?" + "&".join(f"{n}={v}" for n, v in narrowing)
            )
        else:
            whole.add(q.resource_type)
    types.extend(t for t in AUX_TYPES if t not in types)
    return tuple(types), tuple(f for t in types if t not in whole for f in filters.get(t, ()))


@dataclass(frozen=True, slots=True)
class PopulationOptions:
    fhir_server: str
    trial: str = trials.DEFAULT_TRIAL
    group: str | None = None
    since: str | None = None
    as_of: date | None = None
    fmt: str = "table"
    workers: int = 1
    scheduler: str | None = None
    restart: bool = False
    partitions: int | None = None
    type_filter: bool = True
    # SMART Backend Services (None: the setting CDS_BULK_CLIENT_ID etc.; both unset: no authorization)
    client_id: str | None = None
    private_key: str | None = None
    key_id: str | None = None
    token_url: str | None = None


@dataclass(slots=True)
class RunState:
    run_id: str
    key: str
    params: dict[str, Any]
    started_at: str
    stage: str = "new"
    status_url: str | None = None
    manifest: dict[str, Any] | None = None
    export_errors: int = 0
    incomplete: list[str] | None = None
    types: list[str] | None = None
    # With --since: "changes" (export what changed, to learn which patients changed), then "full"
    # (a Patient-level export of those patients' whole records, which is what is screened).
    phase: str = "full"
    changed: list[str] | None = None

    def save(self, directory: Path) -> None:
        tmp = directory / "state.json.part"
        tmp.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        tmp.replace(directory / "state.json")

    @classmethod
    def load(cls, directory: Path) -> RunState:
        data = json.loads((directory / "state.json").read_text(encoding="utf-8"))
        return cls(**data)

    def at_least(self, stage: str) -> bool:
        return STAGES.index(self.stage) >= STAGES.index(stage)


def _run_key(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:24]


def _find_unfinished(root: Path, key: str) -> Path | None:
    if not root.is_dir():
        return None
    for d in sorted(root.iterdir()):
        try:
            state = RunState.load(d)
        except (OSError, ValueError, TypeError):
            continue
        if state.key == key and state.stage != "stored":
            return d
    return None


_TYPE_WORD = re.compile(r"\b([A-Z][A-Za-z]+)\b")


def incomplete_types(error_texts: Sequence[str], exported: Sequence[str]) -> list[str]:
    """Resource types that export errors name; every exported type but Patient if none is named."""
    named = {m for t in error_texts for m in _TYPE_WORD.findall(t) if m in exported}
    if not error_texts:
        return []
    if named:
        return sorted(named)
    return [t for t in exported if t != "Patient"]


class PopulationRun:
    def __init__(self, opts: PopulationOptions, settings: Settings, out: TextIO, err: TextIO, http: httpx.Client):
        self.opts = opts
        self.settings = settings
        self.out = out
        self.err = err
        self.console = Console(file=err, stderr=True, highlight=False)
        self.http = http
        self.trial = trial_for(opts.trial)
        self.as_of = opts.as_of or date.today()  # the clock is read here, at the edge
        self.client = BulkExportClient(
            opts.fhir_server,
            http,
            max_file_bytes=settings.bulk_max_file_bytes,
            poll=PollPolicy(max_interval=settings.bulk_poll_max_interval, timeout=settings.bulk_export_timeout),
        )
        self.root = Path(settings.population_dir) / "runs"
        self.backend = backend_settings(opts, settings)

    def _authorize(self) -> None:
        """SMART Backend Services: load the key, find the token endpoint, derive the scopes from what
        the trial reads (the hook's queries: `export_plan`); the token itself is asked for at the
        first request. Only when a client id and a key are configured (HAPI has no authorization)."""
        if self.backend is None or self.client.auth is not None:
            return
        client_id, key_path, key_id, token_url = self.backend
        key = load_signing_key(Path(key_path), key_id)
        config: SmartConfiguration | None = None
        try:
            config = discover(self.http, self.opts.fhir_server)
        except SmartAuthorizationFailed:
            if token_url is None:
                raise  # no way to find the token endpoint
        if config is not None:
            check_private_key_jwt(config)
        url = token_url or (config.token_endpoint if config else "")
        types = set(export_plan(self.trial)[0]) | ({"Group"} if self.opts.group else set())
        scope = resource_scopes(types, context="system", version=scope_version(config))
        self.console.print(f"SMART backend authorization: client {client_id}, token endpoint {url}", markup=False)
        self.client.auth = BackendServicesAuth(self.http, BackendClient(client_id, key, url), scope)

    # -- run directory ---------------------------------------------------------------------------

    def _open_run(self) -> tuple[Path, RunState]:
        params = {
            "fhirServer": self.opts.fhir_server.rstrip("/"),
            "trial": self.trial.id,
            "group": self.opts.group,
            "since": self.opts.since,
            "asOf": self.as_of.isoformat(),
            "typeFilter": self.opts.type_filter,
        }
        key = _run_key(params)
        existing = _find_unfinished(self.root, key)
        if existing is not None and self.opts.restart:
            self.console.print(f"discarding unfinished run {existing.name} (--restart)")
            shutil.rmtree(existing)
            existing = None
        if existing is not None:
            state = RunState.load(existing)
            self.console.print(f"resuming run {state.run_id} (stage: {state.stage})")
            return existing, state
        now = datetime.now(UTC)
        run_id = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
        directory = self.root / run_id
        directory.mkdir(parents=True)
        state = RunState(run_id=run_id, key=key, params=params, started_at=now.isoformat())
        state.phase = "changes" if self.opts.since else "full"
        state.save(directory)
        self.console.print(f"run {run_id}")
        return directory, state

    # -- stages ----------------------------------------------------------------------------------

    def _kick_off(self, directory: Path, state: RunState) -> None:
        types, filters = export_plan(self.trial)
        if self._compartment_only():
            # Group and Patient level exports carry only patient-compartment types; shared
            # Medications are read afterwards by id (`_fetch_medications`).
            types = tuple(t for t in types if t not in AUX_TYPES)
        if state.phase == "changes":
            request = ExportRequest(types=types, group=self.opts.group, since=self.opts.since)
        elif self.opts.since:
            request = ExportRequest(types=types, patients=tuple(state.changed or ()))
        else:
            request = ExportRequest(types=types, group=self.opts.group)
        capability = self.client.capability()
        operation = self.client.export_operation(capability, request)
        if self.opts.type_filter and filters and self.client.supports_type_filter(operation):
            request = dataclasses.replace(request, type_filters=filters)
        state.status_url = self.client.kick_off(request)
        state.types = list(types)
        state.stage = "kicked-off"
        state.save(directory)

    def _wait(self, directory: Path, state: RunState) -> None:
        assert state.status_url is not None
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=self.console
        ) as progress:
            task = progress.add_task("bulk export: waiting for the server", total=None)

            def on_progress(p: Any) -> None:
                note = f" ({p.text})" if p.text else ""
                progress.update(task, description=f"bulk export: in progress{note}, poll {p.polls}")

            manifest = self.client.wait(state.status_url, on_progress=on_progress)
        state.manifest = manifest.to_json()
        state.stage = "exported"
        state.save(directory)

    def _download(self, directory: Path, state: RunState) -> None:
        assert state.manifest is not None
        manifest = Manifest.from_json(state.manifest)
        files = directory / "files"
        errors = directory / "errors"
        files.mkdir(exist_ok=True)
        errors.mkdir(exist_ok=True)
        jobs = [(e, files / f"{i:04d}-{_safe(e.type)}.ndjson") for i, e in enumerate(manifest.output)]
        jobs += [(e, errors / f"{i:04d}.ndjson") for i, e in enumerate(manifest.error)]
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=self.console
        ) as progress:
            task = progress.add_task("downloading NDJSON", total=len(jobs))
            for entry, dest in jobs:
                if not dest.exists():
                    self.client.download(entry.url, dest, requires_access_token=manifest.requires_access_token)
                progress.advance(task)
        texts: list[str] = []
        for _entry, dest in jobs[len(manifest.output) :]:
            texts.extend(operation_outcome_texts(dest))
        if manifest.error:
            self.console.print(f"[bold red]the export reported {len(texts)} error(s):[/]")
            for t in texts:
                self.console.print(f"  - {t}", markup=False)
        if self._compartment_only() and state.phase == "full" and not (files / MEDICATION_FETCH_FILE).exists():
            self._fetch_medications(files)
        exported = state.types or []
        state.export_errors = len(texts) if manifest.error else 0
        state.incomplete = incomplete_types(texts, exported) if manifest.error else []
        if state.incomplete:
            self.console.print(f"screening with these types marked incomplete: {', '.join(state.incomplete)}")
        state.stage = "downloaded"
        state.save(directory)

    def _fetch_medications(self, files: Path) -> None:
        """Read the Medications that exported medication records reference (`Medication?_id=`)."""
        ids: set[str] = set()
        for path in sorted(files.glob("*.ndjson")):
            for _n, _line, data in iter_ndjson(path):
                if isinstance(data, dict):
                    ids.update(ref.removeprefix("Medication/") for ref in medication_refs(data))
        part = files / (MEDICATION_FETCH_FILE + ".part")
        with part.open("w", encoding="utf-8") as fh:
            ordered = sorted(ids)
            for i in range(0, len(ordered), MEDICATION_BATCH):
                batch = ordered[i : i + MEDICATION_BATCH]
                for resource in self.client.search("Medication", {"_id": ",".join(batch), "_count": str(len(batch))}):
                    fh.write(json.dumps(resource, ensure_ascii=False) + "\n")
        part.replace(files / MEDICATION_FETCH_FILE)

    def _screen(self, directory: Path, state: RunState) -> None:
        files = sorted((directory / "files").glob("*.ndjson"))
        total = sum(f.stat().st_size for f in files)
        k = self.opts.partitions or max(4 * self.opts.workers, -(-total // self.settings.population_partition_bytes))
        k = max(1, min(k, MAX_PARTITIONS))
        parts_dir = directory / "parts"
        if parts_dir.exists():
            shutil.rmtree(parts_dir)
        summary = partition_files(files, parts_dir, k)
        if summary.unassigned:
            self.console.print(f"warning: {summary.unassigned} exported resource(s) name no patient (not screened)")
        searched = frozenset({*(state.types or []), "Patient", *(AUX_TYPES if self._compartment_only() else ())})
        job = ScreenJob(
            as_of=self.as_of,
            searched=searched,
            incomplete=tuple(state.incomplete or ()),
            trial=self.trial.id,
            medications_file=str(parts_dir / MEDICATIONS_FILE),
        )
        results = directory / "results"
        if results.exists():
            shutil.rmtree(results)
        results.mkdir()
        orphans = 0
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
        ) as progress:
            where = self.opts.scheduler or f"{self.opts.workers} local worker(s)"
            task = progress.add_task(f"screening {summary.patients} patients on {where}", total=len(summary.files))

            def on_result(r: PartitionResult) -> None:
                nonlocal orphans
                orphans += r.orphans
                part = results / f"part-{r.index:04d}.jsonl.part"
                with part.open("w", encoding="utf-8") as fh:
                    fh.writelines(line + "\n" for line in r.lines)
                part.replace(results / f"part-{r.index:04d}.jsonl")
                progress.advance(task)

            run_partitions(
                summary.files, job, workers=self.opts.workers, scheduler=self.opts.scheduler, on_result=on_result
            )
        if orphans:
            self.console.print(f"warning: {orphans} resource(s) belong to patients the export did not include")
        state.stage = "screened"
        state.save(directory)

    def _store(self, directory: Path, state: RunState) -> None:
        store = PopulationStore(self.settings.database_url)
        try:
            store.create_tables()
            manifest = state.manifest or {}
            info = RunInfo(
                id=state.run_id,
                trial=self.trial.id,
                fhir_server=state.params["fhirServer"],
                export_level=f"Group/{self.opts.group}" if self.opts.group else "system",
                since=self.opts.since,
                as_of=self.as_of,
                transaction_time=manifest.get("transactionTime") or None,
                started_at=datetime.fromisoformat(state.started_at),
                export_errors=state.export_errors,
            )
            stored = store.save_run(info, _result_lines(directory), completed_at=datetime.now(UTC))
        except SQLAlchemyError as err:
            # The run stays "screened": running the command again retries the write.
            raise CdsError(f"database: the run could not be stored ({type(err).__name__})") from None
        finally:
            store.dispose()
        if not stored:
            self.console.print(f"run {state.run_id} was already in the database (not written twice)")
        state.stage = "stored"
        state.save(directory)
        for sub in ("files", "parts"):
            shutil.rmtree(directory / sub, ignore_errors=True)

    # -- output ----------------------------------------------------------------------------------

    def _print(self, directory: Path) -> Counter[str]:
        verdicts: Counter[str] = Counter()
        for line in _result_lines(directory):
            report = json.loads(line)
            verdicts[report["verdict"]] += 1
            if self.opts.fmt == "jsonl":
                self.out.write(line + "\n")
            else:
                self.out.write(_table_row(report) + "\n")
        return verdicts

    def _compartment_only(self) -> bool:
        return bool(self.opts.group or self.opts.since)

    def _export(self, directory: Path, state: RunState) -> None:
        if not state.at_least("downloaded"):
            self._authorize()
        if not state.at_least("kicked-off"):
            self._kick_off(directory, state)
        if not state.at_least("exported"):
            self._wait(directory, state)
        if not state.at_least("downloaded"):
            self._download(directory, state)

    def _changed_patients(self, directory: Path, state: RunState) -> None:
        """After the `_since` export: the patients it names; then start over for their full records."""
        ids: set[str] = set()
        for path in sorted((directory / "files").glob("*.ndjson")):
            for _n, _line, data in iter_ndjson(path):
                pid = subject_patient(data) if isinstance(data, dict) else None
                if pid is not None:
                    ids.add(pid)
        self.console.print(f"{len(ids)} patient(s) with changes since {self.opts.since}")
        shutil.rmtree(directory / "files", ignore_errors=True)
        shutil.rmtree(directory / "errors", ignore_errors=True)
        state.changed = sorted(ids)
        state.phase = "full"
        state.stage = "new"
        state.status_url = None
        state.manifest = None
        state.save(directory)

    def run(self) -> int:
        directory, state = self._open_run()
        if state.phase == "changes":
            self._export(directory, state)
            self._changed_patients(directory, state)
        if state.changed == [] and not state.at_least("screened"):
            (directory / "files").mkdir(exist_ok=True)  # nothing changed: nothing to export or screen
            state.types = list(export_plan(self.trial)[0])
            state.stage = "downloaded"
        self._export(directory, state)
        if not state.at_least("screened"):
            self._screen(directory, state)
        if not state.at_least("stored"):
            self._store(directory, state)
        if self.opts.fmt == "table":
            self.out.write(f"{'patient':<40} {'verdict':<20} met not_met unknown  incomplete\n")
        verdicts = self._print(directory)
        summary = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
        self.console.print(f"run {state.run_id}: {sum(verdicts.values())} patient(s) screened ({summary or 'none'})")
        return 1 if state.export_errors else 0


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", text)[:40] or "data"


def _result_lines(directory: Path) -> Iterator[str]:
    for path in sorted((directory / "results").glob("part-*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield line.rstrip("\n")


def _table_row(report: dict[str, Any]) -> str:
    counts = Counter(c["status"] for c in report["criteria"])
    incomplete = ",".join(report.get("incomplete", []))
    patient = str(report["patient"])
    return (
        f"{patient:<40} {report['verdict']:<20} {counts['met']:>3} {counts['not_met']:>7} "
        f"{counts['unknown']:>7}  {incomplete}"
    ).rstrip()


def backend_settings(opts: PopulationOptions, settings: Settings) -> tuple[str, str, str | None, str | None] | None:
    """(client id, key file, key id, token URL) of SMART Backend Services, the CLI options before the
    settings; None when neither a client id nor a key is given."""
    client_id = opts.client_id or settings.bulk_client_id
    key = opts.private_key or settings.bulk_private_key
    key_id = opts.key_id or settings.bulk_key_id
    token_url = opts.token_url or settings.bulk_token_url
    if not client_id and not key:
        if token_url or key_id:
            raise SmartAuthorizationFailed(
                "SMART backend authorization: a token URL or key id is given without --client-id and --private-key"
            )
        return None
    if not client_id or not key:
        raise SmartAuthorizationFailed("SMART backend authorization needs both --client-id and --private-key")
    return client_id, key, key_id, token_url


def run_population(
    opts: PopulationOptions, settings: Settings, out: TextIO, err: TextIO, http: httpx.Client | None = None
) -> int:
    """The `cds population` command; returns the exit status (0 ok, 1 export errors, 2 failure)."""
    timeout = httpx.Timeout(settings.bulk_http_timeout, connect=settings.fhir_connect_timeout)
    own = http is None
    client = http or httpx.Client(timeout=timeout, follow_redirects=False)
    try:
        return PopulationRun(opts, settings, out, err, client).run()
    except CdsError as e:
        print(f"error: {e.message}", file=err)
        return 2
    finally:
        if own:
            client.close()


__all__ = ["FhirError", "PopulationOptions", "run_population"]
