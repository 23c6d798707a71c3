"""The committed Synthea corpus (fixtures/synthea/) screened as `cds screen` reads it.

CI does not run Synthea; it screens its committed output: no crash, nothing of Synthea's own output
reported as not valid FHIR, every resource type read or skipped in one line per file, every criterion
three-valued with a reason (and evidence when met / not met).
"""

from __future__ import annotations

import importlib.util
import io
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cds.bundles import BundleContents, read_inputs
from cds.cli import screen
from cds.engine.record import AUX_TYPES, READ_TYPES

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "synthea"
LUPUS, CONTROLS = CORPUS / "lupus", CORPUS / "controls"
MAX_CORPUS_BYTES = 15 * 1024 * 1024


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("synthea_generate", CORPUS / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _load_generator()
AS_OF = GENERATOR.AS_OF_DATE  # Synthea's reference date (-r)


def _files() -> list[Path]:
    return sorted(p for d in (LUPUS, CONTROLS) for p in d.iterdir() if p.suffix in (".json", ".ndjson"))


def _resources_in(path: Path) -> Iterator[dict[str, Any]]:
    if path.suffix == ".ndjson":
        for line in path.read_text(encoding="utf-8").splitlines():
            yield json.loads(line)
        return
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("resourceType") == "Bundle":
        yield from (e["resource"] for e in data["entry"])
    else:
        yield data


@pytest.fixture(scope="module")
def screened() -> tuple[int, list[dict[str, Any]], str]:
    out, err = io.StringIO(), io.StringIO()
    code = screen([LUPUS, CONTROLS], AS_OF, "jsonl", out, err)
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


def test_synthea_corpus_is_small_and_complete() -> None:
    files = _files()
    assert sum(f.stat().st_size for f in files) < MAX_CORPUS_BYTES
    assert len(list(LUPUS.glob("*.json"))) == GENERATOR.LUPUS_PATIENTS
    assert (CONTROLS / "Patient.ndjson").is_file()


def test_synthea_corpus_screens_without_crash_or_invalid_fhir(screened) -> None:
    code, reports, err = screened
    assert code == 0, err
    assert "error" not in err
    assert len(reports) == GENERATOR.LUPUS_PATIENTS + GENERATOR.CONTROL_PATIENTS
    problems = [d["problem"] for r in reports for d in r.get("dataIssues", [])]
    assert not [p for p in problems if "not valid FHIR" in p], problems


def test_synthea_every_criterion_three_valued_with_reason_and_evidence(screened) -> None:
    _, reports, _ = screened
    for report in reports:
        assert report["asOf"] == AS_OF.isoformat()
        assert report["verdict"] in ("excluded", "possible-candidate", "likely-candidate")
        for c in report["criteria"]:
            assert c["status"] in ("met", "not_met", "unknown"), c
            assert c["reason"], c
            if c["status"] != "unknown":
                assert c["evidence"], (report["patient"], c)


def test_synthea_every_resource_type_read_or_skipped_in_one_line_per_file(screened) -> None:
    _, _, err = screened
    notes = [line for line in err.splitlines() if line.startswith("note: ")]
    assert len(notes) == len(err.splitlines()), err  # nothing but the per-file summaries
    for path in _files():
        types = Counter(r["resourceType"] for r in _resources_in(path))
        unread = {t: n for t, n in types.items() if t not in READ_TYPES and t not in AUX_TYPES}
        lines = [line for line in notes if line.startswith(f"note: {path}: ")]
        if not unread:
            assert lines == []
            continue
        (line,) = lines
        assert f"skipped {sum(unread.values())} resource(s)" in line
        for t, n in unread.items():
            assert f"{t} {n}" in line


def test_synthea_transaction_bundles_resolve_urn_uuid_patient_references() -> None:
    for path in sorted(LUPUS.glob("*.json")):
        raw = json.loads(path.read_text(encoding="utf-8"))
        assert raw["type"] == "transaction"
        subjects = {
            e["resource"]["subject"]["reference"] for e in raw["entry"] if e["resource"]["resourceType"] == "Condition"
        }
        assert all(s.startswith("urn:uuid:") for s in subjects)  # the shape under test
        (contents,) = list(read_inputs([path]))
        assert isinstance(contents, BundleContents)
        assert contents.unassigned == 0
        (patient,) = contents.patients
        conditions = [r for r in patient.resources if r["resourceType"] == "Condition"]
        assert conditions
        assert {c["subject"]["reference"] for c in conditions} == {f"Patient/{patient.patient_id}"}


def test_synthea_ndjson_export_groups_patients_across_files() -> None:
    results = list(read_inputs([CONTROLS]))
    assert all(isinstance(r, BundleContents) for r in results)
    # parameters.json (Synthea's Parameters manifest: skipped, no patients), then the NDJSON export
    (contents,) = [r for r in results if isinstance(r, BundleContents) and r.patients]
    assert len(contents.patients) == GENERATOR.CONTROL_PATIENTS
    assert contents.unassigned == 0
    for p in contents.patients:
        assert {r["resourceType"] for r in p.resources} >= {"Patient", "Condition", "Observation"}


def test_synthea_ndjson_export_screens_like_the_same_resources_in_one_bundle(screened, tmp_path: Path) -> None:
    """The two input shapes carry the same data, so they give the same reports."""
    _, reports, _ = screened
    entries = [{"resource": r} for f in sorted(CONTROLS.glob("*.ndjson")) for r in _resources_in(f)]
    bundle = tmp_path / "controls.json"
    bundle.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    assert screen([bundle], AS_OF, "jsonl", out, err) == 0, err.getvalue()
    as_bundle = sorted(out.getvalue().splitlines())
    control_ids = {f"Patient/{r['id']}" for r in _resources_in(CONTROLS / "Patient.ndjson")}
    as_ndjson = sorted(
        json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in reports if r["patient"] in control_ids
    )
    assert as_bundle == as_ndjson


def test_synthea_generic_lupus_code_keeps_sle_diagnosis_unknown(screened) -> None:
    """Synthea's lupus module writes only SNOMED 200936003 "Lupus erythematosus" (generic)."""
    _, reports, _ = screened
    lupus_ids = {f"Patient/{p.name.rsplit('_', 1)[-1].removesuffix('.json')}" for p in LUPUS.glob("*.json")}
    for report in reports:
        if report["patient"] in lupus_ids:
            sle = next(c for c in report["criteria"] if c["id"] == "inc-sle-diagnosis")
            assert sle["status"] == "unknown", sle


def test_synthea_readme_summary_is_current() -> None:
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    assert GENERATOR.summary_markdown() in readme, (
        "fixtures/synthea/README.md summary is stale: run `python fixtures/synthea/generate.py --summary`"
    )


def test_synthea_derived_lupus_module_changes_only_incidence() -> None:
    jar = Path.home() / ".m2/repository/org/mitre/synthea/synthea/3.3.0/synthea-3.3.0.jar"
    if not jar.is_file():
        pytest.skip("Synthea 3.3.0 jar not in ~/.m2 (run fixtures/synthea/generate.py once)")
    import zipfile

    with zipfile.ZipFile(jar) as zf:
        stock = json.loads(zf.read("modules/lupus.json"))
    derived = GENERATOR.derived_lupus_module(jar)
    changed = {k for k in stock["states"] if stock["states"][k] != derived["states"][k]}
    assert changed == {"Initial", "Delay_Until_Lupus"}
    assert {k: v for k, v in stock.items() if k != "states"} == {k: v for k, v in derived.items() if k != "states"}


def test_synthea_medication_references_resolve_in_both_shapes() -> None:
    """Synthea refers some orders to a Medication resource: by urn:uuid in its transaction bundles,
    by `Medication/<id>` in its Bulk Data export. Each patient gets the Medication it refers to."""
    checked = 0
    for contents in read_inputs([LUPUS, CONTROLS]):
        assert isinstance(contents, BundleContents)
        for p in contents.patients:
            meds = {f"Medication/{r['id']}" for r in p.resources if r["resourceType"] == "Medication"}
            refs = {
                r["medicationReference"]["reference"]
                for r in p.resources
                if isinstance(r.get("medicationReference"), dict)
            }
            assert refs <= meds, (p.patient_id, refs - meds)
            checked += len(refs)
    assert checked > 0  # the corpus has the shape
