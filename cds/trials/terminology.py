"""ICD-10-CM value sets of every registered trial, expanded from the maintained tabular list.

Each trial folder declares its ICD-10-CM items in ``terminology.py`` (see `cds.engine.icd10cm` for
the item syntax) as an `Icd10cmValueSets`; the expansion to codes is done once by the PyPI package
`simple-icd-10-cm` and committed as ``icd10cm.json`` next to it, which the trial reads at import::

    python -m cds.trials.terminology          # regenerate every trial's expansion
    python -m cds.trials.terminology --check  # exit 1 if a committed expansion is stale

`tests/trials/test_terminology.py` checks each file against a fresh expansion and every item
against the package, so a code that is not in ICD-10-CM (or a stale file) fails CI.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cds.engine import icd10cm


@dataclass(frozen=True)
class Icd10cmValueSets:
    """One trial's ICD-10-CM value sets: the declared items and the committed expansion file."""

    items: Mapping[str, tuple[str, ...]]
    expansion_file: Path

    @functools.cached_property
    def _loaded(self) -> dict[str, frozenset[str]]:
        return icd10cm.load_expansions(self.expansion_file, dict(self.items))

    def codes(self, name: str) -> frozenset[str]:
        """The ICD-10-CM codes of one declared value set (from the committed expansion)."""
        return self._loaded[name]

    def release(self) -> str:
        """The ICD-10-CM release the committed expansion was made from."""
        return str(json.loads(self.expansion_file.read_text(encoding="utf-8"))["release"])

    def fresh_text(self) -> str:
        return icd10cm.dumps(icd10cm.expansions(dict(self.items)))

    def is_current(self) -> bool:
        current = self.expansion_file.read_text(encoding="utf-8") if self.expansion_file.exists() else ""
        return current == self.fresh_text()

    def write(self) -> None:
        self.expansion_file.write_text(self.fresh_text(), encoding="utf-8")


def value_sets_of(trial_id: str) -> Icd10cmValueSets | None:
    """A registered trial's ICD-10-CM value sets (None: the trial declares none)."""
    from cds.trials import normalize

    try:
        module = importlib.import_module(f"cds.trials.{normalize(trial_id)}.terminology")
    except ModuleNotFoundError:
        return None
    sets: Icd10cmValueSets = module.VALUE_SETS
    return sets


def all_value_sets() -> dict[str, Icd10cmValueSets]:
    from cds.trials import REGISTERED

    return {t: vs for t in REGISTERED if (vs := value_sets_of(t)) is not None}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    status = 0
    for trial_id, sets in all_value_sets().items():
        if "--check" in args:
            if not sets.is_current():
                sys.stderr.write(
                    f"{trial_id}: {sets.expansion_file.name} is stale: run python -m cds.trials.terminology\n"
                )
                status = 1
        else:
            sets.write()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
