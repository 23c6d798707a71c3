"""Building blocks of a trial definition: value sets, lab analytes, drugs, policy.

A trial is declared as data (see `cds/trials/`): value sets, analytes, drug tables, thresholds and
windows are instances of these classes, and each criterion pairs an id with a generic rule from
`cds.engine.rules`. A second trial is a new definition file, not new plumbing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


@dataclass(frozen=True, slots=True)
class CodeMatch:
    """Which coding (or text) of a CodeableConcept matched a value set."""

    value_set: str
    label: str  # "http://snomed.info/sct|55464009" or 'text "tripterygium"'

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True)
class ValueSet:
    """Codes (system, code), code prefixes and an optional text pattern.

    ICD-10-CM families are listed as expanded codes (`cds.engine.icd10cm`: every code under a
    category or in a range, from the maintained tabular list), so matching is a set lookup; a code
    sent without its dot ("O09511", as some exports do) is read as the dotted code ("O09.511").
    The text pattern is matched against `CodeableConcept.text` and every `coding.display`; use it
    only where no code exists (herbal products) or as a documented name-based fallback.
    """

    name: str
    codes: frozenset[tuple[str, str]] = frozenset()
    prefixes: tuple[tuple[str, str], ...] = ()
    text: re.Pattern[str] | None = None

    @staticmethod
    def of(
        name: str,
        codes: Iterable[tuple[str, str]] = (),
        prefixes: Iterable[tuple[str, str]] = (),
        text: str | None = None,
    ) -> ValueSet:
        return ValueSet(
            name=name,
            codes=frozenset(codes),
            prefixes=tuple(prefixes),
            text=re.compile(text, re.IGNORECASE) if text else None,
        )

    def __or__(self, other: ValueSet) -> ValueSet:
        pattern: re.Pattern[str] | None
        if self.text and other.text:
            pattern = re.compile(f"(?:{self.text.pattern})|(?:{other.text.pattern})", re.IGNORECASE)
        else:
            pattern = self.text or other.text
        return ValueSet(
            name=f"{self.name} | {other.name}",
            codes=self.codes | other.codes,
            prefixes=self.prefixes + other.prefixes,
            text=pattern,
        )

    def match_codings(self, codings: Iterable[tuple[str | None, str | None]]) -> CodeMatch | None:
        for system, code in codings:
            if not system or not code:
                continue
            if (system, code) in self.codes:
                return CodeMatch(self.name, f"{system}|{code}")
            if system == ICD10CM and len(code) > 3 and "." not in code and (system, _dotted(code)) in self.codes:
                return CodeMatch(self.name, f"{system}|{code}")
            for p_system, prefix in self.prefixes:
                if system == p_system and code.startswith(prefix):
                    return CodeMatch(self.name, f"{system}|{code}")
        return None

    def match_text(self, texts: Iterable[str | None]) -> CodeMatch | None:
        if self.text is None:
            return None
        for t in texts:
            if t and (m := self.text.search(t)):
                return CodeMatch(self.name, f'text "{m.group(0)}"')
        return None

    def match(self, concept: Any) -> CodeMatch | None:
        """Match an R4B CodeableConcept (or None)."""
        if concept is None:
            return None
        codings = [(c.system, c.code) for c in (concept.coding or [])]
        hit = self.match_codings(codings)
        if hit is not None:
            return hit
        return self.match_text([concept.text, *[c.display for c in (concept.coding or [])]])

    def systems_codes(self) -> list[tuple[str, str]]:
        return sorted(self.codes)


def _dotted(code: str) -> str:
    """An ICD-10-CM code written without its dot, dotted after the category ("O09511" -> "O09.511")."""
    return f"{code[:3]}.{code[3:]}"


@dataclass(frozen=True)
class Analyte:
    """A laboratory analyte: its codes, the unit criteria compare in, and conversion facts."""

    name: str
    codes: ValueSet
    unit: str  # canonical UCUM unit thresholds are expressed in
    molar_mass: float | None = None  # g/mol, enables substance <-> mass conversion
    # Units that UCUM keeps apart but the lab world treats as identical for this analyte,
    # e.g. ALT in [iU]/L vs U/L. Maps a UCUM code to the code it is to be read as.
    unit_equivalents: Mapping[str, str] = field(default_factory=dict)
    default_uln: float | None = None  # in `unit`; used only when no referenceRange (ULN_ASSUMED)
    default_lln: float | None = None
    # Unit a result stated without any unit is read in (e.g. an Epic eGFR valueString ">60"): only
    # for analytes reported in one unit everywhere. Such evidence is flagged DERIVED. None: unknown.
    implied_unit: str | None = None
    # Panels that may carry this analyte as an Observation.component (a CBC carrying the WBC). A
    # FHIR `code` search sees only the panel's own code, so these codes are what the service asks
    # for; a panel under any other code is neither fetched nor read (the result stays unknown).
    panels: ValueSet | None = None

    @property
    def fetched_by(self) -> ValueSet:
        """The codes an Observation carrying this analyte is selected by: its own and its panels'."""
        return self.codes if self.panels is None else self.codes | self.panels


class RouteClass(StrEnum):
    ORAL = "oral"
    INTRAVENOUS = "intravenous"
    OTHER_SYSTEMIC = "other-systemic"  # subcutaneous, intramuscular, sublingual, buccal
    TOPICAL = "topical"
    OPHTHALMIC = "ophthalmic"
    INHALED = "inhaled"
    NASAL = "nasal"
    LOCAL_INJECTION = "local-injection"  # intra-articular, intralesional
    RECTAL = "rectal"
    OTHER_LOCAL = "other-local"  # vaginal, otic, intradermal
    UNKNOWN = "unknown"


SYSTEMIC_ROUTES = frozenset({RouteClass.ORAL, RouteClass.INTRAVENOUS, RouteClass.OTHER_SYSTEMIC})


@dataclass(frozen=True)
class Product:
    """A clinical drug (RxNorm SCD): strength per unit and dose form route."""

    rxcui: str
    name: str
    strength_mg: float | None  # per tablet/capsule, or per mL for liquids (see per_ml)
    route: RouteClass
    per_ml: bool = False


@dataclass(frozen=True)
class Drug:
    """An ingredient with the product codes that carry it, and a name pattern (fallback)."""

    name: str
    ingredient_rxcui: str | None
    products: tuple[Product, ...] = ()
    extra_codes: tuple[tuple[str, str], ...] = ()  # brand names, precise ingredients
    name_pattern: str | None = None
    prednisone_factor: float | None = None  # for glucocorticoids

    @functools.cached_property
    def value_set(self) -> ValueSet:
        codes = {(RXNORM, p.rxcui) for p in self.products} | set(self.extra_codes)
        if self.ingredient_rxcui:
            codes.add((RXNORM, self.ingredient_rxcui))
        return ValueSet.of(self.name, codes, text=self.name_pattern)

    def product(self, rxcui: str) -> Product | None:
        for p in self.products:
            if p.rxcui == rxcui:
                return p
        return None


@dataclass(frozen=True)
class DrugClass:
    name: str
    drugs: tuple[Drug, ...]


@dataclass(frozen=True)
class Policy:
    """Site policy switches and defaults the rules share. Every value is a documented choice.

    Windows, thresholds and value sets are not here: each rule takes its own as constructor
    parameters, set by the trial definition, and declares what it reads (`cds.engine.reads`), from
    which the trial derives its Observation look-back, prefetch and queries.
    """

    # A medication list counts as complete enough to infer "not taking" when any medication record
    # was active or recorded within this many days of the as-of date.
    med_list_recent_days: int = 90
    # Completed/stopped orders without an end date (common in Synthea data): assume the course
    # ended within this many days of its start (evidence is flagged). Before that: unknown.
    max_undated_course_days: int = 365
    # Renewals of the same dose separated by at most this many days are one continuous segment.
    renewal_grace_days: int = 7
    # Count SNOMED 200936003 "Lupus erythematosus" (not specifically systemic) as SLE. Off by default.
    generic_lupus_counts_as_sle: bool = False
    # Extra (system, code) pairs accepted as a SLEDAI-2K total score Observation.
    sledai_local_codes: tuple[tuple[str, str], ...] = ()
    # Observation categories (system, code) within which data without a standard code is recognised
    # by its text (a SLEDAI-2K total named in `code.text`); the service also fetches these
    # categories, so what is recognised by text is fetched too (`cds.engine.reads`).
    observation_text_categories: tuple[tuple[str, str], ...] = (
        (OBSERVATION_CATEGORY, "survey"),
        (OBSERVATION_CATEGORY, "exam"),
    )
