"""The main job on an embedded default: a real patient-view call against a real HTTP server.

``run_demo()`` starts the service with uvicorn on a free loopback port in a background thread,
builds a ``patient-view`` request for a fixture patient (default ``base-candidate``: package data in
``cds/service/demo_patients/``, a copy written by ``fixtures/build.py``, so the demo runs from any
directory) with prefetch built from that bundle the way an EHR would fill the discovery templates (the
Patient resource, one searchset Bundle per search template, Observations filtered to the template's codes),
POSTs it over HTTP, and prints the request summary and the card rendered for a terminal (``rich``:
the markdown detail as formatted text, not raw markdown), or, when there is no card, why (the
deciding criteria, from the same engine run locally on the bundle).

``write_examples()`` writes a deterministic request/response pair to ``cds/service/examples/``
(fixed hook instance, fixed card uuids, fixed as-of date) for the README.

    python -m cds.service.demo [PATIENT.json]
    python -m cds.service.demo --write-examples
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import httpx

from cds.config import Settings
from cds.service.alerts import GATE_QUERIES
from cds.service.prefetch import PrefetchQuery, queries_for
from cds.service.state import default_trial
from cds.trials import DEFAULT_TRIAL, service_id

DEMO_SERVICE = service_id(DEFAULT_TRIAL)  # the demo fires the default trial's service

#: The demo's patient: package data (installed with the wheel), read with importlib.resources so that
#: `cds demo` works from any directory. `fixtures/build.py` writes it (a copy of the fixture).
DEMO_PATIENTS = files("cds.service") / "demo_patients"
DEFAULT_PATIENT: Traversable = DEMO_PATIENTS / "base-candidate.json"
EXAMPLES_DIR = Path(__file__).with_name("examples")
FIXTURES_AS_OF = date(2026, 11, 1)  # every fixture date is relative to this day
EXAMPLE_HOOK_INSTANCE = "5b8f3c1e-2d4a-4f6b-9c7e-1a2b3c4d5e6f"
EXAMPLE_FHIR_SERVER = "http://127.0.0.1:8090/fhir"  # the HAPI server of `cds sandbox`


def load_bundle(path: Path | Traversable) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise ValueError(f"{path} is not a FHIR Bundle")
    return data


def bundle_patient_id(bundle: Mapping[str, Any]) -> str:
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        if resource.get("resourceType") == "Patient" and isinstance(resource.get("id"), str):
            return str(resource["id"])
    raise ValueError("the bundle holds no Patient with an id")


def prefetch_from_bundle(
    bundle: Mapping[str, Any], queries: Sequence[PrefetchQuery], patient_id: str
) -> dict[str, Any]:
    """Prefetch as an EHR would fill the templates from this patient's record."""
    resources = [
        e["resource"]
        for e in bundle.get("entry", [])
        if isinstance(e, Mapping) and isinstance(e.get("resource"), Mapping)
    ]
    prefetch: dict[str, Any] = {}
    for query in queries:
        matching = [r for r in resources if query.selects(r, patient_id)]  # the template's search semantics
        if query.read:
            prefetch[query.key] = matching[0] if matching else None
            continue
        bundle_out: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(matching)}
        if matching:
            bundle_out["entry"] = [
                {
                    "fullUrl": f"{EXAMPLE_FHIR_SERVER}/{r['resourceType']}/{r['id']}",
                    "resource": r,
                    "search": {"mode": "match"},
                }
                for r in matching
            ]
        prefetch[query.key] = bundle_out
    return prefetch


def build_request(
    bundle: Mapping[str, Any],
    *,
    hook_instance: str | None = None,
    fhir_server: str | None = EXAMPLE_FHIR_SERVER,
) -> dict[str, Any]:
    """A patient-view request with full prefetch for the bundle's patient."""
    patient_id = bundle_patient_id(bundle)
    queries = (*queries_for(default_trial()), *GATE_QUERIES)
    request: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": hook_instance or str(uuid.uuid4()),
        "context": {"userId": "Practitioner/example", "patientId": patient_id},
        "prefetch": prefetch_from_bundle(bundle, queries, patient_id),
    }
    if fhir_server:
        request["fhirServer"] = fhir_server
    return request


def _request_summary(request: Mapping[str, Any]) -> str:
    lines = [
        f"hook: {request['hook']}  hookInstance: {request['hookInstance']}",
        f"patient: Patient/{request['context']['patientId']}",
        "prefetch:",
    ]
    for key, value in request.get("prefetch", {}).items():
        if isinstance(value, Mapping) and value.get("resourceType") == "Bundle":
            lines.append(f"  {key}: Bundle with {len(value.get('entry', []))} entries")
        elif isinstance(value, Mapping):
            lines.append(f"  {key}: {value.get('resourceType')}")
        else:
            lines.append(f"  {key}: null")
    return "\n".join(lines)


def _out(text: object = "") -> None:
    sys.stdout.write(f"{text}\n")


def print_card(card: Mapping[str, Any]) -> None:
    """A card as a terminal shows it: a panel titled with the summary, the detail rendered, the links."""
    from rich.console import Console
    from rich.markdown import Markdown
    from rich.panel import Panel
    from rich.text import Text

    console = Console(file=sys.stdout, width=min(100, Console().width), highlight=False)
    console.print(Text(f"[{card['indicator']}] {card['summary']}", style="bold"), soft_wrap=True)
    console.print(Panel(Markdown(str(card.get("detail", "")) or "(no detail)")))
    for link in card.get("links", []):
        console.print(Text(f"  link: {link['label']}: {link['url']}"), soft_wrap=True)
    for suggestion in card.get("suggestions", []):
        console.print(Text(f"  suggestion: {suggestion['label']}"), soft_wrap=True)


def why_no_card(bundle: Mapping[str, Any], as_of: date) -> str:
    """The deciding criteria for a patient who got no card (the engine, run here on the same bundle)."""
    from cards.render import no_card_reason
    from cds.engine import evaluate

    resources = [e["resource"] for e in bundle.get("entry", []) if isinstance(e, Mapping) and "resource" in e]
    searched = {str(r.get("resourceType")) for r in resources} | {q.resource_type for q in queries_for(default_trial())}
    report = evaluate(resources, patient_id=bundle_patient_id(bundle), as_of=as_of, searched=searched)
    lines = [f"No card: {no_card_reason(report)}."]
    for result in report.criteria:
        if result.fails:
            lines.append(f"  - {result.title or result.id}: {result.reason}")
    return "\n".join(lines)


def _err(text: str) -> None:
    sys.stderr.write(f"{text}\n")


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def run_demo(patient_file: Path | None = None, *, as_of: date | None = None) -> int:
    """Start the service over real HTTP, send a patient-view for a fixture patient, print the card.

    Returns 0 when the service answered 200, 1 otherwise, 2 when the patient file is unusable.
    """
    import uvicorn

    from cds.service.app import create_app

    path: Path | Traversable = patient_file or DEFAULT_PATIENT
    try:
        bundle = load_bundle(path)
        request = build_request(bundle)
    except (OSError, ValueError) as exc:
        _err(f"demo: cannot use {path}: {exc}")
        return 2

    with tempfile.TemporaryDirectory(prefix="cds-demo-") as tmp:
        # The embedded demo: loopback only, full prefetch. Client authentication is off and FHIR
        # fetching stays off (no allowed servers), whatever the environment says.
        settings = Settings(
            database_url=f"sqlite:///{tmp}/feedback.sqlite3",
            as_of=as_of or Settings().as_of or FIXTURES_AS_OF,
            log_level="WARNING",
            auth_required=False,
            fhir_allowed_servers=[],
        )
        sock = _free_socket()
        port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), log_level="warning", lifespan="on", access_log=False)
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 60  # a loaded machine starts slowly
            while not server.started:
                if not thread.is_alive() or time.monotonic() > deadline:
                    _err("demo: the service did not start")
                    return 1
                time.sleep(0.02)
            url = f"http://127.0.0.1:{port}/cds-services/{DEMO_SERVICE}"
            _out(f"POST {url}  (as of {settings.as_of}, patient file {path.name})")
            _out(_request_summary(request))
            started = time.perf_counter()
            with httpx.Client(timeout=30, trust_env=False) as client:
                response = client.post(url, json=request)
            elapsed = (time.perf_counter() - started) * 1000
            _out(f"\nHTTP {response.status_code} in {elapsed:.0f} ms")
            if response.status_code != 200:
                _out(response.text)
                return 1
            cards = response.json().get("cards", [])
            if not cards:
                _out(why_no_card(bundle, settings.as_of or FIXTURES_AS_OF))
            for card in cards:
                _out()
                print_card(card)
            return 0
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()


def _sequential_uuids(namespace: str) -> Callable[[], str]:
    counter = itertools.count(1)
    base = uuid.uuid5(uuid.NAMESPACE_URL, namespace)
    return lambda: str(uuid.uuid5(base, str(next(counter))))


async def _example_response(request: dict[str, Any], settings: Settings) -> dict[str, Any]:
    from cds.service.app import create_app

    app = create_app(settings, new_uuid=_sequential_uuids("https://nct04582136-cds.example.org/examples"))
    app.state.cds.new_token = lambda: "example-report-token-0001"  # a fixed link in the committed example
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cds.example") as client:
            response = await client.post(f"/cds-services/{DEMO_SERVICE}", json=request)
            response.raise_for_status()
            body: dict[str, Any] = response.json()
            return body


def example_pair(patient_file: Path | Traversable = DEFAULT_PATIENT) -> tuple[dict[str, Any], dict[str, Any]]:
    """The deterministic example request and the service's response to it."""
    request = build_request(load_bundle(patient_file), hook_instance=EXAMPLE_HOOK_INSTANCE)
    with tempfile.TemporaryDirectory(prefix="cds-examples-") as tmp:
        settings = Settings(
            database_url=f"sqlite:///{tmp}/feedback.sqlite3",
            as_of=FIXTURES_AS_OF,
            log_level="WARNING",
            auth_required=False,
            fhir_allowed_servers=[],
        )
        response = asyncio.run(_example_response(request, settings))
    return request, response


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_examples(out_dir: Path = EXAMPLES_DIR, patient_file: Path | Traversable = DEFAULT_PATIENT) -> list[Path]:
    """Write ``patient-view-request.json`` and ``patient-view-response.json`` (deterministic)."""
    request, response = example_pair(patient_file)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "patient-view-request.json", out_dir / "patient-view-response.json"]
    for path, data in zip(paths, (request, response), strict=True):
        path.write_text(_dump(data), encoding="utf-8")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--write-examples"]:
        for path in write_examples():
            _out(path)
        return 0
    if len(args) > 1:
        _err("usage: python -m cds.service.demo [PATIENT.json | --write-examples]")
        return 2
    return run_demo(Path(args[0]) if args else None)


if __name__ == "__main__":
    raise SystemExit(main())


def readme_example_markdown(examples_dir: Path = EXAMPLES_DIR) -> str:
    """The README's request/card example, generated from the committed example files."""
    request = json.loads((examples_dir / "patient-view-request.json").read_text(encoding="utf-8"))
    response = json.loads((examples_dir / "patient-view-response.json").read_text(encoding="utf-8"))
    shown = {k: v for k, v in request.items() if k != "prefetch"}
    prefetch = request.get("prefetch", {})
    shown["prefetch"] = {
        "patient": prefetch.get("patient"),
        "conditions": prefetch.get("conditions"),
        "...": f"{len(prefetch) - 2} more keys: "
        + ", ".join(k for k in prefetch if k not in ("patient", "conditions")),
    }
    card = response["cards"][0]
    card_head = {k: v for k, v in card.items() if k not in ("detail", "extension", "suggestions")}
    card_head["suggestions"] = [
        {
            "label": s["label"],
            "actions": [
                {"type": a["type"], "resourceType": a["resource"]["resourceType"]} for a in s.get("actions", [])
            ],
        }
        for s in card.get("suggestions", [])
    ]
    card_head["extension"] = dict.fromkeys(
        card.get("extension", {}), "{ the full report: trial, patient, asOf, verdict, criteria[] }"
    )
    return "\n".join(
        [
            "<!-- example generated from cds/service/examples/ by readme_example_markdown(); do not edit by hand -->",
            "Request (`cds/service/examples/patient-view-request.json`, prefetch shortened here):",
            "",
            "```json",
            json.dumps(shown, indent=2, ensure_ascii=False),
            "```",
            "",
            "Response card (`cds/service/examples/patient-view-response.json`; `detail` shown rendered below):",
            "",
            "```json",
            json.dumps(card_head, indent=2, ensure_ascii=False),
            "```",
            "",
            "`detail`, as the EHR renders it:",
            "",
            "> " + card["detail"].replace("\n", "\n> "),
            "<!-- end of generated example -->",
        ]
    )
