"""A FHIR Bulk Data (`$export`) client: kick-off, status polling, bounded streaming download.

    client = BulkExportClient(base_url, http)
    status_url = client.kick_off(ExportRequest(types=("Patient", "Condition")))
    manifest = client.wait(status_url, on_progress=...)
    for output in manifest.output: client.download(output.url, path)

Spec: https://hl7.org/fhir/uv/bulkdata/export.html. Kick-off is a GET with `Prefer: respond-async`
(system level `[base]/$export`, Group level `[base]/Group/ID/$export`); the server answers 202 with
a `Content-Location` status URL. Polling that URL answers 202 (in progress, optional `X-Progress`
and `Retry-After`) until 200 with the manifest (`output` and `error` file lists), or an error
(4xx/5xx with an OperationOutcome). Output files are NDJSON, downloaded with streaming to disk,
never whole in memory, and refused beyond a size bound.

Failures are `FhirError`s with a message naming what went wrong; a server that does not
offer `$export` gets one message naming the missing capability. Messages never quote resource
content (only OperationOutcome diagnostics, which describe the server's error).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from cds.bounded import bounded
from cds.config import setting_default
from cds.errors import FhirError, FhirInvalidBody, FhirOutsideBase, FhirUnreachable, fhir_status_error
from cds.fhir.smart_backend import NO_AUTH, same_origin

NDJSON = "application/fhir+ndjson"
FHIR_JSON = "application/fhir+json"
UNSUPPORTED_STATUSES = frozenset({404, 405, 501})
BULK_DATA_IG = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"


@dataclass(frozen=True, slots=True)
class ExportRequest:
    types: tuple[str, ...]
    group: str | None = None
    since: str | None = None  # FHIR instant
    type_filters: tuple[str, ...] = ()  # e.g. "Observation?code=http://loinc.org|1234-5"
    patients: tuple[str, ...] = ()  # Patient-level export of these patients (POST with Parameters)

    @property
    def level(self) -> str:
        if self.patients:
            return "Patient"
        return f"Group/{self.group}" if self.group else "system"

    def path(self) -> str:
        if self.patients:
            return "Patient/$export"
        return f"Group/{self.group}/$export" if self.group else "$export"

    def parameters(self) -> dict[str, Any]:
        """The kick-off as a FHIR Parameters resource (for POST)."""
        params: list[dict[str, Any]] = [{"name": n, "valueString": v} for n, v in self.params()]
        params.extend({"name": "patient", "valueReference": {"reference": f"Patient/{p}"}} for p in self.patients)
        return {"resourceType": "Parameters", "parameter": params}

    def params(self) -> tuple[tuple[str, str], ...]:
        out = [("_outputFormat", NDJSON), ("_type", ",".join(self.types))]
        if self.since:
            out.append(("_since", self.since))
        # One `_typeFilter` per query (Bulk Data v2), so commas inside a query stay unambiguous.
        out.extend(("_typeFilter", f) for f in self.type_filters)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    type: str
    url: str
    count: int | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    transaction_time: str
    request: str
    output: tuple[ManifestEntry, ...]
    error: tuple[ManifestEntry, ...] = ()
    requires_access_token: bool = False

    def to_json(self) -> dict[str, Any]:
        def entries(items: Sequence[ManifestEntry]) -> list[dict[str, Any]]:
            return [
                {"type": e.type, "url": e.url, **({"count": e.count} if e.count is not None else {})} for e in items
            ]

        return {
            "transactionTime": self.transaction_time,
            "request": self.request,
            "requiresAccessToken": self.requires_access_token,
            "output": entries(self.output),
            "error": entries(self.error),
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        if not isinstance(data, Mapping):
            raise FhirInvalidBody("bulk export: the completed status is not a JSON manifest object")

        def entries(key: str) -> tuple[ManifestEntry, ...]:
            raw = data.get(key, [])
            if raw is None:
                return ()
            if not isinstance(raw, list):
                raise FhirInvalidBody(f"bulk export: manifest `{key}` is not a list")
            out = []
            for item in raw:
                if not isinstance(item, Mapping) or not isinstance(item.get("url"), str):
                    raise FhirInvalidBody(f"bulk export: a manifest `{key}` entry has no url")
                count = item.get("count")
                out.append(
                    ManifestEntry(
                        type=str(item.get("type", "")),
                        url=str(item["url"]),
                        count=count if isinstance(count, int) else None,
                    )
                )
            return tuple(out)

        return cls(
            transaction_time=str(data.get("transactionTime", "")),
            request=str(data.get("request", "")),
            output=entries("output"),
            error=entries("error"),
            requires_access_token=bool(data.get("requiresAccessToken", False)),
        )


@dataclass(slots=True)
class Progress:
    """What a poll said: how long we have waited, the server's X-Progress text (if any)."""

    elapsed: float
    polls: int
    text: str | None = None


@dataclass(slots=True)
class PollPolicy:
    initial: float = 1.0
    factor: float = 1.5
    max_interval: float = setting_default("bulk_poll_max_interval")
    timeout: float = setting_default("bulk_export_timeout")
    sleep: Callable[[float], None] = field(default=time.sleep)
    clock: Callable[[], float] = field(default=time.monotonic)


def _outcome_text(response: httpx.Response) -> str:
    """The diagnostics of an OperationOutcome body (server error text), or the status line."""
    try:
        body = response.json()
    except (ValueError, httpx.ResponseNotRead):
        body = None
    texts = _issue_texts(body) if isinstance(body, Mapping) else []
    status = f"HTTP {response.status_code}"
    return f"{status}: {'; '.join(texts)}" if texts else status


def _issue_texts(outcome: Mapping[str, Any]) -> list[str]:
    texts: list[str] = []
    issues = outcome.get("issue")
    if not isinstance(issues, list):
        return texts
    for issue in issues:
        if not isinstance(issue, Mapping):
            continue
        text = issue.get("diagnostics")
        details = issue.get("details")
        if not isinstance(text, str) and isinstance(details, Mapping):
            text = details.get("text")
        severity = issue.get("severity", "error")
        texts.append(f"{severity}: {text}" if isinstance(text, str) else str(severity))
    return texts


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class BulkExportClient:
    """Bulk Data export against one FHIR base URL, over an `httpx.Client` owned by the caller."""

    def __init__(
        self,
        base_url: str,
        http: httpx.Client,
        *,
        max_file_bytes: int,
        poll: PollPolicy | None = None,
        auth: httpx.Auth | None = None,
    ):
        self.base_url = base_url.rstrip("/") + "/"
        self.http = http
        self.max_file_bytes = max_file_bytes
        self.poll = poll or PollPolicy()
        self.auth = auth  # SMART backend services (`cds.fhir.smart_backend`), or None: no token

    def _auth_for(self, url: str) -> httpx.Auth:
        """The bearer token only for the FHIR server's own origin, never for a URL elsewhere (there:
        `NO_AUTH`, which adds nothing)."""
        return self.auth if self.auth is not None and same_origin(url, self.base_url) else NO_AUTH

    def _url(self, path: str) -> str:
        return urljoin(self.base_url, path)

    def capability(self) -> Mapping[str, Any]:
        try:
            r = self.http.get(self._url("metadata"), headers={"Accept": FHIR_JSON}, auth=self._auth_for(self.base_url))
        except httpx.HTTPError as err:
            raise FhirUnreachable(f"FHIR server unreachable ({type(err).__name__})") from None
        if r.status_code != 200:
            raise fhir_status_error(
                r.status_code, f"FHIR server: CapabilityStatement not readable ({_outcome_text(r)})"
            )
        try:
            data = r.json()
        except ValueError:
            raise FhirInvalidBody("FHIR server: the CapabilityStatement is not JSON") from None
        if not isinstance(data, Mapping) or data.get("resourceType") != "CapabilityStatement":
            raise FhirInvalidBody("FHIR server: /metadata is not a CapabilityStatement")
        return data

    def export_operation(self, capability: Mapping[str, Any], request: ExportRequest) -> Mapping[str, Any]:
        """The `export` operation the CapabilityStatement declares for this level, or an error
        naming the missing capability."""
        for rest in capability.get("rest") or []:
            if not isinstance(rest, Mapping) or rest.get("mode", "server") != "server":
                continue
            places: list[Any] = []
            if request.group or request.patients:
                level = "Patient" if request.patients else "Group"
                for res in rest.get("resource") or []:
                    if isinstance(res, Mapping) and res.get("type") == level:
                        places.extend(res.get("operation") or [])
            else:
                places.extend(rest.get("operation") or [])
            for op in places:
                if isinstance(op, Mapping) and op.get("name") in ("export", "$export"):
                    return op
        raise FhirError(_unsupported(request))

    def supports_type_filter(self, operation: Mapping[str, Any]) -> bool:
        """True if the export OperationDefinition the server points at declares `_typeFilter`."""
        definition = operation.get("definition")
        if not isinstance(definition, str):
            return False
        if definition.startswith(BULK_DATA_IG):
            return True  # the Bulk Data IG's export operations (v2) declare `_typeFilter`
        url = definition if "OperationDefinition/" in definition else None
        if url is None:
            return False
        if not url.startswith(("http://", "https://")):
            url = self._url(url)
        if not url.startswith(self.base_url):
            return False  # only ask the server itself, never a URL it names elsewhere
        try:
            r = self.http.get(url, headers={"Accept": FHIR_JSON}, auth=self._auth_for(url))
            data = r.json() if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return False
        params = data.get("parameter") if isinstance(data, Mapping) else None
        return isinstance(params, list) and any(
            isinstance(p, Mapping) and p.get("name") == "_typeFilter" and p.get("use", "in") == "in" for p in params
        )

    def kick_off(self, request: ExportRequest) -> str:
        """Start the export; returns the absolute status URL."""
        headers = {"Accept": FHIR_JSON, "Prefer": "respond-async"}
        try:
            if request.patients:
                headers["Content-Type"] = FHIR_JSON
                url = self._url(request.path())
                r = self.http.post(url, json=request.parameters(), headers=headers, auth=self._auth_for(url))
            else:
                url = self._url(request.path())
                r = self.http.get(url, params=request.params(), headers=headers, auth=self._auth_for(url))
        except httpx.HTTPError as err:
            raise FhirUnreachable(
                f"bulk export kick-off failed: FHIR server unreachable ({type(err).__name__})"
            ) from None
        if r.status_code in UNSUPPORTED_STATUSES:
            raise fhir_status_error(r.status_code, f"{_unsupported(request)} (kick-off answered {_outcome_text(r)})")
        if r.status_code != 202:
            raise fhir_status_error(r.status_code, f"bulk export kick-off refused: {_outcome_text(r)}")
        location = r.headers.get("Content-Location")
        if not location:
            raise FhirError("bulk export kick-off: 202 without a Content-Location status URL")
        return urljoin(self.base_url, str(location))

    def wait(self, status_url: str, on_progress: Callable[[Progress], None] | None = None) -> Manifest:
        """Poll the status URL until the manifest is ready (backoff, honouring Retry-After)."""
        p = self.poll
        started = p.clock()
        interval = p.initial
        polls = 0
        while True:
            try:
                r = self.http.get(status_url, headers={"Accept": "application/json"}, auth=self._auth_for(status_url))
            except httpx.HTTPError as err:
                raise FhirUnreachable(f"bulk export status: FHIR server unreachable ({type(err).__name__})") from None
            polls += 1
            elapsed = p.clock() - started
            if r.status_code == 200:
                try:
                    data = r.json()
                except ValueError:
                    raise FhirInvalidBody("bulk export: the completed status is not JSON") from None
                return Manifest.from_json(data)
            if r.status_code not in (202, 429, 503):
                raise fhir_status_error(r.status_code, f"bulk export failed: {_outcome_text(r)}")
            if on_progress is not None:
                on_progress(Progress(elapsed=elapsed, polls=polls, text=r.headers.get("X-Progress")))
            wait = retry_after_seconds(r.headers.get("Retry-After"))
            if wait is None:
                wait = interval
                interval = min(interval * p.factor, p.max_interval)
            # 429/503 are the server's rate limit: honoured up to 4 x the cap. On 202 ("in progress")
            # Retry-After is a hint: HAPI always says 120 s (its job may be done in 20), so it is
            # capped like the client's own backoff.
            wait = min(wait, p.max_interval * (4 if r.status_code in (429, 503) else 1))
            if elapsed + wait > p.timeout:
                raise FhirError(f"bulk export not complete after {p.timeout:.0f} s (status URL kept for resuming)")
            p.sleep(wait)

    def search(self, resource_type: str, params: Mapping[str, str]) -> list[Mapping[str, Any]]:
        """One page of a plain FHIR search (the caller keeps `_count` at the number it asks for)."""
        try:
            url = self._url(resource_type)
            r = self.http.get(url, params=dict(params), headers={"Accept": FHIR_JSON}, auth=self._auth_for(url))
        except httpx.HTTPError as err:
            raise FhirUnreachable(f"{resource_type} search: FHIR server unreachable ({type(err).__name__})") from None
        if r.status_code != 200:
            raise fhir_status_error(r.status_code, f"{resource_type} search failed: {_outcome_text(r)}")
        try:
            bundle = r.json()
        except ValueError:
            raise FhirInvalidBody(f"{resource_type} search: the answer is not JSON") from None
        entries = bundle.get("entry", []) if isinstance(bundle, Mapping) else None
        if not isinstance(entries, list):
            raise FhirInvalidBody(f"{resource_type} search: the answer is not a searchset Bundle")
        return [
            e["resource"]
            for e in entries
            if isinstance(e, Mapping)
            and isinstance(e.get("resource"), Mapping)
            and e["resource"].get("resourceType") == resource_type
        ]

    def download(self, url: str, dest: Path, *, requires_access_token: bool = False) -> int:
        """Stream one output file to `dest` (via `dest.part`, renamed when complete); returns bytes.

        The bearer token goes with the request only when the manifest says ``requiresAccessToken``
        and the file is on the FHIR server's origin; a file needing the token elsewhere is refused
        (the token is never sent to another origin)."""
        target = urljoin(self.base_url, url)
        auth = NO_AUTH
        if requires_access_token and self.auth is not None:
            auth = self._auth_for(target)
            if auth is NO_AUTH:
                raise FhirOutsideBase(
                    "bulk export: an output file requires the access token but is not on the FHIR server's "
                    "origin (token not sent)"
                )
        part = dest.with_name(dest.name + ".part")
        size = 0

        def too_large() -> FhirInvalidBody:
            return FhirInvalidBody(f"bulk export: an output file is larger than {self.max_file_bytes} bytes (refused)")

        try:
            with self.http.stream("GET", target, headers={"Accept": NDJSON}, auth=auth) as r:
                if r.status_code != 200:
                    r.read()
                    raise fhir_status_error(
                        r.status_code, f"bulk export: an output file could not be downloaded ({_outcome_text(r)})"
                    )
                with part.open("wb") as fh:
                    for chunk in bounded(r.iter_bytes(), self.max_file_bytes, too_large):
                        size += len(chunk)
                        fh.write(chunk)
        except httpx.HTTPError as err:
            part.unlink(missing_ok=True)
            raise FhirUnreachable(f"bulk export download failed ({type(err).__name__})") from None
        except FhirError:
            part.unlink(missing_ok=True)
            raise
        part.replace(dest)
        return size


def _unsupported(request: ExportRequest) -> str:
    if request.patients:
        where = "Patient-level `[base]/Patient/$export`"
    elif request.group:
        where = f"Group-level `[base]/Group/{request.group}/$export`"
    else:
        where = "system-level `[base]/$export`"
    return f"the FHIR server does not support FHIR Bulk Data export: no {where} operation"


def operation_outcome_texts(path: Path) -> Iterator[str]:
    """The issue texts of an NDJSON file of OperationOutcomes (a manifest `error` file)."""
    with path.open("rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError:
                yield "an unreadable line in the error file"
                continue
            if isinstance(data, Mapping):
                yield from _issue_texts(data) or ["an OperationOutcome without issues"]
