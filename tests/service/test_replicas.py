"""Several real service processes sharing one real PostgreSQL: what one saw, the others know.

Each process is ``cds serve`` in its own interpreter (`tests.processes`), as replicas behind a load
balancer would be: the same ``CDS_PUBLIC_BASE_URL`` (the JWT ``aud`` names the balancer's URL), the
same trusted EHR key, one database.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from service_helpers import full_prefetch, hook_request

from tests.processes import ServiceProcesses
from tests.security.fake_ehr import BASE, ISSUER, SERVICE_PATH, FakeEhr, bearer


def _env(tmp_path: Path, ehr: FakeEhr) -> dict[str, str]:
    return {
        "CDS_AUTH_REQUIRED": "true",
        "CDS_AUTH_ISSUERS": ISSUER,
        "CDS_AUTH_JWKS_FILE": str(ehr.write_jwks(tmp_path / "jwks.json")),
        "CDS_PUBLIC_BASE_URL": BASE,
        "CDS_AS_OF": "2026-11-01",
    }


def _hook(base: str, token: str) -> httpx.Response:
    body = hook_request(full_prefetch(), fhir_server=None)
    return httpx.post(base + SERVICE_PATH, json=body, headers={"Authorization": bearer(token)}, timeout=30)


def test_two_processes_share_replay_ids_and_feedback(
    tmp_path: Path, postgres_url: str, service_processes: ServiceProcesses
) -> None:
    ehr = FakeEhr()
    first, second = service_processes.start(2, postgres_url, _env(tmp_path, ehr))
    for base in (first, second):
        assert httpx.get(f"{base}/ready", timeout=10).json()["database"] == "postgresql"

    token = ehr.token()
    assert _hook(first, token).status_code == 200
    replayed = _hook(second, token)
    assert replayed.status_code == 401, "a token used at one replica is refused by the other"
    assert replayed.headers["WWW-Authenticate"] == "Bearer"
    assert _hook(second, ehr.token()).status_code == 200, "a fresh token is fine"

    feedback = {
        "feedback": [
            {"card": "card-across", "outcome": "overridden", "overrideReason": {"reason": {"code": "patient-declined"}}}
        ]
    }
    posted = httpx.post(
        first + SERVICE_PATH + "/feedback",
        json=feedback,
        headers={"Authorization": bearer(ehr.token(BASE + SERVICE_PATH + "/feedback"))},
        timeout=30,
    )
    assert posted.status_code == 200, posted.text
    listed = httpx.get(
        second + SERVICE_PATH + "/feedback",
        params={"card": "card-across"},
        headers={"Authorization": bearer(ehr.token(BASE + SERVICE_PATH + "/feedback"))},
        timeout=30,
    )
    assert listed.status_code == 200, listed.text
    [row] = listed.json()["feedback"]
    assert row["outcome"] == "overridden"
    assert row["overrideReasons"][0]["reason"]["code"] == "patient-declined"


def test_serve_with_two_workers_refuses_a_replay_whichever_worker_answers(
    tmp_path: Path, postgres_url: str, service_processes: ServiceProcesses
) -> None:
    ehr = FakeEhr()
    [base] = service_processes.start(1, postgres_url, _env(tmp_path, ehr), workers=2)
    [parent] = service_processes.pids()
    command = Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0")
    assert command[1:4] == [b"-m", b"uvicorn", b"cds.service.app:app_factory"], "cds serve became uvicorn's supervisor"
    tokens = [ehr.token() for _ in range(6)]
    assert [_hook(base, t).status_code for t in tokens] == [200] * 6
    assert [_hook(base, t).status_code for t in tokens] == [401] * 6


def test_a_snooze_set_through_one_process_is_honoured_by_the_other(
    tmp_path: Path, postgres_url: str, service_processes: ServiceProcesses
) -> None:
    ehr = FakeEhr()
    first, second = service_processes.start(2, postgres_url, _env(tmp_path, ehr))
    shown = _hook(first, ehr.token())
    assert shown.status_code == 200, shown.text
    [card] = shown.json()["cards"]
    assert _hook(second, ehr.token()).json()["cards"], "before the dismissal, the other replica shows the card too"

    feedback = {
        "feedback": [
            {"card": card["uuid"], "outcome": "overridden", "overrideReason": {"reason": {"code": "patient-declined"}}}
        ]
    }
    posted = httpx.post(
        first + SERVICE_PATH + "/feedback",
        json=feedback,
        headers={"Authorization": bearer(ehr.token(BASE + SERVICE_PATH + "/feedback"))},
        timeout=30,
    )
    assert posted.status_code == 200, posted.text
    for base in (second, first):
        quiet = _hook(base, ehr.token())
        assert quiet.status_code == 200, quiet.text
        assert quiet.json()["cards"] == [], f"the card dismissed at one replica stays away at {base}"
