"""Prefetch: use what the EHR sent, fetch what is missing, 412 when required data cannot be had.

The prefetch templates (advertised in discovery) and the fallback FHIR queries come from one table,
`build_queries`, so they cannot drift apart, and that table is derived from what the criteria
declare they read (`queries_for(trial)`, `cds.engine.reads`): the resource types, the Observation
codes (analytes, the SLEDAI-2K codes, site codes from `Policy.sledai_local_codes`) and the
Observation categories within which data is recognised by text (a SLEDAI-2K total with no standard
code is fetched by a second Observation query on the survey/exam categories). The engine's own
pre-filter reads only Observations these queries select (`Trial.observation_is_relevant`), so a
record screened from a file and the same record fetched over the hook give the same report.
`PrefetchQuery.selects` states the queries' search semantics over a record. Templates stay inside
the spec's recommended subset: an instance read and type searches with
``patient={{context.patientId}}`` and token equality (``code=system|code,...``,
``category=system|code,...``).

For every query, in parallel (``asyncio.gather``) and within one deadline (a query answered by
its prefetch value with no page to fetch needs no I/O, so it is read at once, without a task or a
timer; only the queries that may wait on the FHIR server run as tasks):

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
  `FhirError`, an OperationOutcome body). A FHIR error never becomes an empty card list.
* **Everything else is optional.** If Observation, a medication type, Procedure or
  AllergyIntolerance cannot be read, the engine runs with that type left out of ``searched`` and
  listed in ``incomplete``: criteria depending on it become "unknown" (to verify) and the card says
  "possible candidate — data incomplete" and names what could not be read. Missing data can only
  turn "met"/"not met" into "to verify", never the reverse, so a partial read can at worst show a
  card that asks for more review; it cannot hide a candidate behind a FHIR hiccup on, say, the
  allergy list. Sites that prefer strictness set ``CDS_REQUIRE_ALL_DATA=true`` (any failure → 412).
* A search cut short by the paging bounds (``max pages`` / ``max resources``) or by a ``next`` link
  that cannot be followed keeps what was read, counts as searched, and is listed as incomplete.

Prefetch is not trusted blindly. A value is used for a key only if everything in it fits the key:
the Patient read must be a Patient whose ``id`` is the context patient; a search value may hold only
resources of the key's type (plus ``Medication`` for the medication keys) whose ``subject`` /
``patient`` is the context patient, and no malformed entries. A value that does not fit (keys mixed
up, another patient's record, garbage entries) is not used at all - not even its valid part, since
its selection is unknown - and the key is fetched from ``fhirServer`` as if it had not been sent
(or, without a server, counts as unobtainable: 412 for Patient/Condition, incomplete otherwise). The
same check applies to what a FHIR server returns (a misfit is a FHIR error). Only counts and key
names are logged, never content. Resources that fit the key but are not valid FHIR are left to the
engine, which drops them and lists them in ``report.data_issues``.

Fetching can be off: with no allowed FHIR servers configured the service never fetches (prefetch
only), and a missing key is unobtainable with that reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, Protocol

from cds.engine.facts import REPORT_WITHDRAWN
from cds.engine.record import MEDICATION_TYPES, READ_TYPES, SUBJECT_FIELD, about_patient
from cds.engine.timeutil import span
from cds.errors import DataUnavailable, FhirError, FhirInvalidBody, FhirTimeout, combined_fhir_error
from cds.fhir.gateway import (
    FhirClient,
    FhirGateway,
    SearchResult,
    is_operation_outcome,
    next_link,
    plain,
)
from cds.fhirjson import token_match
from cds.service.models import CdsRequest

PATIENT_TOKEN = "{{context.patientId}}"  # noqa: S105  (a template token, not a secret)
REQUIRED_TYPES = frozenset({"Patient", "Condition"})
NO_FHIR_SERVER = "not prefetched and no fhirServer to fetch it from"
FETCHING_DISABLED = "not prefetched, and this service is not configured to fetch from FHIR servers"


Source = Literal["prefetch", "fhir", "prefetch+fhir", "none"]


class QueryPlan(Protocol):
    """What a trial reads, as the service needs it to build its queries (`cds.engine.trial.Trial`)."""

    @property
    def resource_types(self) -> Sequence[str]: ...

    @property
    def observation_codes(self) -> Sequence[tuple[str, str]]: ...

    @property
    def observation_categories(self) -> Sequence[tuple[str, str]]: ...

    @property
    def observation_history_codes(self) -> Sequence[tuple[str, str]]: ...

    @property
    def whole_record_types(self) -> Sequence[str]: ...


@dataclass(frozen=True, slots=True)
class PrefetchQuery:
    """One prefetch template and the FHIR query that replaces it when it is not prefetched."""

    key: str
    resource_type: str
    params: tuple[tuple[str, str], ...] = ()  # search parameters; values may hold PATIENT_TOKEN
    read: bool = False  # instance read `Type/{{context.patientId}}`
    # Date search parameter that bounds the FHIR fallback search from below (`ge<since>`). Only the
    # fallback uses it: CDS Hooks 2.0 prefetch templates cannot carry a date.
    since_param: str | None = None

    @property
    def required(self) -> bool:
        return self.resource_type in REQUIRED_TYPES

    def template(self) -> str:
        if self.read:
            return f"{self.resource_type}/{PATIENT_TOKEN}"
        query = "&".join(f"{name}={value}" for name, value in self.params)
        return f"{self.resource_type}?{query}"

    def search_params(self, patient_id: str, since: date | None = None) -> dict[str, str]:
        params = {name: value.replace(PATIENT_TOKEN, patient_id) for name, value in self.params}
        if since is not None and self.since_param is not None:
            params[self.since_param] = f"ge{since.isoformat()}"
        return params

    def selects(self, resource: Mapping[str, Any], patient_id: str, since: date | None = None) -> bool:
        """Would this query return `resource` for this patient? FHIR search semantics for the
        parameters this table uses: the read by id; ``patient``; token OR lists on ``code`` and
        ``category`` (``system|code``, or ``code`` in any system); ``ge`` on the date parameter
        (``effective[x]``, a QuestionnaireResponse's ``authored``; a resource without it does not
        match)."""
        if resource.get("resourceType") != self.resource_type:
            return False
        if self.read:
            return resource.get("id") == patient_id
        if not about_patient(resource, patient_id):
            return False
        for name, value in self.params:
            if name == "patient":
                continue
            if name == "status":
                if resource.get("status") not in value.split(","):
                    return False
                continue
            if name not in ("code", "category"):
                raise ValueError(f"no search semantics for parameter {name!r}")
            value_ = resource.get(name)
            concepts = value_ if isinstance(value_, list) else [value_]
            if not token_match(list(concepts), value.split(",")):
                return False
        if since is not None and self.since_param is not None:
            return _effective_on_or_after(resource, since)
        return True


def _tokens(pairs: Iterable[tuple[str, str]]) -> str:
    tokens: list[str] = []
    for system, code in pairs:
        token = f"{system}|{code}" if system else code
        if token not in tokens:
            tokens.append(token)
    return ",".join(tokens)


DEFAULT_TYPES = READ_TYPES  # every type the engine reads, in its order
KEYS = {
    "Patient": "patient",
    "Condition": "conditions",
    "Observation": "observations",
    "MedicationStatement": "medicationStatements",
    "MedicationRequest": "medicationRequests",
    "MedicationAdministration": "medicationAdministrations",
    "MedicationDispense": "medicationDispenses",
    "Procedure": "procedures",
    "AllergyIntolerance": "allergies",
    "DiagnosticReport": "diagnosticReports",
}
CATEGORY_KEY = "observationsByCategory"
HISTORY_KEY = "observationHistory"
WITHDRAWN_REPORTS_KEY = "withdrawnReports"
# Dated resource types: the FHIR fallback bounds them from below with this search parameter.
SINCE_PARAMS = {"Observation": "date", "DiagnosticReport": "date", "QuestionnaireResponse": "authored"}


def build_queries(
    observation_codes: Iterable[tuple[str, str]] = (),
    observation_categories: Iterable[tuple[str, str]] = (),
    resource_types: Iterable[str] = DEFAULT_TYPES,
    observation_history_codes: Iterable[tuple[str, str]] = (),
    whole_record_types: Iterable[str] = (),
) -> tuple[PrefetchQuery, ...]:
    """The prefetch table: one query per resource type read (Patient and Condition always).

    Observations are restricted to the given codes, as one token parameter with comma-separated
    ``system|code`` values (OR); with `observation_categories`, a second Observation query
    (`CATEGORY_KEY`) fetches those categories, where data is recognised by its text; with
    `observation_history_codes`, a third (`HISTORY_KEY`) fetches those codes over the whole record
    (no date bound: cumulative items such as SLICC 2012); and then, when DiagnosticReports are
    searched within a date bound, a fourth query (`WITHDRAWN_REPORTS_KEY`) fetches the reports that
    withdraw their results (`REPORT_WITHDRAWN`: entered in error) over the whole record, so a
    result read at any date is never counted when an old report withdrew it. A type in
    `whole_record_types` (read at any date by some rule) is searched without a date bound even
    where `SINCE_PARAMS` has one.
    """
    patient = (("patient", PATIENT_TOKEN),)
    types = {"Patient", "Condition", *resource_types}
    codes = _tokens(observation_codes)
    categories = _tokens(observation_categories)
    history = _tokens(observation_history_codes)
    whole = set(whole_record_types)
    queries: list[PrefetchQuery] = []
    for rtype in (*DEFAULT_TYPES, *sorted(types - set(DEFAULT_TYPES))):
        if rtype not in types:
            continue
        key = KEYS.get(rtype) or rtype[0].lower() + rtype[1:] + "s"
        if rtype == "Patient":
            queries.append(PrefetchQuery(key, rtype, read=True))
        elif rtype == "Observation":
            params = (*patient, ("code", codes)) if codes else patient
            queries.append(PrefetchQuery(key, rtype, params, since_param="date"))
            if history:  # read over the whole record: no date bound in the fallback either
                queries.append(PrefetchQuery(HISTORY_KEY, rtype, (*patient, ("code", history))))
            if categories:
                by_category = (*patient, ("category", categories))
                queries.append(PrefetchQuery(CATEGORY_KEY, rtype, by_category, since_param="date"))
        else:
            since = None if rtype in whole else SINCE_PARAMS.get(rtype)
            queries.append(PrefetchQuery(key, rtype, patient, since_param=since))
            if rtype == "DiagnosticReport" and history and since is not None:
                withdrawn = (*patient, ("status", ",".join(sorted(REPORT_WITHDRAWN))))
                queries.append(PrefetchQuery(WITHDRAWN_REPORTS_KEY, rtype, withdrawn))
    return tuple(queries)


def queries_for(trial: QueryPlan) -> tuple[PrefetchQuery, ...]:
    """The prefetch table derived from what the trial's criteria declare they read."""
    return build_queries(
        trial.observation_codes,
        trial.observation_categories,
        trial.resource_types,
        trial.observation_history_codes,
        trial.whole_record_types,
    )


def prefetch_templates(queries: Iterable[PrefetchQuery]) -> dict[str, str]:
    return {q.key: q.template() for q in queries}


@dataclass(slots=True)
class QueryOutcome:
    """What one query gave: facts only. The resources themselves go to `GatheredData.resources`
    alone, so that a caller can release what no criterion reads once the engine has its input."""

    query: PrefetchQuery
    source: Source
    count: int = 0  # resources the query gave (before the de-duplication across queries)
    ok: bool = True
    truncated: bool = False
    problem: str | None = None  # PHI-free explanation when not ok
    fhir_error: bool = False  # the problem came from the FHIR server (vs. no server to ask)
    error: FhirError | None = None  # that problem, typed
    prefetch_rejected: str | None = None  # why a prefetched value was not used (a fixed code)


@dataclass(frozen=True, slots=True)
class GatheredData:
    """Everything the engine needs, plus what the logs and the card need to say about it. Only
    `resources` holds the resources; `outcomes` keep facts (sources, counts, problems)."""

    resources: list[dict[str, Any]]
    searched: frozenset[str]
    incomplete: tuple[str, ...]
    outcomes: tuple[QueryOutcome, ...]

    def sources(self) -> dict[str, str]:
        return {o.query.key: o.source if o.ok else "failed" for o in self.outcomes}


# One query's outcome and the resources it gave (merged into `GatheredData.resources`, then dropped).
_Answer = tuple[QueryOutcome, list[dict[str, Any]]]


def _unwrap(value: Any) -> Any:
    if (type(value) is dict or isinstance(value, Mapping)) and "resourceType" not in value and "resource" in value:
        # Pre-1.0 clients (old sandbox) wrapped values: {"response": {"status": ...}, "resource": ...}
        response = value.get("response")
        status = str(response.get("status", "200")) if isinstance(response, Mapping) else "200"
        return value.get("resource") if status.startswith("2") else None
    return value


def _effective_on_or_after(resource: Mapping[str, Any], since: date) -> bool:
    if resource.get("resourceType") == "QuestionnaireResponse":  # searched by `authored`
        authored = resource.get("authored")
        when_authored = span(authored) if isinstance(authored, str) else None
        return when_authored is not None and when_authored.latest >= since
    value = resource.get("effectiveDateTime") or resource.get("effectiveInstant")
    if value is None and isinstance(period := resource.get("effectivePeriod"), Mapping):
        if period.get("start") is not None and period.get("end") is None:
            return True  # an open period reaches the present
        value = period.get("end")
    when = span(value) if isinstance(value, str) else None
    return when is not None and when.latest >= since


def misfit(query: PrefetchQuery, resources: Sequence[Mapping[str, Any]], patient_id: str) -> str | None:
    """Why these resources cannot be the answer to `query` for this patient (a code), or None."""
    wanted = query.resource_type
    medication = wanted in MEDICATION_TYPES
    subject = SUBJECT_FIELD.get(wanted)
    # A reference that is exactly "Patient/<id>" names the patient (what `about_patient` would find,
    # read without parsing) - when the id cannot itself hold reference syntax.
    direct = f"Patient/{patient_id}" if patient_id and "/" not in patient_id and "?" not in patient_id else None
    for resource in resources:
        rtype = resource.get("resourceType")
        if rtype == wanted:
            if rtype == "Patient":
                if resource.get("id") != patient_id:
                    return "other-patient"
                continue
            if subject is not None and direct is not None:
                ref = resource.get(subject)
                if type(ref) is dict and ref.get("reference") == direct:
                    continue
            if not about_patient(resource, patient_id):
                return "other-patient"
        elif not (medication and rtype == "Medication"):
            return "wrong-type"
    return None


def _usable(query: PrefetchQuery, value: Any) -> Mapping[str, Any] | None:
    """The prefetched value if it has the shape of an answer to this query, else None (then fetched)."""
    value = _unwrap(value)
    if (type(value) is not dict and not isinstance(value, Mapping)) or is_operation_outcome(value):
        return None
    rtype = value.get("resourceType")
    if query.read:
        return value if rtype == query.resource_type else None
    if rtype == "Bundle" or rtype == query.resource_type:
        return value
    return None


def _needs_io(query: PrefetchQuery, value: Mapping[str, Any], client: FhirClient | None) -> bool:
    """Whether reading this usable prefetch value may contact the FHIR server (a ``next`` link to page)."""
    if client is None or query.read or value.get("resourceType") != "Bundle":
        return False
    return next_link(value) is not None


def _bundle_answer(query: PrefetchQuery, result: SearchResult) -> _Answer:
    source: Source = "prefetch+fhir" if result.pages > 1 else "prefetch"
    outcome = QueryOutcome(query, source, truncated=result.truncated)
    if result.malformed:
        outcome.prefetch_rejected = "malformed-entries"
    return outcome, result.resources


def _read_prefetch(query: PrefetchQuery, value: Mapping[str, Any], gateway: FhirGateway) -> _Answer:
    """A prefetch value that needs no paging (`_needs_io` false), read with no I/O."""
    if query.read or value.get("resourceType") != "Bundle":
        return QueryOutcome(query, "prefetch"), [plain(value)]
    return _bundle_answer(query, gateway.read_bundle(value))


async def _from_prefetch(
    query: PrefetchQuery, value: Mapping[str, Any], gateway: FhirGateway, client: FhirClient | None
) -> _Answer:
    if not _needs_io(query, value, client):
        return _read_prefetch(query, value, gateway)
    return _bundle_answer(query, await gateway.follow(client, value))


async def _from_fhir(
    query: PrefetchQuery, patient_id: str, gateway: FhirGateway, client: FhirClient, since: date | None
) -> _Answer:
    if query.read:
        resource = await gateway.read(client, query.resource_type, patient_id)
        return QueryOutcome(query, "fhir"), [resource]
    params = query.search_params(patient_id, since)
    found: SearchResult = await gateway.search(client, query.resource_type, params)
    if found.malformed:
        raise FhirInvalidBody(f"the FHIR server returned malformed {query.resource_type} search entries")
    return QueryOutcome(query, "fhir", truncated=found.truncated), found.resources


def _unobtainable(query: PrefetchQuery, unavailable: str, rejected: str | None) -> _Answer:
    problem = unavailable if rejected is None else f"the prefetched data was not usable ({rejected})"
    return QueryOutcome(query, "none", ok=False, problem=problem, prefetch_rejected=rejected), []


def _without_io(
    query: PrefetchQuery,
    value: Mapping[str, Any] | None,
    patient_id: str,
    gateway: FhirGateway,
    client: FhirClient | None,
    unavailable: str,
) -> _Answer | str | None:
    """The answer to `query` when it needs no I/O (a usable prefetch value that needs no paging, or
    nothing to fetch from); else the code of the rejected prefetch value to fetch in its place, or
    None (fetch, or page from the prefetched Bundle, through `_obtain`)."""
    if value is None:
        return _unobtainable(query, unavailable, None) if client is None else None
    if _needs_io(query, value, client):
        return None
    answer = _read_prefetch(query, value, gateway)
    rejected = answer[0].prefetch_rejected or misfit(query, answer[1], patient_id)
    if rejected is None:
        return answer
    return _unobtainable(query, unavailable, rejected) if client is None else rejected


async def _obtain(
    query: PrefetchQuery,
    value: Mapping[str, Any] | None,
    rejected: str | None,
    patient_id: str,
    gateway: FhirGateway,
    client: FhirClient | None,
    unavailable: str,
    since: date | None,
) -> _Answer:
    """`value`: a usable prefetch value to read (paging through `client`); `rejected`: why the
    prefetch value was not used, when it was already read and refused."""
    try:
        if value is not None:
            outcome, resources = await _from_prefetch(query, value, gateway, client)
            rejected = outcome.prefetch_rejected or misfit(query, resources, patient_id)
            if rejected is None:
                return outcome, resources
        if client is None:
            return _unobtainable(query, unavailable, rejected)
        outcome, resources = await _from_fhir(query, patient_id, gateway, client, since)
        outcome.prefetch_rejected = rejected
        wrong = misfit(query, resources, patient_id)
        if wrong is not None:
            raise FhirInvalidBody(f"the FHIR server returned records that do not fit the query ({wrong})")
        return outcome, resources
    except FhirError as exc:
        failed = QueryOutcome(
            query, "fhir", ok=False, problem=exc.message, fhir_error=True, error=exc, prefetch_rejected=rejected
        )
        return failed, []


async def _obtain_by(
    deadline: float,
    query: PrefetchQuery,
    value: Mapping[str, Any] | None,
    rejected: str | None,
    patient_id: str,
    gateway: FhirGateway,
    client: FhirClient | None,
    unavailable: str,
    since: date | None,
) -> _Answer:
    try:
        async with asyncio.timeout_at(deadline):
            return await _obtain(query, value, rejected, patient_id, gateway, client, unavailable, since)
    except TimeoutError:
        problem = "FHIR reads did not finish within the deadline"
        timed_out = QueryOutcome(query, "fhir", ok=False, problem=problem, fhir_error=True, error=FhirTimeout(problem))
        return timed_out, []


async def gather_data(
    request: CdsRequest,
    queries: Sequence[PrefetchQuery],
    gateway: FhirGateway,
    *,
    deadline_seconds: float,
    require_all: bool = False,
    fetch: bool = True,
    log_record: dict[str, Any] | None = None,
    since: date | None = None,
) -> GatheredData:
    """Obtain the data for every query (prefetch first, FHIR fallback, in parallel).

    `fetch=False`: never contact a FHIR server (fetching is not configured). With fetching on, the
    gateway refuses a ``fhirServer`` off its allow-list (`FhirServerNotAllowed`, 400) before any
    connection. Raises `FhirError` / `DataUnavailable` (412) when required data cannot be
    obtained. `log_record` receives ``prefetchRejected`` (key -> reason code) even then.
    `since`: the first day the engine reads dated data from (queries with a `since_param` fetch
    nothing older from the FHIR server; prefetched data is used as sent).
    """
    client: FhirClient | None = None
    unavailable = FETCHING_DISABLED if request.fhirServer and not fetch else NO_FHIR_SERVER
    if fetch and request.fhirServer:
        client = gateway.client(request.fhirServer, request.access_token)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_seconds
    patient_id = request.context.patientId
    prefetch = request.prefetch or {}
    # What needs no I/O (a complete prefetch, or nothing to fetch from) is answered here; only the
    # queries that may wait on the FHIR server run as tasks, each within the deadline.
    answers: list[_Answer | None] = []
    waits: list[Coroutine[Any, Any, _Answer]] = []
    for query in queries:
        value = _usable(query, prefetch.get(query.key))
        answer = _without_io(query, value, patient_id, gateway, client, unavailable)
        if answer is None or isinstance(answer, str):
            pending, rejected = (None, answer) if isinstance(answer, str) else (value, None)
            wait = _obtain_by(deadline, query, pending, rejected, patient_id, gateway, client, unavailable, since)
            waits.append(wait)
            answers.append(None)
        else:
            answers.append(answer)
    fetched = iter(await asyncio.gather(*waits) if waits else ())
    done = [a if a is not None else next(fetched) for a in answers]
    outcomes = [outcome for outcome, _ in done]

    if log_record is not None:
        refused = {o.query.key: o.prefetch_rejected for o in outcomes if o.prefetch_rejected}
        if refused:
            log_record["prefetchRejected"] = refused
    missing = [o for o in outcomes if not o.ok and (require_all or o.query.required)]
    if missing:
        detail = "; ".join(f"{o.query.resource_type}: {o.problem}" for o in missing)
        message = f"required FHIR data could not be obtained ({detail})"
        if any(o.fhir_error for o in missing):
            raise combined_fhir_error([o.error or FhirError(message) for o in missing if o.fhir_error], message)
        raise DataUnavailable(message)

    resources: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()  # a resource two queries return (code and category) is read once
    searched: set[str] = set()
    incomplete: list[str] = []
    for outcome, found in done:
        outcome.count = len(found)
        if outcome.ok:
            for resource in found:
                rid = resource.get("id")
                if isinstance(rid, str):
                    key = (str(resource.get("resourceType")), rid)
                    if key in seen:
                        continue
                    seen.add(key)
                resources.append(resource)
            searched.add(outcome.query.resource_type)
        if (not outcome.ok or outcome.truncated) and outcome.query.resource_type not in incomplete:
            incomplete.append(outcome.query.resource_type)
    return GatheredData(resources, frozenset(searched), tuple(incomplete), tuple(outcomes))
