"""The eligibility engine: pure functions from FHIR resources and an as-of date to a Report.

    from cds.engine import evaluate
    report = evaluate(resources, patient_id="abc", as_of=date(2026, 11, 1))

No I/O and no clock. See `cds.trials.nct04582136` for the trial as data.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import date
from typing import Any

from cds.engine.model import CriterionResult, Evidence, Kind, Report, Status, Verdict
from cds.engine.trial import Trial

__all__ = ["CriterionResult", "Evidence", "Kind", "Report", "Status", "Verdict", "evaluate"]


def evaluate(
    resources: Iterable[Mapping[str, Any]],
    *,
    patient_id: str,
    as_of: date,
    searched: Collection[str] | None = None,
    incomplete: Collection[str] = (),
    trial: Trial | None = None,
) -> Report:
    """Evaluate every criterion of `trial` (default NCT04582136) for one patient.

    resources: the patient's raw FHIR R4 JSON resources; validated here (fhir.resources.R4B).
    searched: resource types whose data was obtained (even if empty); default: the types present.
    incomplete: types that could not be read; criteria needing them become unknown and the report
    lists them under "incomplete".
    """
    if trial is None:
        from cds.trials.nct04582136 import TRIAL

        trial = TRIAL
    return trial.evaluate(resources, patient_id=patient_id, as_of=as_of, searched=searched, incomplete=incomplete)
