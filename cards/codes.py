"""Code systems and fixed codings of this service (a namespace the project controls)."""

from __future__ import annotations

from cards.models import Coding

#: Base of the project's own code systems. ``example.org`` is reserved for documentation: replace it
#: with a domain the deploying site controls before production (the codes stay the same).
SYSTEM_BASE = "https://nct04582136-cds.example.org/fhir/CodeSystem"

OVERRIDE_REASON_SYSTEM = f"{SYSTEM_BASE}/override-reason"
CARD_TOPIC_SYSTEM = f"{SYSTEM_BASE}/card-topic"
REFERRAL_SYSTEM = f"{SYSTEM_BASE}/referral"
PRESCREEN_RESULT_SYSTEM = f"{SYSTEM_BASE}/prescreen-result"

#: Key of the engine report inside a card's ``extension`` (reverse-DNS, per the spec).
REPORT_EXTENSION_KEY = "org.nct04582136-cds.report"

#: Static topic: the same for every card of this service, so an EHR that keys dismissals on
#: ``source.topic`` (Epic) can make "do not show again" stick.
TOPIC = Coding(system=CARD_TOPIC_SYSTEM, code="nct04582136-prescreen", display="NCT04582136 prescreen")

OVERRIDE_REASONS: tuple[Coding, ...] = (
    Coding(system=OVERRIDE_REASON_SYSTEM, code="already-screened", display="Already screened for this study"),
    Coding(system=OVERRIDE_REASON_SYSTEM, code="patient-declined", display="Patient declined"),
    Coding(system=OVERRIDE_REASON_SYSTEM, code="not-a-candidate", display="Not a candidate (clinical judgment)"),
    Coding(system=OVERRIDE_REASON_SYSTEM, code="will-refer", display="Will refer later"),
)

OVERRIDE_REASON_DISPLAY = {c.code: c.display for c in OVERRIDE_REASONS}
