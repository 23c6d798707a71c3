"""Deterministic patient records for the benchmarks (raw FHIR JSON, as a FHIR server holds them).

* ``non_lupus()``: the fixture ``real-non-lupus`` (no lupus code: the trial does not apply).
* ``typical()``: the fixture ``real-active-sle`` limited to its last 24 months of results: about
  300 resources (275 Observations, 2 Conditions, 8 MedicationStatements, ...), every criterion
  settled as in the fixture.
* ``grown(n_observations, spacing_days)``: ``real-active-sle`` with its latest laboratory panel
  replicated backwards in time until the record holds ``n_observations`` Observations. The latest
  panel stays the latest, so the designed result (every criterion favourable) holds at any size.
  ``spacing_days=7`` is a record that grows with history (weekly panels over years);
  ``spacing_days=0`` packs every copy into the last 30 days (an inpatient with hourly labs), the
  worst case for the criteria, which read the 30-day window.

Every record is one patient: a list of resources. ``bundle(resources)`` wraps them in a
collection Bundle (what ``cds.service.demo.build_request`` and ``sandbox.load_bundles`` take).
"""

from __future__ import annotations

import copy
import json
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from cds.fhirjson import bundle_entries, span

REPO = Path(__file__).resolve().parents[1]
PATIENTS = REPO / "fixtures" / "patients"
AS_OF = date(2026, 11, 1)  # the fixtures' reference date

Resource = dict[str, Any]


@cache
def _fixture(name: str) -> tuple[Resource, ...]:
    data = json.loads((PATIENTS / f"{name}.json").read_text(encoding="utf-8"))
    return tuple(dict(e.resource) for e in bundle_entries(data)[0])


def fixture(name: str) -> list[Resource]:
    return copy.deepcopy(list(_fixture(name)))


def patient_id(resources: list[Resource]) -> str:
    return next(str(r["id"]) for r in resources if r["resourceType"] == "Patient")


def bundle(resources: list[Resource]) -> Resource:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


def with_id(resources: list[Resource], new_id: str) -> list[Resource]:
    """The same record for another patient id (for loading several variants into one server)."""
    old = patient_id(resources)
    text = json.dumps(resources).replace(f'"{old}', f'"{new_id}').replace(f"Patient/{old}", f"Patient/{new_id}")
    out: list[Resource] = json.loads(text)
    return out


def non_lupus() -> list[Resource]:
    return fixture("real-non-lupus")


def _obs_day(o: Resource) -> date:
    when = span(o.get("effectiveDateTime"))
    return when.latest if when is not None else date(1900, 1, 1)


def typical() -> list[Resource]:
    cutoff = AS_OF - timedelta(days=730)
    return [r for r in fixture("real-active-sle") if r["resourceType"] != "Observation" or _obs_day(r) >= cutoff]


def _shift(value: str, delta: timedelta) -> str:
    if "T" in value:
        return (datetime.fromisoformat(value) - delta).isoformat()
    return (date.fromisoformat(value) - delta).isoformat()


def grown(n_observations: int, spacing_days: float = 7.0, *, new_id: str | None = None) -> list[Resource]:
    """``real-active-sle`` with exactly ``n_observations`` Observations (see the module docstring)."""
    base = fixture("real-active-sle")
    others = [r for r in base if r["resourceType"] != "Observation"]
    observations = sorted((r for r in base if r["resourceType"] == "Observation"), key=_obs_day)
    last_day = _obs_day(observations[-1])
    panel = [o for o in observations if (last_day - _obs_day(o)).days <= 14]  # the latest panel
    target = max(n_observations - len(panel), 0)
    copies: list[Resource] = []
    k = 0
    while len(copies) < target:
        k += 1
        # spacing 0: copies 20 minutes apart, all before the latest panel but within its window
        delta = timedelta(days=spacing_days * k) if spacing_days > 0 else timedelta(minutes=20 * k)
        for o in panel:
            if len(copies) >= target:
                break
            c = copy.deepcopy(o)
            c["id"] = f"{o['id']}-c{k}"[:64]
            for key in ("effectiveDateTime", "issued"):
                if isinstance(c.get(key), str):
                    c[key] = _shift(c[key], delta)
            copies.append(c)
    out = copies + copy.deepcopy(panel)[: n_observations - len(copies)]
    record = others + out
    return with_id(record, new_id) if new_id else record
