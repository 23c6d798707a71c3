"""Prefetch: use what the EHR sent, fetch what is missing, 412 when required data cannot be had.

The prefetch templates (advertised in discovery) and the fallback FHIR queries come from one table,
`build_queries`, so they cannot drift apart. Templates stay inside the spec's recommended subset:
an instance read and type searches with ``patient={{context.patientId}}`` and token equality
(``code=system|code,...``).

For every query, in parallel (``asyncio.gather``) and within one deadline:

* a usable prefetch value is used: the Patient resource for the read; a searchset Bundle for a
  search (``search.mode = outcome`` entries and OperationOutcome entries are skipped; ``next`` links
  are followed through the FHIR gateway, bounded). A single resource of the right type is accepted
  for a search too.
* a missing key, a ``null`` value, an OperationOutcome (the EHR's prefetch failed) or a value of the
  wrong shape is fetched from ``fhirServer`` with the ``fhirAuthorization`` bearer token (or no
  token) through `cds.fhir.FhirGateway`.

Prefetch keys the service did not advertise (e.g. an Epic site's hand-made keys) are ignored: what
their queries selected is unknown, so they cannot stand for a template.

Required vs optional data (the documented choice):

* **Patient and Condition are required.** Without them no criterion about age or the SLE diagnosis
  can be judged, so if either cannot be obtained the call fails with 412 (`DataUnavailable` /
  `FhirServerError`, an OperationOutcome body). A FHIR error never becomes an empty card list.
* **Everything else is optional.** If Observation, a medication type, Procedure or
  AllergyIntolerance cannot be read, the engine runs with that type left out of ``searched`` and
  listed in ``incomplete``: criteria depending on it become "unknown" (to verify) and the card says
  "possible candidate — data incomplete" and names what could not be read. Missing data can only
  turn "met"/"not met" into "to verify", never the reverse, so a partial read can at worst show a
  card that asks for more review; it cannot hide a candidate behind a FHIR hiccup on, say, the
  allergy list. Sites that prefer strictness set ``CDS_REQUIRE_ALL_DATA=true`` (any failure → 412).
* A search cut short by the paging bounds (``max pages`` / ``max resources``) or by a ``next`` link
  that cannot be followed keeps what was read, counts as searched, and is listed as incomplete.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cds.errors import DataUnavailable, FhirServerError
from cds.fhir.gateway import (
    FhirGateway,
    PooledFHIRClient,
    SearchResult,
    is_operation_outcome,
    plain,
)
from cds.service.models import CdsRequest

PATIENT_TOKEN = "{{context.patientId}}"  # noqa: S105  (a template token, not a secret)
REQUIRED_TYPES = frozenset({"Patient", "Condition"})

Source = Literal["prefetch", "fhir", "prefetch+fhir", "none"]


class ObservationCodes(Protocol):
    @property
    def observation_codes(self) -> Sequence[tuple[str, str]]: ...


@dataclass(frozen=True, slots=True)
class PrefetchQuery:
    """One prefetch template and the FHIR query that replaces it when it is not prefetched."""

    key: str
    resource_type: str
    params: tuple[tuple[str, str], ...] = ()  # search parameters; values may hold PATIENT_TOKEN
    read: bool = False  # instance read `Type/{{context.patientId}}`

    @property
    def required(self) -> bool:
        return self.resource_type in REQUIRED_TYPES

    def template(self) -> str:
        if self.read:
            return f"{self.resource_type}/{PATIENT_TOKEN}"
        query = "&".join(f"{name}={value}" for name, value in self.params)
        return f"{self.resource_type}?{query}"

    def search_params(self, patient_id: str) -> dict[str, str]:
        return {name: value.replace(PATIENT_TOKEN, patient_id) for name, value in self.params}


def build_queries(observation_codes: Iterable[tuple[str, str]]) -> tuple[PrefetchQuery, ...]:
    """The prefetch table: every resource type the engine reads.

    Observations are restricted to the codes the trial uses (LOINC and the local SLEDAI-2K code),
    as one token parameter with comma-separated ``system|code`` values (OR).
    """
    codes: list[str] = []
    for system, code in observation_codes:
        token = f"{system}|{code}" if system else code
        if token not in codes:
            codes.append(token)
    patient = (("patient", PATIENT_TOKEN),)
    observation_params = (*patient, ("code", ",".join(codes))) if codes else patient
    return (
        PrefetchQuery("patient", "Patient", read=True),
        PrefetchQuery("conditions", "Condition", patient),
        PrefetchQuery("observations", "Observation", observation_params),
        PrefetchQuery("medicationStatements", "MedicationStatement", patient),
        PrefetchQuery("medicationRequests", "MedicationRequest", patient),
        PrefetchQuery("medicationAdministrations", "MedicationAdministration", patient),
        PrefetchQuery("procedures", "Procedure", patient),
        PrefetchQuery("allergies", "AllergyIntolerance", patient),
    )


def prefetch_templates(queries: Iterable[PrefetchQuery]) -> dict[str, str]:
    return {q.key: q.template() for q in queries}


@dataclass(slots=True)
class QueryOutcome:
    query: PrefetchQuery
    source: Source
    resources: list[dict[str, Any]] = field(default_factory=list)
    ok: bool = True
    truncated: bool = False
    problem: str | None = None  # PHI-free explanation when not ok
    fhir_error: bool = False  # the problem came from the FHIR server (vs. no server to ask)


@dataclass(frozen=True, slots=True)
class GatheredData:
    """Everything the engine needs, plus what the logs and the card need to say about it."""

    resources: list[dict[str, Any]]
    searched: frozenset[str]
    incomplete: tuple[str, ...]
    outcomes: tuple[QueryOutcome, ...]

    def sources(self) -> dict[str, str]:
        return {o.query.key: o.source if o.ok else "failed" for o in self.outcomes}


def _usable(query: PrefetchQuery, value: Any, patient_id: str) -> Mapping[str, Any] | None:
    """The prefetched value if it can stand for this query, else None (then it is fetched)."""
    if isinstance(value, Mapping) and "resourceType" not in value and "resource" in value:
        # Pre-1.0 clients (old sandbox) wrapped values: {"response": {"status": ...}, "resource": ...}
        response = value.get("response")
        status = str(response.get("status", "200")) if isinstance(response, Mapping) else "200"
        value = value.get("resource") if status.startswith("2") else None
    if not isinstance(value, Mapping) or is_operation_outcome(value):
        return None
    rtype = value.get("resourceType")
    if query.read:
        if rtype != query.resource_type:
            return None
        rid = value.get("id")
        return value if rid is None or rid == patient_id else None
    if rtype == "Bundle" or rtype == query.resource_type:
        return value
    return None


async def _obtain(
    query: PrefetchQuery,
    request: CdsRequest,
    gateway: FhirGateway,
    client: PooledFHIRClient | None,
) -> QueryOutcome:
    patient_id = request.context.patientId
    prefetch = request.prefetch or {}
    value = _usable(query, prefetch.get(query.key), patient_id)
    try:
        if value is not None:
            if query.read:
                return QueryOutcome(query, "prefetch", [plain(value)])
            if value.get("resourceType") != "Bundle":
                return QueryOutcome(query, "prefetch", [plain(value)])
            result = await gateway.follow(client, value)
            source: Source = "prefetch+fhir" if result.pages > 1 else "prefetch"
            return QueryOutcome(query, source, result.resources, truncated=result.truncated)
        if client is None:
            return QueryOutcome(query, "none", ok=False, problem="not prefetched and no fhirServer to fetch it from")
        if query.read:
            resource = await gateway.read(client, query.resource_type, patient_id)
            return QueryOutcome(query, "fhir", [resource])
        found: SearchResult = await gateway.search(client, query.resource_type, query.search_params(patient_id))
        return QueryOutcome(query, "fhir", found.resources, truncated=found.truncated)
    except FhirServerError as exc:
        return QueryOutcome(query, "fhir", ok=False, problem=exc.message, fhir_error=True)


async def _obtain_by(
    deadline: float,
    query: PrefetchQuery,
    request: CdsRequest,
    gateway: FhirGateway,
    client: PooledFHIRClient | None,
) -> QueryOutcome:
    try:
        async with asyncio.timeout_at(deadline):
            return await _obtain(query, request, gateway, client)
    except TimeoutError:
        return QueryOutcome(
            query, "fhir", ok=False, problem="FHIR reads did not finish within the deadline", fhir_error=True
        )


async def gather_data(
    request: CdsRequest,
    queries: Sequence[PrefetchQuery],
    gateway: FhirGateway,
    *,
    deadline_seconds: float,
    require_all: bool = False,
) -> GatheredData:
    """Obtain the data for every query (prefetch first, FHIR fallback, in parallel).

    Raises `FhirServerError` / `DataUnavailable` (412) when required data cannot be obtained.
    """
    client = gateway.client(request.fhirServer, request.access_token) if request.fhirServer else None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_seconds
    outcomes = await asyncio.gather(*(_obtain_by(deadline, q, request, gateway, client) for q in queries))

    missing = [o for o in outcomes if not o.ok and (require_all or o.query.required)]
    if missing:
        detail = "; ".join(f"{o.query.resource_type}: {o.problem}" for o in missing)
        message = f"required FHIR data could not be obtained ({detail})"
        if any(o.fhir_error for o in missing):
            raise FhirServerError(message)
        raise DataUnavailable(message)

    resources: list[dict[str, Any]] = []
    searched: set[str] = set()
    incomplete: list[str] = []
    for outcome in outcomes:
        if outcome.ok:
            resources.extend(outcome.resources)
            searched.add(outcome.query.resource_type)
        if (not outcome.ok or outcome.truncated) and outcome.query.resource_type not in incomplete:
            incomplete.append(outcome.query.resource_type)
    return GatheredData(resources, frozenset(searched), tuple(incomplete), tuple(outcomes))
