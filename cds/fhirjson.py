"""FHIR JSON as plain dicts: the one home of the small helpers every layer needs.

The engine, the service, the CLI's file reader, the population runner and the tools all read raw
FHIR JSON; they read references, bundle entries, dates and codings through this module so each rule
(what a patient reference looks like, which bundle entries count, what a partial date means) is
written once. It lives at the top of the package, not in `cds.fhir` (the HTTP boundary: gateway, URL
allow-list, bounded JSON decoding), so that the pure engine can import it without the HTTP stack.
Pure functions: no I/O, no clock.

* resources: `resource_type`, `resource_id`, `local_reference` (``Type/id``), `is_operation_outcome`;
* references: `reference_target` reads a literal reference as (type, id): relative ``Patient/x``,
  absolute ``https://h/fhir/Patient/x``, versioned ``Patient/x/_history/2``, and ``urn:uuid:...``
  resolved through a Bundle's fullUrls (`full_url_index`); contained (``#x``) and conditional
  (``Patient?identifier=...``) references name no resource. `referenced_patient`,
  `refers_to_patient` and `subject_patient` apply it to patients;
* bundles: `bundle_entries` (search.mode = outcome skipped, malformed entries counted),
  `with_local_ids` / `resolve_local_references` (a transaction Bundle's ``urn:uuid:`` references
  rewritten to ``Type/id``), `next_link`;
* dates: `span` (a date/dateTime/partial date as a [earliest, latest] day interval, keeping the local
  calendar day of a dateTime) and `parse_instant` (an instant or dateTime with a timezone);
* codings: `codings`, `codes`, `coding_pairs`, `has_coding` (system+code membership, a None system
  matching any) and `token_match` (FHIR search tokens ``system|code``).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

SUBJECT_FIELDS = ("subject", "patient")
URN_UUID = "urn:uuid:"

# ---------------------------------------------------------------------------------------------
# resources


def is_mapping(value: Any) -> bool:
    """`isinstance(value, Mapping)`, answered without the ABC check for the common plain `dict` (the
    hot loops write the same test inline)."""
    return type(value) is dict or isinstance(value, Mapping)


def resource_type(value: Any) -> str | None:
    rtype = value.get("resourceType") if type(value) is dict or isinstance(value, Mapping) else None
    return rtype if isinstance(rtype, str) and rtype else None


def resource_id(value: Any) -> str | None:
    rid = value.get("id") if type(value) is dict or isinstance(value, Mapping) else None
    return rid if isinstance(rid, str) and rid else None


def local_reference(value: Any) -> str | None:
    """``Type/id`` of a resource, or None without a type or id."""
    rtype, rid = resource_type(value), resource_id(value)
    return f"{rtype}/{rid}" if rtype and rid else None


def is_operation_outcome(value: Any) -> bool:
    return resource_type(value) == "OperationOutcome"


# ---------------------------------------------------------------------------------------------
# references


def reference_target(reference: Any, full_urls: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(type, id) named by a literal reference string, or None (contained, conditional, unresolved
    ``urn:``, or not a reference). `full_urls` maps a Bundle's fullUrls to ``Type/id``."""
    if not isinstance(reference, str) or not reference:
        return None
    if full_urls:
        reference = full_urls.get(reference, reference)
    if reference.startswith(("#", "urn:")) or "?" in reference:
        return None
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2:
        return None
    rtype, rid = parts[-2], parts[-1]
    if not rtype[:1].isupper() or not rtype.isalnum() or not rid:
        return None
    return rtype, rid


def referenced_id(ref: Any, rtype: str, full_urls: Mapping[str, str] | None = None) -> str | None:
    """The id of the `rtype` resource a Reference object (``{"reference": ...}``) points to, or None."""
    target = reference_target(ref.get("reference") if isinstance(ref, Mapping) else None, full_urls)
    return target[1] if target is not None and target[0] == rtype else None


def referenced_patient(ref: Any, full_urls: Mapping[str, str] | None = None) -> str | None:
    """The Patient id a Reference object points to, or None."""
    return referenced_id(ref, "Patient", full_urls)


def refers_to_patient(ref: Any, patient_id: str, full_urls: Mapping[str, str] | None = None) -> bool:
    return referenced_patient(ref, full_urls) == patient_id


def subject_patient(
    resource: Mapping[str, Any],
    full_urls: Mapping[str, str] | None = None,
    fields: Iterable[str] = SUBJECT_FIELDS,
) -> str | None:
    """The patient a resource is about: a Patient's own id, else the Patient named by the first of
    `fields` that holds a literal reference (None if that one names no Patient)."""
    if resource.get("resourceType") == "Patient":
        return resource_id(resource)
    for key in fields:
        ref = resource.get(key)
        if isinstance(ref, Mapping) and isinstance(ref.get("reference"), str):
            return referenced_patient(ref, full_urls)
    return None


# ---------------------------------------------------------------------------------------------
# bundles


@dataclass(frozen=True, slots=True)
class Entry:
    full_url: str | None
    resource: Mapping[str, Any]


def _entry_resources(entries: list[Any], malformed: list[int]) -> Iterator[tuple[Any, Mapping[str, Any]]]:
    """(fullUrl, resource object) of each entry that holds one, ``search.mode = outcome`` skipped;
    entries that are not objects, or hold no resource object, are counted in ``malformed[0]``."""
    for entry in entries:
        if type(entry) is not dict and not isinstance(entry, Mapping):
            malformed[0] += 1
            continue
        search = entry.get("search")
        if (type(search) is dict or isinstance(search, Mapping)) and search.get("mode") == "outcome":
            continue
        resource = entry.get("resource")
        if type(resource) is not dict and not isinstance(resource, Mapping):
            malformed[0] += 1
            continue
        yield entry.get("fullUrl"), resource


def bundle_entries(bundle: Mapping[str, Any]) -> tuple[list[Entry], int]:
    """The entries of a Bundle that hold a resource object (``search.mode = outcome`` skipped), and
    the number of malformed entries (``entry`` not a list, an entry or its resource not an object)."""
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return [], 0 if entries is None else 1
    malformed = [0]
    out = [
        Entry(full_url if isinstance(full_url, str) and full_url else None, resource)
        for full_url, resource in _entry_resources(entries, malformed)
    ]
    return out, malformed[0]


def searchset_resources(bundle: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], int]:
    """The resources of a search Bundle, in one pass: the entries `bundle_entries` keeps, minus
    OperationOutcomes; an entry whose resource has no string ``resourceType`` counted malformed with
    `bundle_entries`' count; ``urn:uuid:`` ids and references resolved as `with_local_ids`,
    `urn_index` and `resolve_local_references` do. The same answer as that composition (tested
    against it), without building an `Entry` per resource or walking each resource several times."""
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return [], 0 if entries is None else 1
    out: list[Mapping[str, Any]] = []
    urns: dict[str, str] = {}
    malformed = [0]
    for full_url, resource in _entry_resources(entries, malformed):
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str) or not rtype:
            malformed[0] += 1
            continue
        if rtype == "OperationOutcome":
            continue
        if isinstance(full_url, str) and full_url.startswith(URN_UUID):
            rid = resource.get("id")
            if not isinstance(rid, str) or not rid:
                rid = full_url.removeprefix(URN_UUID)
                resource = {**resource, "id": rid}
            if rid:
                urns[full_url] = f"{rtype}/{rid}"
        out.append(resource)
    if urns:
        out = [resolve_local_references(r, urns) for r in out]
    return out, malformed[0]


def with_local_ids(entries: Iterable[Entry]) -> tuple[list[Entry], dict[str, str]]:
    """Every entry with a ``urn:uuid:`` fullUrl and no id gets the uuid as its id; and the map from
    each fullUrl (urn:uuid or absolute) to ``Type/id``."""
    out: list[Entry] = []
    index: dict[str, str] = {}
    for e in entries:
        res = e.resource
        if resource_id(res) is None and e.full_url and e.full_url.startswith(URN_UUID):
            res = {**res, "id": e.full_url.removeprefix(URN_UUID)}
        local = local_reference(res)
        if e.full_url and local:
            index[e.full_url] = local
        out.append(Entry(e.full_url, res))
    return out, index


def resolve_local_references(value: Any, index: Mapping[str, str]) -> Any:
    """`value` with every ``reference`` naming a key of `index` rewritten to its ``Type/id`` (copies
    only what changes)."""
    if not index:
        return value
    if type(value) is dict or isinstance(value, Mapping):
        changed: dict[str, Any] | None = None
        for k, v in value.items():
            if k == "reference" and isinstance(v, str) and v in index:
                new: Any = index[v]
            elif type(v) is dict or type(v) is list or isinstance(v, Mapping | list):
                new = resolve_local_references(v, index)
            else:
                continue
            if new is not v:
                changed = changed if changed is not None else dict(value)
                changed[k] = new
        return changed if changed is not None else value
    if isinstance(value, list):
        items = [resolve_local_references(v, index) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


def urn_index(index: Mapping[str, str]) -> dict[str, str]:
    """The ``urn:uuid:`` part of a fullUrl index (absolute fullUrls are readable references already)."""
    return {k: v for k, v in index.items() if k.startswith(URN_UUID)}


def next_link(bundle: Mapping[str, Any]) -> str | None:
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if is_mapping(link) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and url:
                return url
    return None


# ---------------------------------------------------------------------------------------------
# dates


@dataclass(frozen=True, slots=True)
class Span:
    """A FHIR date as the interval of days it may mean: "1973" is the whole year."""

    earliest: date
    latest: date

    @property
    def exact(self) -> bool:
        return self.earliest == self.latest

    def iso(self) -> str:
        if self.exact:
            return self.earliest.isoformat()
        if (
            self.earliest.month == 1
            and self.earliest.day == 1
            and self.latest.month == 12
            and (self.latest.day == 31 and self.latest.year == self.earliest.year)
        ):
            return f"{self.earliest.year:04d}"
        if self.earliest.day == 1 and self.latest == last_day_of_month(self.earliest):
            return f"{self.earliest.year:04d}-{self.earliest.month:02d}"
        return f"{self.earliest.isoformat()}/{self.latest.isoformat()}"


def last_day_of_month(d: date) -> date:
    return date(d.year, d.month, calendar.monthrange(d.year, d.month)[1])


def span(value: object) -> Span | None:
    """Interval of a FHIR date/dateTime value (a `date`, a `datetime` or a possibly partial string).
    A dateTime keeps its own calendar day: no timezone shifting (23:30+08:00 happened that local day)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        d = value.date()
        return Span(d, d)
    if isinstance(value, date):
        return Span(value, value)
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 4:
                y = int(text)
                return Span(date(y, 1, 1), date(y, 12, 31))
            if len(text) == 7:
                first = date(int(text[:4]), int(text[5:7]), 1)
                return Span(first, last_day_of_month(first))
            d = date.fromisoformat(text[:10])
            return Span(d, d)
        except ValueError:
            return None
    return None


_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})")


def parse_instant(value: object) -> datetime | None:
    """A FHIR instant (or a dateTime with a time and a timezone) as an aware datetime; else None."""
    if not isinstance(value, str) or not _INSTANT.fullmatch(value.strip()):
        return None
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# codings


def observation_key(reference: str) -> str | None:
    """ "Observation/<id>" for a reference naming an Observation (relative, absolute, or with
    `_history`), else None: how a DiagnosticReport's `result` is matched to the record's results."""
    parts = reference.split("/")
    if len(parts) >= 2 and "Observation" in parts:
        i = len(parts) - 1 - parts[::-1].index("Observation")
        if i + 1 < len(parts):
            return f"Observation/{parts[i + 1]}"
    return None


def codings(concept: Any) -> list[Mapping[str, Any]]:
    """The Coding objects of a CodeableConcept (junk skipped)."""
    raw = concept.get("coding") if isinstance(concept, Mapping) else None
    return [c for c in raw if isinstance(c, Mapping)] if isinstance(raw, list) else []


def codes(concept: Any) -> set[str]:
    """Every code of a CodeableConcept, whatever its system."""
    return {c["code"] for c in codings(concept) if isinstance(c.get("code"), str)}


def coding_pairs(concepts: Any) -> set[tuple[str, str]]:
    """The (system, code) pairs of a CodeableConcept or a list of them (both strings only)."""
    out: set[tuple[str, str]] = set()
    for concept in concepts if isinstance(concepts, list) else (concepts,):
        for c in codings(concept):
            system, code = c.get("system"), c.get("code")
            if isinstance(system, str) and isinstance(code, str):
                out.add((system, code))
    return out


def has_coding(concepts: Any, wanted: Collection[tuple[str | None, str]]) -> bool:
    """Whether a CodeableConcept (or a list of them) carries one of `wanted` (system, code) pairs;
    a None system matches the code in any system."""
    for concept in concepts if isinstance(concepts, list) else (concepts,):
        for c in codings(concept):
            system, code = c.get("system"), c.get("code")
            if not isinstance(code, str):
                continue
            if (system, code) in wanted or (None, code) in wanted:
                return True
    return False


def token_match(concepts: Any, tokens: Iterable[str]) -> bool:
    """FHIR search-token semantics: ``system|code`` needs both, a bare ``code`` any system."""
    wanted: set[tuple[str | None, str]] = set()
    for token in tokens:
        system, bar, code = token.rpartition("|")
        wanted.add((system if bar else None, code))
    return has_coding(concepts, wanted)
