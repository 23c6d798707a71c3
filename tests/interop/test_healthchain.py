"""Our CDS Hooks responses validate against HealthChain's response models (PyPI ``healthchain`` 0.16).

HealthChain pins ``fhir.resources < 8.2`` and ``httpx < 0.28``, older than the service needs, so it
lives in its own virtualenv (``.venv-healthchain``, made by ``.ci/run``) and validates the JSON this
test writes: every fixture patient's response (candidate cards, quiet excluded cards), the quiet
"referred" card, an empty response and the discovery document.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from cards.models import CdsResponse
from cards.render import ReportLink, referred_card, render_cards
from cds.bundles import read_bundle_file
from cds.engine import evaluate
from cds.trials.nct04582136 import TRIAL

ROOT = Path(__file__).resolve().parents[2]
HEALTHCHAIN_PYTHON = ROOT / ".venv-healthchain" / "bin" / "python"
REPORT = ReportLink("https://cds.example.org/report/Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4")

VALIDATE = """
import json, sys, time
started = time.perf_counter()
from healthchain.models.responses.cdsresponse import CDSResponse
from healthchain.models.responses.cdsdiscovery import CDSServiceInformation
imported = time.perf_counter() - started
data = json.load(open(sys.argv[1]))
for body in data["responses"]:
    CDSResponse.model_validate(body)
CDSServiceInformation.model_validate(data["discovery"])
print(json.dumps({"responses": len(data["responses"]), "importSeconds": round(imported, 2)}))
"""


def _responses() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"cards": []}]
    for path in sorted((ROOT / "fixtures" / "patients").glob("*.json")):
        contents = read_bundle_file(path)
        for p in contents.patients:
            rep = evaluate(p.resources, patient_id=p.patient_id, as_of=date(2026, 11, 1), searched=contents.searched)
            cards = render_cards(rep, TRIAL, show_excluded=True, report_link=REPORT)
            out.append(CdsResponse(cards=cards).to_json())
    out.append(CdsResponse(cards=[referred_card(TRIAL, "2026-10-31")]).to_json())
    return out


def test_responses_validate_with_healthchain_models(tmp_path: Path) -> None:
    if not HEALTHCHAIN_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(".ci/run makes .venv-healthchain (pip install healthchain==0.16.1)")
        pytest.skip("no .venv-healthchain: python3 -m venv .venv-healthchain && pip install healthchain==0.16.1")
    from cds.config import Settings
    from cds.service.api import service_description
    from cds.service.app import create_app

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite3", auth_required=False))
    state = app.state.cds
    discovery = {
        "services": [service_description(state, s).model_dump(exclude_none=True) for s in state.services.values()]
    }
    responses = _responses()
    links = [link for r in responses for c in r["cards"] for link in c.get("links", [])]
    assert links
    assert all(link["autoLaunchable"] is False for link in links)
    data = tmp_path / "responses.json"
    data.write_text(json.dumps({"responses": responses, "discovery": discovery}), encoding="utf-8")
    done = subprocess.run(
        [str(HEALTHCHAIN_PYTHON), "-c", VALIDATE, str(data)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    print(f"HealthChain validated {result}")
    assert result["responses"] == len(responses) >= 100
