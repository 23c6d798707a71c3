"""The patient's sex for clinical use, from every place real exports record it.

Read together, and any disagreement makes the sex unknown (a criterion that depends on it is then
decided as for a patient who could be pregnant, never silently "male"):

* ``Patient.gender`` (administrative gender: male / female; other / unknown say nothing);
* US Core birth sex: extension ``http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex``
  with ``valueCode`` F / M (UNK, ASKU, OTH say nothing);
* US Core sex (US Core 6+): extension ``http://hl7.org/fhir/us/core/StructureDefinition/us-core-sex``
  with a SNOMED CT code (248152002 female, 248153007 male) as valueCode / valueCoding;
* Sex parameter for clinical use: extension
  ``http://hl7.org/fhir/StructureDefinition/patient-sexParameterForClinicalUse`` whose ``value``
  sub-extension is ``female-typical`` / ``male-typical``; ``specified`` (see the comment) makes the
  sex unknown.

Gender identity (``patient-genderIdentity``) is not a clinical sex and is not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BIRTH_SEX_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"
US_CORE_SEX_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-sex"
SEX_FOR_CLINICAL_USE_URL = "http://hl7.org/fhir/StructureDefinition/patient-sexParameterForClinicalUse"

_BIRTH_SEX = {"F": "female", "M": "male"}
_US_CORE_SEX = {"248152002": "female", "248153007": "male", "F": "female", "M": "male"}
_SPCU = {"female-typical": "female", "male-typical": "male", "specified": None}


@dataclass(frozen=True, slots=True)
class ClinicalSex:
    sex: str | None  # "male" | "female" | None (not recorded, or sources disagree)
    sources: tuple[str, ...]  # e.g. ("Patient.gender male", "US Core birth sex F")
    conflicting: bool = False


def _ext_code(ext: Any) -> str | None:
    if getattr(ext, "valueCode", None):
        return str(ext.valueCode)
    coding = getattr(ext, "valueCoding", None)
    if coding is not None and coding.code:
        return str(coding.code)
    concept = getattr(ext, "valueCodeableConcept", None)
    if concept is not None:
        for c in concept.coding or []:
            if c.code:
                return str(c.code)
    return None


def clinical_sex(patient: Any | None) -> ClinicalSex:
    if patient is None:
        return ClinicalSex(None, ())
    found: list[tuple[str | None, str]] = []  # (sex or None = explicitly unknown, source text)
    if patient.gender in ("male", "female"):
        found.append((patient.gender, f"Patient.gender {patient.gender}"))
    for ext in patient.extension or []:
        url = ext.url
        if url == BIRTH_SEX_URL:
            code = _ext_code(ext)
            if code in _BIRTH_SEX:
                found.append((_BIRTH_SEX[code], f"US Core birth sex {code}"))
        elif url == US_CORE_SEX_URL:
            code = _ext_code(ext)
            if code in _US_CORE_SEX:
                found.append((_US_CORE_SEX[code], f"US Core sex {code}"))
        elif url == SEX_FOR_CLINICAL_USE_URL:
            for sub in ext.extension or []:
                if sub.url == "value":
                    code = _ext_code(sub)
                    if code in _SPCU:
                        found.append((_SPCU[code], f"sex parameter for clinical use {code}"))
    sources = tuple(text for _, text in found)
    values = {sex for sex, _ in found}
    if len(values) == 1 and None not in values:
        return ClinicalSex(next(iter(values)), sources)
    return ClinicalSex(None, sources, conflicting=len(values) > 1)
