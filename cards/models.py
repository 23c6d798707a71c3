"""Typed CDS Hooks card models (2.0) that never emit ``null`` or empty values.

Every optional field defaults to None and is dropped by `to_json()` (``exclude_none``); validators
reject empty strings, empty lists and empty objects, so a card cannot carry ``""``, ``[]`` or ``{}``
where the spec wants the field omitted. A FHIR resource inside a suggestion is checked recursively
(FHIR JSON forbids null and empty values too). The content of a card ``extension`` is ours (the
engine report) and is only required to be a non-empty object with non-empty keys.
"""

from __future__ import annotations

import uuid as _uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

SUMMARY_MAX = 139  # the spec: "<140 characters"


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or blank")
    return value


def _uuid_text(value: str) -> str:
    _uuid.UUID(value)
    return value


def _absolute_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError("must be an absolute http(s) URL")
    return value


def _no_empty(value: Any, path: str = "") -> None:
    if value is None:
        raise ValueError(f"null value at {path or '(root)'}")
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"empty string at {path or '(root)'}")
    if isinstance(value, list):
        if not value:
            raise ValueError(f"empty list at {path or '(root)'}")
        for i, item in enumerate(value):
            _no_empty(item, f"{path}[{i}]")
    if isinstance(value, dict):
        if not value:
            raise ValueError(f"empty object at {path or '(root)'}")
        for key, item in value.items():
            _no_empty(item, f"{path}.{key}" if path else str(key))


def _fhir_resource(value: dict[str, Any]) -> dict[str, Any]:
    _no_empty(value)
    if not isinstance(value.get("resourceType"), str):
        raise ValueError("a FHIR resource needs a resourceType")
    return value


def _extension(value: dict[str, Any]) -> dict[str, Any]:
    if not value:
        raise ValueError("extension must not be empty")
    for key, item in value.items():
        if not key.strip() or item is None or item in ("", [], {}):
            raise ValueError("extension keys and values must not be empty")
    return value


Text = Annotated[str, AfterValidator(_non_blank)]
Uuid = Annotated[str, AfterValidator(_uuid_text)]
Url = Annotated[str, AfterValidator(_absolute_url)]
FhirResource = Annotated[dict[str, Any], AfterValidator(_fhir_resource)]
Extension = Annotated[dict[str, Any], AfterValidator(_extension)]
Indicator = Literal["info", "warning", "critical"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = self.model_dump(mode="json", exclude_none=True, by_alias=True)
        return out


class Coding(_Model):
    system: Url | None = None
    code: Text
    display: Text | None = None


class Source(_Model):
    label: Text
    url: Url | None = None
    icon: Url | None = None
    topic: Coding | None = None


class Link(_Model):
    """A card link. The 2.0 specification spells the flag ``autolaunchable``; HealthChain's models
    (and clients built on them) require ``autoLaunchable``: our links carry both, with one value."""

    label: Text
    url: Url
    type: Literal["absolute", "smart"]
    appContext: Text | None = None
    autolaunchable: bool | None = None
    autoLaunchable: bool | None = None

    @model_validator(mode="after")
    def _one_flag(self) -> Link:
        flags = {self.autolaunchable, self.autoLaunchable} - {None}
        if len(flags) > 1:
            raise ValueError("autolaunchable and autoLaunchable disagree")
        return self


class Action(_Model):
    type: Literal["create", "update", "delete"]
    description: Text
    resource: FhirResource | None = None
    resourceId: Annotated[list[Text], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _resource_for_create(self) -> Action:
        if self.type in ("create", "update") and self.resource is None:
            raise ValueError(f"a {self.type} action needs a resource")
        return self


class Suggestion(_Model):
    label: Text
    uuid: Uuid | None = None
    isRecommended: bool | None = None
    actions: Annotated[list[Action], Field(min_length=1)] | None = None


class Card(_Model):
    uuid: Uuid | None = None
    summary: Annotated[Text, Field(max_length=SUMMARY_MAX)]
    detail: Text | None = None
    indicator: Indicator
    source: Source
    suggestions: Annotated[list[Suggestion], Field(min_length=1)] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: Annotated[list[Coding], Field(min_length=1)] | None = None
    links: Annotated[list[Link], Field(min_length=1)] | None = None
    extension: Extension | None = None

    @model_validator(mode="after")
    def _selection_with_suggestions(self) -> Card:
        if self.suggestions and self.selectionBehavior is None:
            raise ValueError("selectionBehavior is required when suggestions are present")
        return self


class CdsResponse(_Model):
    """The body of a service response. ``cards`` may be empty (no advice)."""

    cards: list[Card] = Field(default_factory=list)
