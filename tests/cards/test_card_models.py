from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from cards.models import Action, Card, CdsResponse, Coding, Link, Source, Suggestion

UUID = "6f1c6e36-6a0b-4b9c-9d7b-5a1f0d3c2b1a"


def _card(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "uuid": UUID,
        "summary": "Possible candidate",
        "indicator": "info",
        "source": {"label": "prescreen"},
    }
    data.update(changes)
    return data


def test_minimal_card_dumps_without_optional_fields() -> None:
    card = Card.model_validate(_card())
    assert card.to_json() == _card()


@pytest.mark.parametrize(
    "changes",
    [
        {"summary": "x" * 140},
        {"summary": ""},
        {"summary": "   "},
        {"summary": None},
        {"indicator": "hard-stop"},
        {"detail": ""},
        {"uuid": "not-a-uuid"},
        {"links": []},
        {"overrideReasons": []},
        {"suggestions": []},
        {"extension": {}},
        {"extension": {"org.x": None}},
        {"source": {"label": ""}},
        {"source": {"label": "x", "url": "not a url"}},
        {"unknownField": 1},
        {"suggestions": [{"label": "x", "uuid": UUID}]},  # suggestions need selectionBehavior
        {"selectionBehavior": "all"},
    ],
)
def test_invalid_cards_are_rejected(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Card.model_validate(_card(**changes))


def test_summary_of_139_characters_is_accepted() -> None:
    assert len(Card.model_validate(_card(summary="x" * 139)).summary) == 139


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "ServiceRequest", "status": ""},
        {"resourceType": "ServiceRequest", "note": []},
        {"resourceType": "ServiceRequest", "subject": {}},
        {"resourceType": "ServiceRequest", "intent": None},
        {"status": "draft"},
    ],
)
def test_suggestion_resources_may_not_hold_empty_values(resource: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Action(type="create", description="x", resource=resource)


def test_create_action_needs_a_resource() -> None:
    with pytest.raises(ValidationError):
        Action(type="create", description="x")
    assert Action(type="delete", description="x", resourceId=["ServiceRequest/1"]).resource is None


def test_other_models_reject_empty_values() -> None:
    with pytest.raises(ValidationError):
        Coding(code="")
    with pytest.raises(ValidationError):
        Link(label="x", url="https://x", type="relative")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Suggestion(label="x", actions=[])
    with pytest.raises(ValidationError):
        Source(label="x", icon="")
    assert CdsResponse().to_json() == {"cards": []}
