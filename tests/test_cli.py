"""`cds screen`: JSONL / table output, many patients per file, bad files reported by name."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from cds.cli import main, screen

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "patients"
AS_OF = date(2026, 11, 1)


def _run(paths: list[Path], fmt: str = "jsonl") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = screen(paths, AS_OF, fmt, out, err)
    return code, out.getvalue(), err.getvalue()


def test_jsonl_one_report_per_patient() -> None:
    code, out, err = _run([FIXTURES / "base-candidate.json"])
    assert code == 0, err
    (line,) = out.splitlines()
    report = json.loads(line)
    assert report["trial"] == "NCT04582136"
    assert report["patient"] == "Patient/base-candidate"
    assert report["asOf"] == "2026-11-01"
    assert report["verdict"] == "likely-candidate"
    assert len(report["criteria"]) == 27
    for c in report["criteria"]:
        assert set(c) >= {"id", "kind", "status", "reason", "evidence"}
        assert c["status"] in ("met", "not_met", "unknown")


def test_bad_files_are_named_and_the_rest_still_screened(tmp_path: Path) -> None:
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("{not json", encoding="utf-8")
    not_bundle = tmp_path / "patient.json"
    not_bundle.write_text(json.dumps({"resourceType": "Patient", "id": "x"}), encoding="utf-8")
    missing = tmp_path / "missing.json"
    code, out, err = _run([bad_json, FIXTURES / "base-candidate.json", not_bundle, missing])
    assert code == 2
    assert len(out.splitlines()) == 1
    assert str(bad_json) in err
    assert "not valid JSON" in err
    assert str(not_bundle) in err
    assert "not a FHIR Bundle" in err
    assert str(missing) in err


def test_transaction_bundle_with_urn_uuid_and_two_patients(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
                "resource": {"resourceType": "Patient", "birthDate": "1990-01-01", "gender": "male"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222",
                "resource": {
                    "resourceType": "Condition",
                    "id": "c1",
                    "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"},
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "55464009"}]},
                    "onsetDateTime": "2020-01-01",
                },
                "request": {"method": "POST", "url": "Condition"},
            },
            {
                "resource": {"resourceType": "Patient", "id": "other", "birthDate": "1950-01-01"},
                "request": {"method": "PUT", "url": "Patient/other"},
            },
        ],
    }
    path = tmp_path / "tx.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    code, out, err = _run([path])
    assert code == 0, err
    reports = {r["patient"]: r for r in map(json.loads, out.splitlines())}
    first = reports["Patient/11111111-1111-4111-8111-111111111111"]
    assert next(c for c in first["criteria"] if c["id"] == "inc-sle-diagnosis")["status"] == "met"
    other = reports["Patient/other"]
    assert next(c for c in other["criteria"] if c["id"] == "inc-age")["status"] == "not_met"


def test_table_format_is_readable() -> None:
    code, out, _ = _run([FIXTURES / "base-candidate.json"], fmt="table")
    assert code == 0
    assert out.startswith(
        "Patient/base-candidate  verdict: Possible candidate: all checkable criteria met [likely-candidate]"
    )
    assert "inc-serology" in out
    assert "exc-investigator-judgment" in out


def test_console_script_screens_fixtures() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cds.cli",
            "screen",
            str(FIXTURES / "base-candidate.json"),
            "--as-of",
            "2026-11-01",
            "--format",
            "jsonl",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["verdict"] == "likely-candidate"


def test_invalid_as_of_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["screen", str(FIXTURES / "base-candidate.json"), "--as-of", "yesterday"])
    assert exc.value.code == 2
    assert "not an ISO date" in capsys.readouterr().err


# ---- real export shapes (issue 10, item 9) ---------------------------------------------------

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SLE = {"coding": [{"system": "http://snomed.info/sct", "code": "55464009"}]}


def _status(report: dict, criterion_id: str) -> str:
    return next(c["status"] for c in report["criteria"] if c["id"] == criterion_id)


def _ndjson(path: Path, resources: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in resources), encoding="utf-8")


def test_transaction_bundle_medication_reference_by_urn_uuid_is_read(tmp_path: Path) -> None:
    """Synthea-style transaction bundle: the patient and the Medication are referenced by urn:uuid."""
    pid, med = "5d1b3c1e-0000-4000-8000-000000000001", "5d1b3c1e-0000-4000-8000-000000000002"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{pid}",
                "resource": {"resourceType": "Patient", "id": pid, "birthDate": "1990-01-01", "gender": "female"},
            },
            {
                "fullUrl": f"urn:uuid:{med}",
                "resource": {
                    "resourceType": "Medication",
                    "id": med,
                    "code": {"coding": [{"system": RXNORM, "code": "360110", "display": "sirolimus 2 MG Oral Tablet"}]},
                },
            },
            {
                "fullUrl": "urn:uuid:5d1b3c1e-0000-4000-8000-000000000003",
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": "5d1b3c1e-0000-4000-8000-000000000003",
                    "status": "active",
                    "intent": "order",
                    "subject": {"reference": f"urn:uuid:{pid}"},
                    "medicationReference": {"reference": f"urn:uuid:{med}"},
                    "authoredOn": "2026-09-01",
                },
            },
        ],
    }
    path = tmp_path / "synthea-like.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    code, out, err = _run([path])
    assert code == 0, err
    (report,) = map(json.loads, out.splitlines())
    assert report["patient"] == f"Patient/{pid}"
    assert _status(report, "exc-sirolimus") == "met"


def test_screen_directory_recursively(tmp_path: Path) -> None:
    nested = tmp_path / "site" / "2026"
    nested.mkdir(parents=True)
    (nested / "base.json").write_bytes((FIXTURES / "base-candidate.json").read_bytes())
    (tmp_path / "site" / "readme.txt").write_text("ignored", encoding="utf-8")
    code, out, err = _run([tmp_path])
    assert code == 0, err
    (report,) = map(json.loads, out.splitlines())
    assert report["patient"] == "Patient/base-candidate"


def test_screen_ndjson_bulk_export_groups_patients_across_files(tmp_path: Path) -> None:
    _ndjson(
        tmp_path / "Patient.ndjson",
        [
            {"resourceType": "Patient", "id": "a", "birthDate": "1990-01-01", "gender": "female"},
            {"resourceType": "Patient", "id": "b", "birthDate": "1950-01-01", "gender": "male"},
        ],
    )
    _ndjson(
        tmp_path / "Condition.ndjson",
        [
            {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/a"}, "code": SLE},
            {"resourceType": "Condition", "id": "c2", "subject": {"reference": "Patient/b"}, "code": SLE},
        ],
    )
    code, out, err = _run([tmp_path / "Patient.ndjson", tmp_path / "Condition.ndjson"])
    assert code == 0, err
    reports = {r["patient"]: r for r in map(json.loads, out.splitlines())}
    assert set(reports) == {"Patient/a", "Patient/b"}
    assert _status(reports["Patient/a"], "inc-sle-diagnosis") == "met"
    assert _status(reports["Patient/b"], "inc-sle-diagnosis") == "met"
    assert _status(reports["Patient/b"], "inc-age") == "not_met"


def test_screen_ndjson_unreadable_condition_file_makes_conditions_unknown_not_absent(tmp_path: Path) -> None:
    """Safety: a Condition file that cannot be read must not read as "no SLE diagnosis" (not_met)."""
    _ndjson(tmp_path / "Patient.ndjson", [{"resourceType": "Patient", "id": "a", "birthDate": "1990-01-01"}])
    (tmp_path / "Condition.ndjson").write_text("{truncated\n", encoding="utf-8")
    code, out, err = _run([tmp_path])
    assert code == 2
    assert str(tmp_path / "Condition.ndjson") in err
    (report,) = map(json.loads, out.splitlines())
    assert report["incomplete"] == ["Condition"]
    assert _status(report, "inc-sle-diagnosis") == "unknown"
    assert report["verdict"] != "excluded"


def test_skipped_resource_types_one_summary_line_per_file(tmp_path: Path) -> None:
    bundle = json.loads((FIXTURES / "base-candidate.json").read_text(encoding="utf-8"))
    bundle["entry"] += [{"resource": {"resourceType": "Encounter", "id": f"e{i}"}} for i in range(40)]
    bundle["entry"] += [{"resource": {"resourceType": "Claim", "id": f"cl{i}"}} for i in range(3)]
    path = tmp_path / "with-encounters.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    code, out, err = _run([path, FIXTURES / "base-candidate.json"])
    assert code == 0, err
    assert len(out.splitlines()) == 2
    (line,) = err.splitlines()
    assert line == (f"note: {path}: skipped 43 resource(s) of types not read by this service (Encounter 40, Claim 3)")
    report = json.loads(out.splitlines()[0])
    assert report["verdict"] == "likely-candidate"
    assert "dataIssues" not in report  # skipped types are not listed per resource in the report


def test_screen_directory_bad_file_named_and_the_rest_still_screened(tmp_path: Path) -> None:
    (tmp_path / "a-broken.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "b-good.json").write_bytes((FIXTURES / "base-candidate.json").read_bytes())
    code, out, err = _run([tmp_path])
    assert code == 2
    assert str(tmp_path / "a-broken.json") in err
    (report,) = map(json.loads, out.splitlines())
    assert report["patient"] == "Patient/base-candidate"


@pytest.mark.parametrize("name", ["base-candidate", "var-hcg-missing", "var-sledai-missing", "real-synthea-like"])
def test_cli_card_and_report_page_use_the_same_verdict_words_and_counts(name: str) -> None:
    """Regression: the summary said "7 to verify" where the detail said 8, and `cds screen` said
    likely-candidate where the card said possible candidate."""
    from datetime import date

    from cards.render import render_cards
    from cds.bundles import read_bundle_file
    from cds.engine import evaluate
    from cds.service.report_page import report_html
    from cds.trials.nct04582136 import TRIAL

    code, out, _ = _run([FIXTURES / f"{name}.json"], fmt="table")
    assert code == 0
    contents = read_bundle_file(FIXTURES / f"{name}.json")
    patient = contents.patients[0]
    report = evaluate(
        patient.resources, patient_id=patient.patient_id, as_of=date(2026, 11, 1), searched=contents.searched
    )
    card = render_cards(report, TRIAL, show_excluded=True)[0]
    label = out.splitlines()[0].split("verdict: ", 1)[1].split(" [", 1)[0]
    assert f"**{label}.**" in (card.detail or "") or "not settled" in (card.detail or "")
    tail = label.split(": ", 1)[1]
    if not label.startswith("Not a candidate"):
        assert card.summary.endswith(tail)
    assert f"<strong>{label}.</strong>" in report_html(report, TRIAL)


def test_serve_help_shows_defaults_and_the_local_recipe(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "(default: 8000)" in out
    assert "(default: 127.0.0.1" in out
    assert "CDS_AUTH_REQUIRED=false cds serve" in out


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CDS_ALERT_SNOOZE_DAYS", "soon"), ("CDS_ALERT_SNOOZE_DAYS_BY_REASON", "{not json"), ("CDS_LOG_LEVEL", "LOUD")],
)
def test_a_bad_setting_is_one_line_naming_the_variable(monkeypatch, capsys, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: invalid setting {variable}:")
    assert "Traceback" not in err


def _criteria(args: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["criteria", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_criteria_check_covers_every_registered_trial_and_update_adds_a_new_trials_section(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from cds.trials.docs import SECTIONS_END, criteria_section, trial_heading
    from tests.fake_trial import FAKE_ID, register_fake_trial

    readme = tmp_path / "README.md"
    readme.write_text((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8"), encoding="utf-8")
    assert _criteria(["--check", str(readme)], capsys)[0] == 0

    trial = register_fake_trial(monkeypatch)  # a trial registered since the README was generated
    code, _, err = _criteria(["--check", str(readme)], capsys)
    assert code == 1
    assert f"no criteria section for {FAKE_ID}" in err
    assert _criteria(["--update", str(readme)], capsys)[0] == 0
    text = readme.read_text(encoding="utf-8")
    assert f"{trial_heading(trial)}\n\n{criteria_section(trial)}\n\n{SECTIONS_END}" in text
    assert _criteria(["--check", str(readme)], capsys)[0] == 0

    stale = text.replace(f"<!-- criteria:{FAKE_ID.lower()} -->\n", f"<!-- criteria:{FAKE_ID.lower()} -->\nedited\n")
    readme.write_text(stale, encoding="utf-8")
    code, _, err = _criteria(["--check", str(readme)], capsys)
    assert code == 1
    assert f"the criteria section of {FAKE_ID} is stale" in err
    assert _criteria(["--update", str(readme)], capsys)[0] == 0
    assert readme.read_text(encoding="utf-8") == text


def test_criteria_prints_the_chosen_trial_default_nct04582136(monkeypatch, capsys) -> None:
    from tests.fake_trial import FAKE_ID, register_fake_trial

    register_fake_trial(monkeypatch)
    code, out, _ = _criteria([], capsys)
    assert code == 0
    assert out.startswith("<!-- criteria table generated by `cds criteria` from NCT04582136;")
    code, out, _ = _criteria(["--trial", FAKE_ID.lower()], capsys)
    assert code == 0
    assert out.startswith(f"<!-- criteria table generated by `cds criteria` from {FAKE_ID};")


def test_screen_defaults_to_nct04582136(capsys) -> None:
    assert main(["screen", str(FIXTURES / "base-candidate.json"), "--as-of", "2026-11-01", "--format", "jsonl"]) == 0
    assert json.loads(capsys.readouterr().out)["trial"] == "NCT04582136"
