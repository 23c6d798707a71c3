"""Code systems and fixed codings of this service (a namespace the project controls)."""

from __future__ import annotations

from cards.models import Coding
from cds.trials import service_id

#: Base of the project's own code systems. ``example.org`` is reserved for documentation: replace it
#: with a domain the deploying site controls before production (the codes stay the same).
SYSTEM_BASE = "https://nct04582136-cds.example.org/fhir/CodeSystem"

OVERRIDE_REASON_SYSTEM = f"{SYSTEM_BASE}/override-reason"
CARD_TOPIC_SYSTEM = f"{SYSTEM_BASE}/card-topic"
REFERRAL_SYSTEM = f"{SYSTEM_BASE}/referral"
PRESCREEN_RESULT_SYSTEM = f"{SYSTEM_BASE}/prescreen-result"

#: Key of the engine report inside a card's ``extension`` (reverse-DNS, per the spec).
REPORT_EXTENSION_KEY = "org.nct04582136-cds.report"


def card_topic(trial_id: str) -> Coding:
    """Static topic of one trial's cards (its service id as the code): the same for every card of that
    service, so an EHR that keys dismissals on ``source.topic`` (Epic) can make "do not show again"
    stick, per trial."""
    return Coding(system=CARD_TOPIC_SYSTEM, code=service_id(trial_id), display=f"{trial_id} prescreen")


OVERRIDE_REASONS: tuple[Coding, ...] = (
    Coding(system=OVERRIDE_REASON_SYSTEM, code="already-screened", display="Already screened for this study"),
    Coding(system=OVERRIDE_REASON_SYSTEM, code="patient-declined", display="Patient declined"),
    Coding(system=OVERRIDE_REASON_SYSTEM, code="not-a-candidate", display="Not a candidate (clinical judgment)"),
    Coding(system=OVERRIDE_REASON_SYSTEM, code="will-refer", display="Will refer later"),
)

OVERRIDE_REASON_DISPLAY = {c.code: c.display for c in OVERRIDE_REASONS}
