"""The fixture builder (fixtures/build.py) and the files it committed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from fhir.resources.R4B import get_fhir_model_class

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
PATIENT_FILES = sorted((FIXTURES / "patients").glob("*.json"))


def _load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fixtures_build", FIXTURES / "build.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


build = _load_builder()


def _tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and (path.suffix in {".json", ".md"})
    }


def test_build_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    build.build(first)
    build.build(second)
    a, b = _tree(first), _tree(second)
    assert a == b
    assert "expected.json" in a
    assert "README.md" in a
    assert len([k for k in a if k.startswith("patients/")]) == len(PATIENT_FILES)


def test_committed_files_equal_a_fresh_build(tmp_path: Path) -> None:
    build.build(tmp_path)
    fresh = _tree(tmp_path)
    committed = {rel: (FIXTURES / rel).read_bytes() for rel in fresh if (FIXTURES / rel).exists()}
    assert set(fresh) == set(committed), "run `python fixtures/build.py`"
    assert {f"patients/{p.name}" for p in PATIENT_FILES} == {k for k in fresh if k.startswith("patients/")}
    for rel, content in fresh.items():
        assert committed[rel] == content, f"{rel} is stale: run `python fixtures/build.py`"


def test_output_format() -> None:
    for path in [*PATIENT_FILES, FIXTURES / "expected.json"]:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", path.name


@pytest.mark.parametrize("path", PATIENT_FILES, ids=lambda p: p.stem)
def test_every_resource_validates_with_r4b(path: Path) -> None:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "collection"
    for entry in bundle["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    get_fhir_model_class("Bundle").model_validate(bundle)


@pytest.mark.parametrize("path", PATIENT_FILES, ids=lambda p: p.stem)
def test_every_patient_file_has_exactly_one_patient(path: Path) -> None:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    patients = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert len(patients) == 1
    assert patients[0]["id"] == path.stem


def test_ids_references_and_full_urls() -> None:
    seen: set[str] = set()
    for path in PATIENT_FILES:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        assert build.check_bundle(path.stem, bundle, seen) == []


def test_expected_json() -> None:
    expected = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
    assert set(expected) == {p.stem for p in PATIENT_FILES}
    assert len(build.CRITERIA) == 27
    for pid, entry in expected.items():
        assert entry["verdict"] in {"excluded", "likely-candidate", "possible-candidate"}, pid
        assert entry["criteria"], pid
        for criterion, status in entry["criteria"].items():
            assert criterion in build.CRITERIA, (pid, criterion)
            assert status in {"met", "not_met", "unknown"}, (pid, criterion)
        assert entry["criteria"].get("exc-investigator-judgment", "unknown") == "unknown"
        assert entry["about"]
        assert "\n" not in entry["about"]
    base = expected["base-candidate"]
    assert base["verdict"] == "likely-candidate"
    assert set(base["criteria"]) == set(build.CRITERIA)
    assert build.check_expected(expected, set(expected)) == []


def test_every_criterion_is_exercised_on_an_unfavourable_side() -> None:
    expected = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
    unfavourable = {c for e in expected.values() for c, s in e["criteria"].items() if not build.is_favourable(c, s)}
    assert set(build.CRITERIA) <= unfavourable


def test_some_patient_needs_paging() -> None:
    counts = []
    for path in PATIENT_FILES:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        counts.append(sum(e["resource"]["resourceType"] == "Observation" for e in bundle["entry"]))
    assert max(counts) > 300


def test_builder_self_test_passes() -> None:
    assert build.self_test(FIXTURES, validate=False) == []
