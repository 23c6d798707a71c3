"""Small JSON helpers shared by the service, security and integration tests."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any


def searchset(resources: Iterable[dict[str, Any]] = (), next_url: str | None = None) -> dict[str, Any]:
    """A FHIR searchset Bundle of `resources` (no `entry` when empty), optionally with a `next` link."""
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    entries = [{"resource": r, "search": {"mode": "match"}} for r in resources]
    if entries:
        bundle["entry"] = entries
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def without_uuids(value: Any) -> Any:
    """`value` with every `uuid` key removed and report-page tokens blanked, at any depth (cards differ
    only in random uuids and in the random token of their report link)."""
    if isinstance(value, dict):
        return {k: without_uuids(v) for k, v in value.items() if k != "uuid"}
    if isinstance(value, list):
        return [without_uuids(v) for v in value]
    if isinstance(value, str) and "/report/" in value:
        return re.sub(r"/report/[A-Za-z0-9_-]+", "/report/TOKEN", value)
    return value
