"""Routes of administration: one table from SNOMED CT codes, HL7 v3 codes, NCI/FDA codes and text.

`classify(concept)` reads a ``Dosage.route`` CodeableConcept: codes first (system and code must both
match a row), then its text and displays through the ordered text patterns. `classify_text` reads
free text (a sig, a product name, a dose form).

Subcutaneous and intramuscular are systemic (`RouteClass.OTHER_SYSTEMIC`): the text patterns test
the injection routes BEFORE the topical one, so "Subcutaneous" can never be read as "cutaneous".
Sources: SNOMED CT "Route of administration value" (the codes used by US Core / FHIR R4
``route-codes`` value set), HL7 v3 RouteOfAdministration
(http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration), FDA SPL route of administration
(NCI Thesaurus codes).
"""

from __future__ import annotations

import re
from typing import Any

from cds.engine.definition import SNOMED, RouteClass

V3_ROUTE = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"
NCI_SYSTEMS = frozenset({"http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl", "urn:oid:2.16.840.1.113883.3.26.1.1"})

R = RouteClass

# SNOMED CT route codes: the FHIR R4 value set http://hl7.org/fhir/ValueSet/route-codes (OID
# 2.16.840.1.113883.4.642.3.98; is-a 284009009 "Route of administration values"), which lists
# 26643006 Oral route, 47625008 Intravenous route, 34206005 Subcutaneous route, 6064005 Topical route.
SNOMED_ROUTES: dict[str, RouteClass] = {
    "26643006": R.ORAL,  # Oral route
    "127490009": R.ORAL,  # Gastrostomy route (enteral)
    "127492001": R.ORAL,  # Nasogastric route (enteral)
    "47625008": R.INTRAVENOUS,  # Intravenous route
    "58100008": R.INTRAVENOUS,  # Intra-arterial route
    "34206005": R.OTHER_SYSTEMIC,  # Subcutaneous route
    "78421000": R.OTHER_SYSTEMIC,  # Intramuscular route
    "37839007": R.OTHER_SYSTEMIC,  # Sublingual route
    "54471007": R.OTHER_SYSTEMIC,  # Buccal route
    "6064005": R.TOPICAL,  # Topical route
    "45890007": R.TOPICAL,  # Transdermal route
    "54485002": R.OPHTHALMIC,  # Ophthalmic route
    "447694001": R.INHALED,  # Respiratory tract route
    "46713006": R.NASAL,  # Nasal route
    "37161004": R.RECTAL,  # Rectal route
    "12130007": R.LOCAL_INJECTION,  # Intra-articular route
    "16857009": R.OTHER_LOCAL,  # Vaginal route
    "10547007": R.OTHER_LOCAL,  # Otic route
    "372464004": R.OTHER_LOCAL,  # Intradermal route
}
V3_ROUTES: dict[str, RouteClass] = {
    "PO": R.ORAL,
    "GT": R.ORAL,
    "NGT": R.ORAL,
    "IV": R.INTRAVENOUS,
    "IVINJ": R.INTRAVENOUS,
    "IVINJBOL": R.INTRAVENOUS,
    "IVPUSH": R.INTRAVENOUS,
    "IVRPUSH": R.INTRAVENOUS,
    "IVSPUSH": R.INTRAVENOUS,
    "IVFLUSH": R.INTRAVENOUS,
    "IVINFUS": R.INTRAVENOUS,
    "IVCINFUS": R.INTRAVENOUS,
    "IVCINJ": R.INTRAVENOUS,
    "IAINJ": R.INTRAVENOUS,
    "SQ": R.OTHER_SYSTEMIC,
    "SC": R.OTHER_SYSTEMIC,
    "SUBCUT": R.OTHER_SYSTEMIC,
    "SQINFUS": R.OTHER_SYSTEMIC,
    "IM": R.OTHER_SYSTEMIC,
    "IMINJ": R.OTHER_SYSTEMIC,
    "SL": R.OTHER_SYSTEMIC,
    "BUC": R.OTHER_SYSTEMIC,
    "TOPICAL": R.TOPICAL,
    "TOPICALAPL": R.TOPICAL,
    "TRNSDERM": R.TOPICAL,
    "TRNSDERMD": R.TOPICAL,
    "DERMD": R.TOPICAL,
    "OPTHALTA": R.OPHTHALMIC,
    "OPHTHALTA": R.OPHTHALMIC,
    "IPINHL": R.INHALED,
    "ORINHL": R.INHALED,
    "RESPINHL": R.INHALED,
    "NEB": R.INHALED,
    "ORIFINHL": R.INHALED,
    "NASINHL": R.NASAL,
    "NASINHLC": R.NASAL,
    "NASINSTL": R.NASAL,
    "NASAL": R.NASAL,
    "RECINSTL": R.RECTAL,
    "RECTINJ": R.RECTAL,
    "RECTAL": R.RECTAL,
    "SUPP": R.RECTAL,
    "IAINJP": R.LOCAL_INJECTION,
    "IARTINJ": R.LOCAL_INJECTION,
    "ILESINJ": R.LOCAL_INJECTION,
    "IVITINJ": R.LOCAL_INJECTION,
    "VAGINSI": R.OTHER_LOCAL,
    "OTIC": R.OTHER_LOCAL,
    "IDINJ": R.OTHER_LOCAL,
}
NCI_ROUTES: dict[str, RouteClass] = {
    "C38288": R.ORAL,
    "C38276": R.INTRAVENOUS,
    "C38299": R.OTHER_SYSTEMIC,  # subcutaneous
    "C28161": R.OTHER_SYSTEMIC,  # intramuscular
    "C38304": R.TOPICAL,
    "C38287": R.OPHTHALMIC,
    "C38216": R.INHALED,
    "C38284": R.NASAL,
    "C38295": R.RECTAL,
}

# Ordered: the first pattern that matches a text wins. Injection routes come before topical.
TEXT_PATTERNS: tuple[tuple[RouteClass, re.Pattern[str]], ...] = (
    (R.LOCAL_INJECTION, re.compile(r"intra-?articular|intralesional|intravitreal|joint injection", re.I)),
    (
        R.OTHER_SYSTEMIC,
        re.compile(
            r"sub-?cutaneous|subcut|\bs\.?c\.?\b|\bsq\b|\bsub-?q\b|hypoderm|intra-?muscular|\bIM\b|\bi\.m\.|"
            r"sublingual|buccal|auto-?injector|prefilled (?:syringe|pen)|\bpen injector\b",
            re.I,
        ),
    ),
    (
        R.INTRAVENOUS,
        re.compile(r"intra-?venous|\bIV\b|\bi\.v\.|\bIVIG\b|\bIGIV\b|\bIVPB\b|infusion|injectable|injection", re.I),
    ),
    (R.OPHTHALMIC, re.compile(r"ophthalm|ocular|\beyes?\b|conjunctiv|eye drops?", re.I)),
    (R.NASAL, re.compile(r"\bnasal|intranasal|\bnostrils?\b", re.I)),
    (R.INHALED, re.compile(r"inhal|respirat|nebuli|\bMDI\b|\bHFA\b|\bpuffs?\b", re.I)),
    (R.RECTAL, re.compile(r"rectal|\bper rectum\b|suppositor|enema", re.I)),
    (R.OTHER_LOCAL, re.compile(r"vaginal|\botic\b|\bear\b|intradermal", re.I)),
    (
        R.TOPICAL,
        re.compile(r"topical|cutaneous|transdermal|\bskin\b|ointment|cream|lotion|\bgel\b|\bapply\b|patch", re.I),
    ),
    (
        R.ORAL,
        re.compile(r"\boral|orally|by mouth|\bPO\b|\bp\.o\.|tablet|capsule|swallow|per os|\bG-?tube\b|enteral", re.I),
    ),
)


def classify_text(*texts: str | None) -> RouteClass:
    """The route named by the first text that names one; UNKNOWN when none does."""
    for text in texts:
        if not text:
            continue
        for route, pattern in TEXT_PATTERNS:
            if pattern.search(text):
                return route
    return R.UNKNOWN


def classify_coding(system: str | None, code: str | None) -> RouteClass:
    if not code:
        return R.UNKNOWN
    if system == SNOMED:
        return SNOMED_ROUTES.get(code, R.UNKNOWN)
    if system == V3_ROUTE:
        return V3_ROUTES.get(code, R.UNKNOWN)
    if system in NCI_SYSTEMS:
        return NCI_ROUTES.get(code, R.UNKNOWN)
    return R.UNKNOWN


def classify(concept: Any) -> RouteClass:
    """A route CodeableConcept: a known code wins, else its text and displays."""
    if concept is None:
        return R.UNKNOWN
    for c in concept.coding or []:
        route = classify_coding(c.system, c.code)
        if route is not R.UNKNOWN:
            return route
    return classify_text(concept.text, *[c.display for c in concept.coding or []])
