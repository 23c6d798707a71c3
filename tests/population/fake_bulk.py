"""A fake Bulk Data server on respx: fixture bundles served as a system-level $export."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import respx

BASE = "http://bulk.test/fhir"
STATUS = f"{BASE}/$export-poll-status?_jobId=job-1"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "patients"


def bundle_resources(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    for path in paths:
        for entry in json.loads(path.read_text(encoding="utf-8")).get("entry", []):
            yield entry["resource"]


def ndjson_by_type(resources: Iterable[dict[str, Any]]) -> dict[str, bytes]:
    out: dict[str, list[str]] = {}
    for r in resources:
        out.setdefault(r["resourceType"], []).append(json.dumps(r))
    return {t: ("\n".join(lines) + "\n").encode() for t, lines in out.items()}


class FakeBulkServer:
    def __init__(
        self,
        router: respx.MockRouter,
        files: dict[str, bytes],
        *,
        errors: list[dict[str, Any]] | None = None,
        requires_access_token: bool = False,
    ):
        self.files = files
        self.capability = router.get(f"{BASE}/metadata").mock(
            return_value=httpx.Response(
                200,
                json={
                    "resourceType": "CapabilityStatement",
                    "rest": [
                        {"mode": "server", "operation": [{"name": "export", "definition": "OperationDefinition/x"}]}
                    ],
                },
            )
        )
        self.definition = router.get(f"{BASE}/OperationDefinition/x").mock(
            return_value=httpx.Response(200, json={"parameter": [{"name": "_typeFilter", "use": "in"}]})
        )
        self.kick_off = router.get(f"{BASE}/$export").mock(
            return_value=httpx.Response(202, headers={"Content-Location": STATUS})
        )
        manifest: dict[str, Any] = {
            "transactionTime": "2026-11-01T00:00:00Z",
            "request": f"{BASE}/$export",
            "requiresAccessToken": requires_access_token,
            "output": [{"type": t, "url": f"{BASE}/Binary/{t}"} for t in sorted(files)],
            "error": [],
        }
        if errors:
            manifest["error"] = [{"type": "OperationOutcome", "url": f"{BASE}/Binary/errors"}]
            body = "\n".join(json.dumps(e) for e in errors).encode()
            router.get(f"{BASE}/Binary/errors").mock(return_value=httpx.Response(200, content=body))
        self.status = router.get(STATUS).mock(
            side_effect=[
                httpx.Response(202, headers={"X-Progress": "working", "Retry-After": "0"}),
                httpx.Response(200, json=manifest),
            ]
        )
        self.downloads = {
            t: router.get(f"{BASE}/Binary/{t}").mock(return_value=httpx.Response(200, content=body))
            for t, body in files.items()
        }
