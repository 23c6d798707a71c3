"""`cds population` end to end against a fake Bulk Data server (respx), on a real local Dask cluster."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
import respx

from cds.cli import main as cli_main
from cds.cli import screen
from cds.config import Settings
from cds.population.run import PopulationOptions, export_plan, run_population, trial_for
from cds.population.store import PopulationStore
from cds.trials import REGISTERED

from .compare import compare_with_screen
from .fake_bulk import BASE, FIXTURES, FakeBulkServer, bundle_resources, ndjson_by_type

AS_OF = date(2026, 11, 1)
FILES = sorted(FIXTURES.glob("*.json"))[:12]


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """One local Dask cluster for the fault tests (`--scheduler`); the LocalCluster path is tested
    by the comparison tests."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", population_dir=str(tmp_path / "runs"))


def run(settings: Settings, **kw: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    opts = PopulationOptions(fhir_server=BASE, as_of=AS_OF, fmt="jsonl", **kw)  # type: ignore[arg-type]
    with httpx.Client() as http:
        code = run_population(opts, settings, out, err, http=http)
    return code, out.getvalue(), err.getvalue()


def screen_lines(paths: list[Path]) -> list[dict[str, object]]:
    out, err = io.StringIO(), io.StringIO()
    assert screen(paths, AS_OF, "jsonl", out, err) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def by_patient(lines: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(r["patient"]): r for r in lines}


def test_export_plan_reads_what_the_hook_reads() -> None:
    types, filters = export_plan(trial_for("NCT04582136"))
    assert types[0] == "Patient"
    assert "Observation" in types
    assert types[-1] == "Medication"
    # the hook's own Observation queries: codes in the window, codes read over the whole record (SLICC
    # tests), and the categories where a SLEDAI-2K total is recognised by its text
    assert len(filters) == 3
    assert [f.split("=", 1)[0] for f in filters] == ["Observation?code", "Observation?code", "Observation?category"]


def test_export_plan_exports_every_report_though_the_hook_also_searches_withdrawn_ones() -> None:
    """Regression: the hook's second DiagnosticReport query (`status=entered-in-error`, at any date)
    became a `_typeFilter`, which would have narrowed the bulk export to withdrawn reports only."""
    from cds.service.prefetch import queries_for

    trial = trial_for("NCT04582136")
    assert [q.key for q in queries_for(trial) if q.resource_type == "DiagnosticReport"] == [
        "diagnosticReports",
        "withdrawnReports",
    ]
    types, filters = export_plan(trial)
    assert "DiagnosticReport" in types
    assert not [f for f in filters if f.startswith("DiagnosticReport")]


def test_unknown_trial_is_refused_by_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["population", "--fhir-server", BASE, "--trial", "nct00000000"])
    assert exc.value.code == 2
    assert f"unknown trial 'nct00000000' (known: {', '.join(REGISTERED)})" in capsys.readouterr().err


@respx.mock
def test_population_gives_the_same_reports_as_screen_and_stores_them(settings: Settings) -> None:
    server = FakeBulkServer(respx.mock, ndjson_by_type(bundle_resources(FILES)))
    code, out, err = run(settings, workers=2, partitions=3)
    assert code == 0, err
    got = by_patient([json.loads(line) for line in out.splitlines()])
    expected = by_patient(screen_lines(FILES))
    explained = compare_with_screen(got, expected, FILES, export_plan(trial_for("nct04582136"))[0])
    assert len(explained) < len(expected)  # differences are the exception, each one explained
    same = [pid for pid in expected if not any(e.startswith(f"{pid} ") for e in explained)]
    assert all(got[pid] == expected[pid] for pid in same)
    sent = server.kick_off.calls.last.request.url.params
    assert sent["_type"] == ",".join(export_plan(trial_for("nct04582136"))[0])
    assert sent.get_list("_typeFilter")
    store = PopulationStore(settings.database_url)
    (stored_run,) = store.runs()
    assert stored_run["status"] == "complete"
    assert stored_run["patients"] == len(expected)
    rows = store.results(stored_run["id"])
    assert {r["patient"] for r in rows} == {p.removeprefix("Patient/") for p in expected}
    assert all(r["report"] == got[f"Patient/{r['patient']}"] for r in rows)


@respx.mock
def test_one_worker_and_two_give_the_same_output(settings: Settings, tmp_path: Path) -> None:
    FakeBulkServer(respx.mock, ndjson_by_type(bundle_resources(FILES)))
    code1, out1, _ = run(settings, workers=1)
    other = Settings(database_url=settings.database_url, population_dir=str(tmp_path / "other"))
    FakeBulkServer(respx.mock, ndjson_by_type(bundle_resources(FILES)))
    code2, out2, _ = run(other, workers=2, partitions=5)
    assert code1 == code2 == 0
    assert sorted(out1.splitlines()) == sorted(out2.splitlines())


@respx.mock
def test_server_without_export_is_one_clear_error(settings: Settings, scheduler: str) -> None:
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(200, json={"resourceType": "CapabilityStatement", "rest": [{"mode": "server"}]})
    )
    code, out, err = run(settings, scheduler=scheduler)
    assert code == 2
    assert out == ""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: the FHIR server does not support FHIR Bulk Data export: no system-level `[base]/$export` operation"
    ]


@respx.mock
def test_manifest_errors_are_reported_and_their_types_marked_incomplete(settings: Settings, scheduler: str) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "diagnostics": "Observation export failed for some resources"}],
    }
    FakeBulkServer(respx.mock, ndjson_by_type(bundle_resources(FILES[:2])), errors=[outcome])
    code, out, err = run(settings, scheduler=scheduler)
    assert code == 1
    assert "the export reported 1 error(s)" in err
    assert "Observation export failed for some resources" in err
    reports = [json.loads(line) for line in out.splitlines()]
    assert reports
    assert all(r["incomplete"] == ["Observation"] for r in reports)


@respx.mock
def test_interrupted_run_resumes_without_a_second_export_or_duplicates(settings: Settings, scheduler: str) -> None:
    files = ndjson_by_type(bundle_resources(FILES[:3]))
    server = FakeBulkServer(respx.mock, files)
    server.downloads["Observation"].mock(
        side_effect=[httpx.Response(503), httpx.Response(200, content=files["Observation"])]
    )
    code, out, err = run(settings, scheduler=scheduler)
    assert code == 2
    assert "could not be downloaded" in err
    store = PopulationStore(settings.database_url)
    store.create_tables()
    assert store.runs() == []  # nothing half-written

    code, out, err = run(settings, scheduler=scheduler)
    assert code == 0, err
    assert "resuming run" in err
    assert server.kick_off.call_count == 1
    assert server.downloads["Patient"].call_count == 1  # complete files are not fetched again
    (stored,) = store.runs()
    assert stored["patients"] == len(out.splitlines()) == 3

    # the same command once more is a new run (the previous one is finished), not a resumption
    server.status.side_effect = None
    server.status.return_value = httpx.Response(
        200, json={"transactionTime": "t", "request": "r", "output": [], "error": []}
    )
    code, out, err = run(settings, scheduler=scheduler)
    assert code == 0
    assert "resuming" not in err
    assert server.kick_off.call_count == 2


@respx.mock
def test_restart_discards_the_unfinished_run(settings: Settings, scheduler: str) -> None:
    server = FakeBulkServer(respx.mock, ndjson_by_type(bundle_resources(FILES[:1])))
    server.status.side_effect = [httpx.Response(500)]
    code, _, _ = run(settings, scheduler=scheduler)
    assert code == 2
    server.status.side_effect = [httpx.Response(202, headers={"Retry-After": "0"}), server_manifest(server)]
    code, _, err = run(settings, restart=True, scheduler=scheduler)
    assert code == 0, err
    assert "discarding unfinished run" in err
    assert server.kick_off.call_count == 2


def server_manifest(server: FakeBulkServer) -> httpx.Response:
    output = [{"type": t, "url": f"{BASE}/Binary/{t}"} for t in sorted(server.files)]
    return httpx.Response(200, json={"transactionTime": "t", "request": "r", "output": output, "error": []})


@respx.mock
def test_since_screens_the_whole_record_of_each_changed_patient(settings: Settings, scheduler: str) -> None:
    """`_since` exports only what changed; screening that alone would judge partial records. The
    changed patients' full records come from a second, Patient-level export."""
    changed, unchanged = FILES[0], FILES[1]
    full = ndjson_by_type(bundle_resources([changed]))
    respx.get(f"{BASE}/metadata").mock(
        return_value=httpx.Response(
            200,
            json={
                "resourceType": "CapabilityStatement",
                "rest": [
                    {
                        "mode": "server",
                        "operation": [{"name": "export"}],
                        "resource": [{"type": "Patient", "operation": [{"name": "export"}]}],
                    }
                ],
            },
        )
    )
    since_status, full_status = f"{BASE}/status/since", f"{BASE}/status/full"
    since_kick = respx.get(f"{BASE}/$export").mock(
        return_value=httpx.Response(202, headers={"Content-Location": since_status})
    )
    full_kick = respx.post(f"{BASE}/Patient/$export").mock(
        return_value=httpx.Response(202, headers={"Content-Location": full_status})
    )
    one_condition = next(r for r in bundle_resources([changed]) if r["resourceType"] == "Condition")
    respx.get(f"{BASE}/Binary/since").mock(return_value=httpx.Response(200, content=json.dumps(one_condition).encode()))
    respx.get(since_status).mock(
        return_value=httpx.Response(
            200,
            json={
                "transactionTime": "t",
                "request": "r",
                "output": [{"type": "Condition", "url": f"{BASE}/Binary/since"}],
            },
        )
    )
    respx.get(full_status).mock(
        return_value=httpx.Response(
            200,
            json={
                "transactionTime": "t",
                "request": "r",
                "output": [{"type": t, "url": f"{BASE}/Binary/full-{t}"} for t in full],
            },
        )
    )
    for t, body in full.items():
        respx.get(f"{BASE}/Binary/full-{t}").mock(return_value=httpx.Response(200, content=body))
    respx.get(f"{BASE}/Medication").mock(
        return_value=httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset"})
    )

    code, out, err = run(settings, since="2026-10-01", scheduler=scheduler)
    assert code == 0, err
    assert since_kick.calls.last.request.url.params["_since"] == "2026-10-01"
    body = json.loads(full_kick.calls.last.request.content)
    patient_id = one_condition["subject"]["reference"].removeprefix("Patient/")
    assert [p["valueReference"]["reference"] for p in body["parameter"] if p["name"] == "patient"] == [
        f"Patient/{patient_id}"
    ]
    (report,) = [json.loads(line) for line in out.splitlines()]
    assert report["patient"] == f"Patient/{patient_id}"
    assert f"Patient/{patient_id}" not in by_patient(screen_lines([unchanged]))
    (expected,) = screen_lines([changed])
    assert report["verdict"] == expected["verdict"]


def test_population_trial_comes_from_the_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cds.population.screening import ScreenJob, screen_partition
    from cds.trials import UnknownTrial
    from tests.fake_trial import FAKE_ID, register_fake_trial

    with pytest.raises(UnknownTrial):
        trial_for("NCT99999999")
    trial = register_fake_trial(monkeypatch)
    assert trial_for(FAKE_ID.lower()) is trial
    assert export_plan(trial) == export_plan(trial_for("NCT04582136"))  # same criteria, same reads

    bundle = json.loads((FIXTURES / "base-candidate.json").read_text(encoding="utf-8"))
    part = tmp_path / "part-0000.ndjson"
    part.write_text("".join(json.dumps(e["resource"]) + "\n" for e in bundle["entry"]), encoding="utf-8")
    job = ScreenJob(
        as_of=date(2026, 11, 1),
        searched=frozenset(export_plan(trial)[0]),
        incomplete=(),
        medications_file=str(tmp_path / "none.ndjson"),
        trial=FAKE_ID.lower(),
    )
    (line,) = screen_partition(0, str(part), job).lines
    assert json.loads(line)["trial"] == FAKE_ID  # the run's trial, not the default one
