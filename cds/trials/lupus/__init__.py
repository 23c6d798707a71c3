"""Lupus, shared by the lupus trials: the rules no generic engine should know.

* `cds.trials.lupus.sledai`: SLEDAI-2K: `ClinicalSledai` (a recorded total), `DerivedClinicalSledai`
  (recorded total, else the lab-derived lower bound), `SledaiData`, `sledai_items`, `points`;
* `cds.trials.lupus.slicc`: SLICC 2012 computed from the chart: `SliccData`, `SliccDiagnosis`,
  `slicc_items`, `classify`;
* `cds.trials.lupus.rules`: `Serology` (anti-dsDNA or C3) and `RenalSeverity` (severe nephritis);
* `REVIEW_ONLY`, `NOT_SUFFICIENT_ONLY`: how a lupus trial words a `CodedDiagnosis` (its
  `review_only` / `not_sufficient_only`) when only non-specific or only cutaneous lupus is coded.

Each module registers what its rules read (`cds.engine.reads`), so a trial using them derives its
Observation look-back, prefetch templates and queries as for the engine's own rules. Windows,
thresholds and value sets are constructor parameters set by the trial definition. A trial's own
codes for the SLICC and SLEDAI items are data (e.g. `cds.trials.nct04582136.sle_items`).
"""

from __future__ import annotations

from cds.trials.lupus.rules import RenalSeverity, Serology
from cds.trials.lupus.sledai import ClinicalSledai, DerivedClinicalSledai, SledaiData, points, sledai_items
from cds.trials.lupus.slicc import SliccData, SliccDiagnosis, classify, slicc_items

# `CodedDiagnosis(review_only=..., not_sufficient_only=...)`: the reasons shown when only
# non-specific (generic or drug-induced) lupus, or only cutaneous lupus, is coded.
REVIEW_ONLY = "only a non-specific or secondary lupus code"
NOT_SUFFICIENT_ONLY = "only cutaneous or other non-systemic lupus coded"

__all__ = [
    "NOT_SUFFICIENT_ONLY",
    "REVIEW_ONLY",
    "ClinicalSledai",
    "DerivedClinicalSledai",
    "RenalSeverity",
    "Serology",
    "SledaiData",
    "SliccData",
    "SliccDiagnosis",
    "classify",
    "points",
    "sledai_items",
    "slicc_items",
]
