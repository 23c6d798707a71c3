"""Feedback: parse the spec's shape and the EHR variants, store every item durably (SQLAlchemy 2).

Accepted shapes (all may be mixed in one POST):

* spec 2.0: ``{"feedback": [{"card", "outcome", "acceptedSuggestions": [{"id"}],
  "overrideReason": {"reason": Coding, "userComment"}, "outcomeTimestamp"}]}``;
* several items per POST (Epic batches), the same card reported more than once (each is stored);
* ``overrideReasons`` (a list) instead of ``overrideReason``; a reason given as a bare Coding;
* reasons inside ``extension`` (any nesting): objects with a ``reason`` Coding, or Codings;
* a reason Coding without ``display`` (the sandbox): our own codes get their display filled in;
* a bare item or a bare list of items instead of the ``feedback`` wrapper.

Only ``card`` is required per item. Every item is stored as received (``item`` column) next to the
normalised columns, so nothing is lost even if a later reading of the variants improves.

Storage: the service's database (`cds.store.Database`: a SQLite file by default, PostgreSQL for
several workers or replicas), synchronous, called from the web layer through a thread pool. The
schema is owned by the migrations in ``cds/store/migrations``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard

from sqlalchemy import JSON, DateTime, Integer, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from cards.codes import OVERRIDE_REASON_DISPLAY, OVERRIDE_REASON_SYSTEM
from cds.errors import InvalidRequest
from cds.store.base import Base
from cds.store.database import Database

MAX_ITEMS = 1000


__all__ = ["Base", "FeedbackItem", "FeedbackRow", "FeedbackStore", "parse_feedback"]


class FeedbackRow(Base):
    __tablename__ = "cds_feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(String(200), index=True)
    card: Mapped[str] = mapped_column(String(200), index=True)
    outcome: Mapped[str | None] = mapped_column(String(40), nullable=True)
    outcome_timestamp: Mapped[str | None] = mapped_column(String(64), nullable=True)
    accepted_suggestions: Mapped[list[str]] = mapped_column(JSON)
    override_reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    item: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "serviceId": self.service_id,
            "card": self.card,
            "receivedAt": self.received_at.replace(tzinfo=self.received_at.tzinfo or UTC).isoformat(),
            "item": self.item,
        }
        if self.outcome:
            out["outcome"] = self.outcome
        if self.outcome_timestamp:
            out["outcomeTimestamp"] = self.outcome_timestamp
        if self.accepted_suggestions:
            out["acceptedSuggestions"] = self.accepted_suggestions
        if self.override_reasons:
            out["overrideReasons"] = self.override_reasons
        return out


@dataclass(slots=True)
class FeedbackItem:
    card: str
    outcome: str | None
    outcome_timestamp: str | None
    accepted_suggestions: list[str] = field(default_factory=list)
    override_reasons: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def _is_coding(value: Any) -> TypeGuard[Mapping[str, Any]]:
    return isinstance(value, Mapping) and isinstance(value.get("code"), str) and bool(value.get("code"))


def _complete_coding(coding: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in coding.items() if v not in (None, "")}
    system = out.get("system")
    if "display" not in out and system in (None, OVERRIDE_REASON_SYSTEM):
        display = OVERRIDE_REASON_DISPLAY.get(str(out["code"]))
        if display:
            out["display"] = display
    return out


def _reason(value: Any) -> dict[str, Any] | None:
    """A `{reason, userComment}` object from the spec shape or from a bare Coding."""
    if _is_coding(value):
        return {"reason": _complete_coding(value)}
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        reason = value.get("reason")
        if _is_coding(reason):
            out["reason"] = _complete_coding(reason)
        comment = value.get("userComment")
        if isinstance(comment, str) and comment.strip():
            out["userComment"] = comment
        return out or None
    return None


def _walk_extension(value: Any) -> Iterator[dict[str, Any]]:
    """Reasons found anywhere inside an `extension` object."""
    if isinstance(value, Mapping):
        found = _reason(value) if ("reason" in value or _is_coding(value)) else None
        if found is not None:
            yield found
            return
        for item in value.values():
            yield from _walk_extension(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk_extension(item)


def _parse_item(index: int, item: Any) -> FeedbackItem:
    if not isinstance(item, Mapping):
        raise InvalidRequest(f"feedback item {index} is not an object")
    card = item.get("card")
    if not isinstance(card, str) or not card.strip():
        raise InvalidRequest(f"feedback item {index}: 'card' (the card uuid) is required")
    outcome = item.get("outcome")
    timestamp = item.get("outcomeTimestamp")
    accepted: list[str] = []
    suggestions = item.get("acceptedSuggestions")
    if isinstance(suggestions, list):
        for s in suggestions:
            if isinstance(s, Mapping) and isinstance(s.get("id"), str):
                accepted.append(s["id"])
            elif isinstance(s, str):
                accepted.append(s)
    reasons: list[dict[str, Any]] = []
    candidates: list[Any] = []
    if "overrideReason" in item:
        candidates.append(item["overrideReason"])
    many = item.get("overrideReasons")
    if isinstance(many, list):
        candidates.extend(many)
    elif many is not None:
        candidates.append(many)
    for candidate in candidates:
        found = _reason(candidate)
        if found is not None:
            reasons.append(found)
    for found in _walk_extension(item.get("extension")):
        if found not in reasons:
            reasons.append(found)
    return FeedbackItem(
        card=card.strip(),
        outcome=outcome.strip().lower() if isinstance(outcome, str) and outcome.strip() else None,
        outcome_timestamp=timestamp if isinstance(timestamp, str) and timestamp else None,
        accepted_suggestions=accepted,
        override_reasons=reasons,
        raw=dict(item),
    )


def parse_feedback(body: Any) -> list[FeedbackItem]:
    """Items of a feedback POST (see the module docstring for the accepted shapes)."""
    if isinstance(body, Mapping) and "feedback" in body:
        items = body["feedback"]
        if isinstance(items, Mapping):
            items = [items]
    elif isinstance(body, list):
        items = body
    elif isinstance(body, Mapping) and "card" in body:
        items = [body]
    else:
        raise InvalidRequest("a feedback request needs a 'feedback' list of items")
    if not isinstance(items, list) or not items:
        raise InvalidRequest("a feedback request needs a non-empty 'feedback' list of items")
    if len(items) > MAX_ITEMS:
        raise InvalidRequest(f"too many feedback items (at most {MAX_ITEMS} per request)")
    return [_parse_item(i, item) for i, item in enumerate(items)]


@dataclass(frozen=True, slots=True)
class FeedbackPage:
    rows: list[dict[str, Any]]
    total: int


class FeedbackStore:
    """Durable feedback storage. Synchronous: call it from a thread pool in async code."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.engine = database.engine

    def add(self, service_id: str, items: list[FeedbackItem]) -> int:
        now = datetime.now(UTC)
        with Session(self.engine) as session, session.begin():
            session.add_all(
                FeedbackRow(
                    service_id=service_id,
                    card=item.card,
                    outcome=item.outcome,
                    outcome_timestamp=item.outcome_timestamp,
                    accepted_suggestions=item.accepted_suggestions,
                    override_reasons=item.override_reasons,
                    item=item.raw,
                    received_at=now,
                )
                for item in items
            )
        return len(items)

    def page(self, service_id: str, *, card: str | None = None, limit: int = 100, offset: int = 0) -> FeedbackPage:
        """One page of stored feedback, oldest first, with the total count (no silent cut-off)."""
        where = [FeedbackRow.service_id == service_id]
        if card is not None:
            where.append(FeedbackRow.card == card)
        query = select(FeedbackRow).where(*where).order_by(FeedbackRow.id).limit(limit).offset(offset)
        with Session(self.engine) as session:
            total = session.scalar(select(func.count()).select_from(FeedbackRow).where(*where)) or 0
            return FeedbackPage([row.to_json() for row in session.scalars(query)], total)

    def list(self, service_id: str, *, card: str | None = None) -> list[dict[str, Any]]:
        """Every stored item (all pages)."""
        rows: list[dict[str, Any]] = []
        while True:
            page = self.page(service_id, card=card, limit=1000, offset=len(rows))
            rows.extend(page.rows)
            if not page.rows or len(rows) >= page.total:
                return rows
