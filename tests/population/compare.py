"""Comparing `cds population` reports with `cds screen` reports of the same fixture files.

The two must agree on every verdict and every criterion status, with one documented exception:
`cds screen` counts a resource type as searched only if the file holds at least one resource of it,
while a Bulk export searched every exported type for every patient. A criterion that `cds screen`
leaves `unknown` because the file holds no resource of a type may therefore be decided by the
population run, and only when that file indeed lacks one of the exported types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cds.bundles import read_bundle_file


def compare_with_screen(
    population: Mapping[str, Mapping[str, Any]],
    screened: Mapping[str, Mapping[str, Any]],
    files: Iterable[Path],
    exported_types: Iterable[str],
) -> list[str]:
    """Assert agreement; return the explained differences ("patient criterion screen->population")."""
    exported = set(exported_types)
    lacking: dict[str, set[str]] = {}
    for path in files:
        contents = read_bundle_file(path)
        for p in contents.patients:
            lacking[f"Patient/{p.patient_id}"] = exported - contents.searched
    assert population.keys() == screened.keys()
    explained: list[str] = []
    for pid, expected in screened.items():
        got = population[pid]
        assert got.keys() == expected.keys(), pid
        assert got["verdict"] == expected["verdict"], pid
        assert [c["id"] for c in got["criteria"]] == [c["id"] for c in expected["criteria"]], pid
        for g, e in zip(got["criteria"], expected["criteria"], strict=True):
            if g["status"] == e["status"]:
                continue
            assert e["status"] == "unknown", f"{pid} {e['id']}: {e['status']} != {g['status']}"
            assert lacking[pid], f"{pid} {e['id']}: differs although the file holds every exported type"
            explained.append(f"{pid} {e['id']} {e['status']}->{g['status']} (file has no {sorted(lacking[pid])})")
    return explained
