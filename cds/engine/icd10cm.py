"""ICD-10-CM value sets expanded from the maintained tabular list, not hand lists.

The source is the PyPI package `simple-icd-10-cm` (the CMS/NCHS ICD-10-CM tabular list and its
hierarchy, one release per package version). A value set names ICD-10-CM *items*:

* a code: itself and every code under it (``"Z90.81"``; ``"J45"`` = J45 and J45.20 ... J45.998);
* a range of categories: every category between the two ends in tabular (string) order, with
  their subcodes (``"O00-O9A"`` = the whole pregnancy chapter, ``"C00-C96"``);
* a code filtered by description: the codes under it whose description matches a pattern
  (``"C44~basal cell carcinoma"`` = the basal cell carcinomas of skin).

Every item is checked against the tabular list (`expand` raises `ValueError` for an item that is
not a valid code, range or filter). Loading the tabular list takes seconds, so the engine does not
do it at run time: a trial's expansions are written once to a committed JSON file by a generator
(`cds.trials.terminology`), loaded at import with `load_expansions` (milliseconds), and a test
checks that the file equals a fresh expansion from the installed package.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ICD10CM_SYSTEM = "http://hl7.org/fhir/sid/icd-10-cm"


class StaleExpansion(RuntimeError):
    """The committed expansion file does not match the value sets declared in code."""


def _cm() -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import simple_icd_10_cm as cm  # type: ignore[import-untyped]  # slow: parses the tabular list
    return cm


def release() -> str:
    """The tabular list release the installed package carries (its data file name)."""
    cm = _cm()
    name: str = cm.simple_icd_10_cm._classification_data_package_file_name
    return name.removesuffix(".xml")


@functools.cache
def _categories() -> tuple[str, ...]:
    cm = _cm()
    return tuple(c for c in cm.get_all_codes(True) if cm.is_category(c))


def _with_descendants(code: str) -> list[str]:
    cm = _cm()
    return [code, *cm.get_descendants(code)]


def _is_code(item: str) -> bool:
    """A code (category, subcategory, 7th-character code), not a chapter ("15") or a block range
    ("O00-O08"). A one-category block shares its name with its category ("B20", "C50"): a code."""
    return "-" not in item and not item.isdigit()


def _codes_only(items: Iterable[str]) -> list[str]:
    """Drop chapters and blocks: only codes are ever written in `Coding.code`."""
    return [c for c in items if _is_code(c)]


def expand_item(item: str) -> list[str]:
    """The ICD-10-CM codes (dotted, as FHIR writes them) an item stands for; ValueError if invalid."""
    cm = _cm()
    if "~" in item:
        code, pattern = item.split("~", 1)
        if not cm.is_valid_item(code):
            raise ValueError(f"not an ICD-10-CM code: {code!r}")
        rx = re.compile(pattern, re.IGNORECASE)
        hits = [c for c in _codes_only(_with_descendants(code)) if rx.search(cm.get_description(c))]
        if not hits:
            raise ValueError(f"no ICD-10-CM code under {code} is described by {pattern!r}")
        return hits
    if "-" in item:
        first, last = item.split("-", 1)
        for end in (first, last):
            if not (cm.is_valid_item(end) and cm.is_category(end)):
                raise ValueError(f"not an ICD-10-CM category: {end!r} (in {item!r})")
        if first[0] != last[0] or first > last:
            raise ValueError(f"not an ICD-10-CM category range: {item!r}")
        out: list[str] = []
        for category in _categories():
            if first <= category <= last:
                out.extend(_codes_only(_with_descendants(category)))
        return out
    if not cm.is_valid_item(item) or not _is_code(item):
        raise ValueError(f"not an ICD-10-CM code: {item!r}")
    return _codes_only(_with_descendants(item))


def expand(items: Iterable[str]) -> list[str]:
    """The sorted, de-duplicated codes of all items."""
    codes: set[str] = set()
    for item in items:
        codes.update(expand_item(item))
    return sorted(codes)


def is_valid_code(code: str) -> bool:
    """True when `code` is an ICD-10-CM code (not a chapter or block) in the installed release."""
    cm = _cm()
    return bool(cm.is_valid_item(code)) and _is_code(code)


def expansions(value_sets: Mapping[str, Iterable[str]]) -> dict[str, Any]:
    """The JSON document a generator writes: release, and per value set its items and codes."""
    return {
        "source": "PyPI simple-icd-10-cm",
        "release": release(),
        "value_sets": {
            name: {"items": list(items), "codes": expand(items)} for name, items in sorted(value_sets.items())
        },
    }


def dumps(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=1, sort_keys=True) + "\n"


def load_expansions(path: Path, declared: Mapping[str, Iterable[str]]) -> dict[str, frozenset[str]]:
    """The codes of each declared value set, from the committed file; `StaleExpansion` if the file
    was generated for other items (regenerate it)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    sets = document.get("value_sets", {})
    wanted = {name: list(items) for name, items in declared.items()}
    written = {name: entry.get("items") for name, entry in sets.items()}
    if written != wanted:
        raise StaleExpansion(f"{path.name} does not match the declared ICD-10-CM value sets: regenerate it")
    return {name: frozenset(entry["codes"]) for name, entry in sets.items()}
