"""Load FHIR Bundles into a FHIR server (the sandbox) idempotently, and empty it.

``load_bundles(base_url, [Path("fixtures/patients")])`` PUTs every resource with its own id, in
transactions ordered so that a referenced resource is stored first; ``expunge(base_url)`` deletes
everything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import httpx

from cds.fhirjson import resolve_local_references
from sandbox.errors import SandboxError

__all__ = ["DEFAULT_BATCH_SIZE", "JsonObject", "expunge", "load_bundles"]

#: Entries per transaction Bundle when loading.
DEFAULT_BATCH_SIZE: Final = 500

FHIR_JSON: Final = "application/fhir+json"
_ID_RE: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_LOCAL_REF_RE: Final = re.compile(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?")

JsonObject = dict[str, Any]


def _check_id(rtype: str, rid: Any, where: str) -> str:
    if not isinstance(rid, str) or not rid:
        raise SandboxError(
            f"{where}: {rtype} has no id; every resource needs one so that loading is idempotent (PUT {rtype}/<id>)"
        )
    if not _ID_RE.fullmatch(rid):
        raise SandboxError(f"{where}: {rtype}/{rid}: not a valid FHIR id ([A-Za-z0-9-.], at most 64 characters)")
    if rid.isdigit():
        raise SandboxError(
            f"{where}: {rtype}/{rid}: HAPI only accepts client-assigned ids that contain a non-digit "
            f"(HAPI-0960); rename it, e.g. to '{rtype.lower()}-{rid}'"
        )
    return rid


def _bundle_resources(
    item: Path | str | Mapping[str, Any],
) -> tuple[str, list[tuple[str | None, JsonObject]]]:
    """(label, [(fullUrl, resource)]) for one input: a Bundle file/dict, or a single resource."""
    if isinstance(item, Mapping):
        doc: Any = item
        label = f"bundle {item.get('id', '(no id)')}"
    else:
        path = Path(item)
        label = str(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise SandboxError(f"{label}: cannot read JSON: {e}") from e
    if not isinstance(doc, Mapping) or "resourceType" not in doc:
        raise SandboxError(f"{label}: not a FHIR resource")
    if doc["resourceType"] != "Bundle":
        return label, [(None, dict(doc))]
    out: list[tuple[str | None, JsonObject]] = []
    for entry in doc.get("entry", []):
        resource = entry.get("resource")
        if resource is None:
            continue  # e.g. a DELETE or GET entry of a transaction/batch: nothing to store
        if entry.get("search", {}).get("mode") == "outcome":
            continue  # searchset warnings
        out.append((entry.get("fullUrl"), dict(resource)))
    return label, out


def _expand_inputs(
    paths_or_bundles: Iterable[Path | str | Mapping[str, Any]],
) -> Iterator[Path | str | Mapping[str, Any]]:
    for item in paths_or_bundles:
        if not isinstance(item, Mapping) and Path(item).is_dir():
            yield from sorted(Path(item).glob("*.json"))
        else:
            yield item


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                m = _LOCAL_REF_RE.fullmatch(value)
                if m:
                    yield f"{m.group(1)}/{m.group(2)}"
            elif key != "contained":
                yield from _references(value)
    elif isinstance(node, list):
        for v in node:
            yield from _references(v)


def _dependency_units(resources: Mapping[str, JsonObject]) -> list[list[str]]:
    """Group keys ("Type/id") into units and order them so every unit comes after the units it
    references: Tarjan's strongly connected components (iterative), which emits a component only
    after everything it depends on. Reference cycles end up together in one unit. Follows the
    input order, so each patient's resources stay close together."""
    edges = {k: [d for d in dict.fromkeys(_references(r)) if d in resources and d != k] for k, r in resources.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    units: list[list[str]] = []
    counter = 0
    for root in resources:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = edges[node]
            if i < len(children):
                work.append((node, i + 1))
                child = children[i]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if low[node] == index[node]:
                unit: list[str] = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    unit.append(top)
                    if top == node:
                        break
                units.append(unit)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return units


def _post_transaction(client: httpx.Client, base_url: str, entries: list[JsonObject]) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    r = client.post(
        base_url,
        json=bundle,
        headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, "Prefer": "return=minimal"},
    )
    if r.status_code != 200:
        raise SandboxError(f"transaction of {len(entries)} entries failed: HTTP {r.status_code}: {_outcome_text(r)}")
    body = r.json()
    if body.get("type") != "transaction-response" or len(body.get("entry", [])) != len(entries):
        raise SandboxError(f"unexpected transaction response: {str(body)[:500]}")
    for sent, got in zip(entries, body["entry"], strict=True):
        status = str(got.get("response", {}).get("status", ""))
        if not status.startswith("2"):
            raise SandboxError(f"{sent['request']['url']}: {status}")


def _outcome_text(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:500]
    if body.get("resourceType") == "OperationOutcome":
        return "; ".join(
            str(i.get("diagnostics") or i.get("details", {}).get("text") or i) for i in body.get("issue", [])
        )
    return r.text[:500]


def load_bundles(
    base_url: str,
    paths_or_bundles: Iterable[Path | str | Mapping[str, Any]],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    client: httpx.Client | None = None,
) -> list[str]:
    """Load FHIR Bundles (collection, searchset, transaction or batch; files, directories of
    ``*.json`` files, or dicts) into the server, idempotently.

    Every resource is sent as ``PUT {type}/{id}`` with its own id inside ``transaction`` Bundles of
    at most ``batch_size`` entries (more only if a reference cycle is larger), so loading the same
    data twice changes nothing. References to an entry's ``fullUrl`` (e.g. ``urn:uuid:...``) are
    rewritten to ``Type/id``, and resources are ordered so that a referenced resource is in the same
    or an earlier transaction (HAPI rejects references to resources that do not exist). Consecutive
    small Bundles share transactions; the input is streamed, so a generator of per-patient Bundles
    can be arbitrarily long.

    Returns the ids of the Patients loaded, in input order. Raises :class:`SandboxError` for
    resources without an id, numeric-only ids (HAPI-0960) or a failed transaction.
    """
    base_url = base_url.rstrip("/")
    own_client = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0))
    aliases: dict[str, str] = {}
    pending: dict[str, JsonObject] = {}  # key -> resource, insertion-ordered, at most one per key
    patient_ids: dict[str, None] = {}

    def flush() -> None:
        if pending:
            entries = [{"resource": res, "request": {"method": "PUT", "url": key}} for key, res in pending.items()]
            _post_transaction(http, base_url, entries)
            pending.clear()

    try:
        for item in _expand_inputs(paths_or_bundles):
            label, pairs = _bundle_resources(item)
            resources: dict[str, JsonObject] = {}
            for full_url, res in pairs:
                rtype = res.get("resourceType")
                if not isinstance(rtype, str):
                    raise SandboxError(f"{label}: entry without resourceType")
                key = f"{rtype}/{_check_id(rtype, res.get('id'), label)}"
                if full_url:
                    aliases[full_url] = key
                resources[key] = res  # a later duplicate replaces an earlier one
            for unit in _dependency_units(resources):
                if pending and len(pending) + len(unit) > batch_size:
                    flush()
                for key in unit:
                    pending[key] = resolve_local_references(resources[key], aliases)
                    if key.startswith("Patient/"):
                        patient_ids[key.removeprefix("Patient/")] = None
            if len(pending) >= batch_size:
                flush()
        flush()
    finally:
        if own_client:
            http.close()
    return list(patient_ids)


def expunge(base_url: str, *, client: httpx.Client | None = None) -> int:
    """Delete everything on the server (``POST [base]/$expunge`` with ``expungeEverything``).

    Returns the number of rows HAPI reports as expunged. Needs expunge enabled on the server (the
    sandbox has it on).
    """
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "expungeEverything", "valueBoolean": True}],
    }
    http = client or httpx.Client(timeout=300.0)
    try:
        r = http.post(
            f"{base_url.rstrip('/')}/$expunge",
            json=params,
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
        )
    finally:
        if client is None:
            http.close()
    if r.status_code != 200:
        raise SandboxError(f"$expunge failed: HTTP {r.status_code}: {_outcome_text(r)}")
    for p in r.json().get("parameter", []):
        if p.get("name") == "count":
            return int(p.get("valueInteger", 0))
    return 0
