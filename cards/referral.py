"""The resource created when a clinician accepts the "refer to the study team" suggestion.

Choice: a FHIR R4 **ServiceRequest** referral, not a ResearchSubject.

* What the suggestion means is a clinical act: "send this patient to the study team for a
  screening visit". That is a referral, and referrals are ServiceRequests (category SNOMED CT
  3457005 "Patient referral"). EHRs route draft ServiceRequests into the clinician's pending orders
  to sign and on to a work queue; Epic and Oracle Health accept ServiceRequest suggestions.
* R4 ResearchSubject (maturity 1, trial use) needs ``study`` (a ResearchStudy that rarely exists on
  the EHR's FHIR server) and ``individual``, and few EHRs accept creating one from a card. Its
  status value set (http://hl7.org/fhir/research-subject-status, 4.0.1) does have ``candidate``
  ("an identified person that can be considered for inclusion") and, contrary to a common belief,
  also ``potential-candidate`` (the R4→R4B cross-version value set lists it among the 4.0.1
  concepts); either would describe the prescreen result well, but recording study status is the
  study team's job after they screen, not the ordering clinician's.

Field choices:

* ``status = draft``: the EHR shows it as a pending order for the clinician to review and sign; the
  service never creates an active order by itself.
* ``intent = order``: once the clinician accepts and signs, it is their referral order (``proposal``
  would mark it as a suggestion from a non-authorising party, which the card already is).
* ``subject`` = the patient of the hook; ``code`` = our referral code; ``reasonCode`` = the prescreen
  result (a code of ours; no diagnosis is asserted, since the SLE code may itself be unverified);
  ``note`` = what the prescreen found and what the study team must verify (criterion names only, no
  values or PHI beyond the subject reference).
"""

from __future__ import annotations

from typing import Any

from cards.codes import PRESCREEN_RESULT_SYSTEM, REFERRAL_SYSTEM
from cards.trial import TrialLike
from cds.engine.model import Report, Status, Verdict

SNOMED = "http://snomed.info/sct"
PATIENT_REFERRAL = {"system": SNOMED, "code": "3457005", "display": "Patient referral"}

VERDICT_DISPLAY = {
    Verdict.LIKELY_CANDIDATE: "Possible candidate, all checkable criteria met (prescreen)",
    Verdict.POSSIBLE_CANDIDATE: "Possible candidate, criteria to verify (prescreen)",
    Verdict.EXCLUDED: "Not a candidate (prescreen)",
}


def criterion_name(title: str, criterion_id: str) -> str:
    return f"{criterion_id} {title}".strip() if title else criterion_id


def referral_service_request(report: Report, trial: TrialLike) -> dict[str, Any]:
    """A draft R4 ServiceRequest referring the report's patient to the trial's study team."""
    verdict = report.verdict
    to_verify = [criterion_name(c.title, c.id) for c in report.criteria if c.status is Status.UNKNOWN]
    note = (
        f"Automated prescreen for clinical trial {trial.id} as of {report.as_of.isoformat()}: "
        f"{VERDICT_DISPLAY[verdict].lower()}. Not an eligibility decision; the study team confirms."
    )
    if to_verify:
        note += " To verify: " + "; ".join(to_verify) + "."
    if report.incomplete:
        note += " Data that could not be read: " + ", ".join(report.incomplete) + "."
    return {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "category": [{"coding": [PATIENT_REFERRAL], "text": "Referral"}],
        "code": {
            "coding": [
                {
                    "system": REFERRAL_SYSTEM,
                    "code": "refer-to-study-team",
                    "display": f"Referral to the {trial.id} study team",
                }
            ],
            "text": f"Referral to the study team of clinical trial {trial.id}",
        },
        "subject": {"reference": report.patient},
        "reasonCode": [
            {
                "coding": [
                    {
                        "system": PRESCREEN_RESULT_SYSTEM,
                        "code": verdict.value,
                        "display": VERDICT_DISPLAY[verdict],
                    }
                ],
                "text": f"Prescreen for clinical trial {trial.id}",
            }
        ],
        "performerType": {"text": f"Study team of clinical trial {trial.id}"},
        "note": [{"text": note}],
    }
