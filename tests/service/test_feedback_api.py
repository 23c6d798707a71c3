"""Feedback: the spec's shape, Epic/sandbox variants, durable storage across restarts."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from service_helpers import SERVICE

from cards.codes import OVERRIDE_REASON_SYSTEM
from cds.config import Settings

FEEDBACK = f"{SERVICE}/feedback"
CARD = "0b7a2c4e-1111-4a4a-9e9e-0123456789ab"


def _reason(code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": OVERRIDE_REASON_SYSTEM, "code": code}
    if display:
        coding["display"] = display
    return coding


async def _stored(client: httpx.AsyncClient, card: str | None = None) -> list[dict[str, Any]]:
    response = await client.get(FEEDBACK, params={"card": card} if card else None)
    assert response.status_code == 200
    rows: list[dict[str, Any]] = response.json()["feedback"]
    return rows


async def test_spec_feedback_is_stored_and_survives_a_restart(make_client: Any, settings: Settings) -> None:
    body = {
        "feedback": [
            {
                "card": CARD,
                "outcome": "accepted",
                "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
                "outcomeTimestamp": "2026-11-01T10:00:00Z",
            },
            {
                "card": CARD,
                "outcome": "overridden",
                "overrideReason": {
                    "reason": _reason("patient-declined", "Patient declined"),
                    "userComment": "will discuss at next visit",
                },
                "outcomeTimestamp": "2026-11-01T10:01:00Z",
            },
        ]
    }
    async with make_client(settings) as client:
        response = await client.post(FEEDBACK, json=body)
        assert response.status_code == 200
        assert response.json() == {"stored": 2}
    # A new app on the same database file: nothing lost.
    async with make_client(settings) as client:
        rows = await _stored(client)
    assert [r["outcome"] for r in rows] == ["accepted", "overridden"]
    assert rows[0]["acceptedSuggestions"] == ["e56e1945-20b3-4393-8503-a1a20fd73152"]
    assert rows[0]["outcomeTimestamp"] == "2026-11-01T10:00:00Z"
    assert rows[1]["overrideReasons"] == [
        {"reason": _reason("patient-declined", "Patient declined"), "userComment": "will discuss at next visit"}
    ]
    assert rows[1]["item"] == body["feedback"][1]
    assert all(r["card"] == CARD and r["serviceId"] == "nct04582136-prescreen" for r in rows)


async def test_epic_and_sandbox_variants(client: httpx.AsyncClient) -> None:
    body = {
        "feedback": [
            {  # Epic: overrideReasons list, extension
                "card": "card-epic-1",
                "outcome": "overridden",
                "overrideReasons": [{"reason": _reason("already-screened"), "userComment": "seen in March"}],
                "extension": {"com.epic.cdshooks.feedback.user": {"role": "physician"}},
            },
            {  # reasons only in extension
                "card": "card-epic-2",
                "outcome": "overridden",
                "extension": {"com.epic.cdshooks.feedback.overridereason": {"reason": _reason("will-refer")}},
            },
            {  # sandbox: reason Coding without display, outcome capitalised
                "card": "card-sandbox",
                "outcome": "Overridden",
                "overrideReason": {"reason": {"code": "not-a-candidate", "system": OVERRIDE_REASON_SYSTEM}},
            },
            {  # a bare Coding as the reason
                "card": "card-bare",
                "outcome": "overridden",
                "overrideReason": _reason("patient-declined"),
            },
        ]
    }
    response = await client.post(FEEDBACK, json=body)
    assert response.json() == {"stored": 4}
    rows = {r["card"]: r for r in await _stored(client)}
    assert rows["card-epic-1"]["overrideReasons"] == [
        {
            "reason": _reason("already-screened", "Already screened for this study"),
            "userComment": "seen in March",
        }
    ]
    assert rows["card-epic-2"]["overrideReasons"] == [{"reason": _reason("will-refer", "Will refer later")}]
    assert rows["card-sandbox"]["outcome"] == "overridden"
    assert rows["card-sandbox"]["overrideReasons"][0]["reason"]["display"] == "Not a candidate (clinical judgment)"
    assert rows["card-bare"]["overrideReasons"] == [{"reason": _reason("patient-declined", "Patient declined")}]
    assert rows["card-epic-1"]["item"]["extension"] == body["feedback"][0]["extension"]


async def test_a_bare_item_and_a_bare_list_are_accepted(client: httpx.AsyncClient) -> None:
    assert (await client.post(FEEDBACK, json={"card": "c1", "outcome": "accepted"})).json() == {"stored": 1}
    assert (await client.post(FEEDBACK, json=[{"card": "c2"}, {"card": "c2"}])).json() == {"stored": 2}
    assert [r["card"] for r in await _stored(client)] == ["c1", "c2", "c2"]
    assert [r["card"] for r in await _stored(client, card="c2")] == ["c2", "c2"]


@pytest.mark.parametrize(
    "body",
    [
        {"feedback": []},
        {"feedback": [{"outcome": "accepted"}]},
        {"feedback": ["not an object"]},
        {"something": "else"},
    ],
)
async def test_invalid_feedback_is_400_and_stores_nothing(client: httpx.AsyncClient, body: Any) -> None:
    response = await client.post(FEEDBACK, json=body)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
    assert await _stored(client) == []


async def test_malformed_feedback_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(FEEDBACK, content=b"{oops")
    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "invalid"


async def test_feedback_listing_pages_past_1000_rows_with_a_total(client: httpx.AsyncClient) -> None:
    """Regression: GET .../feedback silently stopped at the oldest 1,000 rows."""
    for batch in range(2):
        items = [{"card": f"card-{batch}-{i:04d}", "outcome": "overridden"} for i in range(1000 if batch == 0 else 205)]
        assert (await client.post(FEEDBACK, json={"feedback": items})).json() == {"stored": len(items)}
    first = (await client.get(FEEDBACK)).json()
    assert first["total"] == 1205
    assert len(first["feedback"]) == first["limit"] == 100
    assert first["next"] == 100
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = (await client.get(FEEDBACK, params={"limit": 1000, "offset": offset})).json()
        seen.extend(row["card"] for row in page["feedback"])
        offset = page.get("next")
    assert len(seen) == len(set(seen)) == 1205
    assert seen[-1] == "card-1-0204"
    last = (await client.get(FEEDBACK, params={"limit": 10, "offset": 1200})).json()
    assert [row["card"] for row in last["feedback"]] == [f"card-1-{i:04d}" for i in range(200, 205)]
    assert "next" not in last
    one = (await client.get(FEEDBACK, params={"card": "card-0-0007"})).json()
    assert one["total"] == 1


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "1001"}, {"limit": "x"}, {"offset": "-1"}])
async def test_bad_feedback_paging_parameters_are_400(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    response = await client.get(FEEDBACK, params=params)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
