"""Stored population reports (the `cds screen --format jsonl` JSON) read back into `Report` objects.

The JSON form does not carry whether a criterion can be settled by data (the investigator's judgment
cannot); that comes from the registered trial's definition. A criterion the trial does not declare
(a report from an older definition) counts as settleable, so it is shown "to verify", never hidden.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from cds.engine.model import CriterionResult, DataIssue, DataIssueKind, Evidence, Flag, ItemResult, Kind, Report, Status


@dataclass(frozen=True, slots=True)
class TrialInfo:
    """What the worklist needs of a trial (a `cards.trial.TrialLike`, plus criterion titles)."""

    id: str
    title: str
    url: str
    unsettleable: frozenset[str] = frozenset()
    criteria: tuple[tuple[str, str], ...] = ()  # (id, title) in the trial's order


def trial_info(trial_id: str) -> TrialInfo:
    """The registered trial's info, or a bare one (its id only) for a trial no longer registered."""
    from cds import trials

    try:
        trial = trials.get(trial_id)
    except trials.UnknownTrial:
        return TrialInfo(id=trial_id, title=trial_id, url="")
    return TrialInfo(
        id=trial.id,
        title=trial.title,
        url=trial.url,
        unsettleable=frozenset(c.id for c in trial.criteria if not c.settleable),
        criteria=tuple((c.id, c.title) for c in trial.criteria),
    )


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _list(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _flags(value: Any) -> tuple[Flag, ...]:
    known = {f.value for f in Flag}
    return tuple(Flag(f) for f in value if f in known) if isinstance(value, list) else ()


def _evidence(data: Mapping[str, Any]) -> Evidence:
    def opt(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) else None

    return Evidence(
        reference=_str(data.get("reference")),
        description=_str(data.get("description")),
        value=opt("value"),
        unit=opt("unit"),
        date=opt("date"),
        original=opt("original"),
        flags=_flags(data.get("flags")),
    )


def _status(value: Any) -> Status:
    try:
        return Status(value)
    except ValueError:
        return Status.UNKNOWN  # unreadable: unknown, never silently met or not met


def _item(data: Mapping[str, Any]) -> ItemResult:
    points = data.get("points")
    return ItemResult(
        id=_str(data.get("id")),
        label=_str(data.get("label")),
        group=_str(data.get("group")),
        status=_status(data.get("status")),
        reason=_str(data.get("reason")),
        evidence=tuple(_evidence(e) for e in _list(data.get("evidence"))),
        points=points if isinstance(points, int) else None,
    )


def _criterion(data: Mapping[str, Any], unsettleable: frozenset[str]) -> CriterionResult:
    cid = _str(data.get("id"))
    kind = Kind.EXCLUSION if data.get("kind") == "exclusion" else Kind.INCLUSION
    return CriterionResult(
        id=cid,
        kind=kind,
        status=_status(data.get("status")),
        reason=_str(data.get("reason")),
        evidence=tuple(_evidence(e) for e in _list(data.get("evidence"))),
        title=_str(data.get("title")),
        settleable=cid not in unsettleable,
        items=tuple(_item(i) for i in _list(data.get("items"))),
    )


def _issue_kind(value: Any) -> DataIssueKind:
    """The stored issue's kind; a report stored before kinds existed (or an unknown kind) counts as
    invalid FHIR, the kind that leaves its type doubtful (never settles more than the engine did)."""
    try:
        return DataIssueKind(value)
    except ValueError:
        return DataIssueKind.INVALID_FHIR


def report_from_json(data: Mapping[str, Any], trial: TrialInfo) -> Report:
    try:
        as_of = date.fromisoformat(_str(data.get("asOf")))
    except ValueError:
        as_of = date.min
    incomplete = data.get("incomplete")
    return Report(
        trial=_str(data.get("trial"), trial.id),
        patient=_str(data.get("patient")),
        as_of=as_of,
        criteria=tuple(_criterion(c, trial.unsettleable) for c in _list(data.get("criteria"))),
        data_issues=tuple(
            DataIssue(
                reference=_str(d.get("reference")),
                problem=_str(d.get("problem")),
                kind=_issue_kind(d.get("kind")),
                resource_type=d.get("resourceType") if isinstance(d.get("resourceType"), str) else None,
            )
            for d in _list(data.get("dataIssues"))
        ),
        incomplete=tuple(i for i in incomplete if isinstance(i, str)) if isinstance(incomplete, list) else (),
    )
