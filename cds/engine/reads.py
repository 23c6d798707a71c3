"""What each rule reads from a record, declared next to the rule types, so nothing reads data the
service does not fetch.

`reads(rule, policy)` gives the `Read`s of one rule: the resource types, and for Observations the
codes it selects by, the categories within which it recognises data by text (a SLEDAI-2K total
with no standard code), and how far back it looks. The trial derives from them the Observation
codes, categories and look-back (`cds.engine.trial.Trial`), the service its prefetch templates and
FHIR fallback queries (`cds.service.prefetch.queries_for`), and the engine's own pre-filter keeps
only the Observations those queries can return, so `cds screen` on a file and the hook over HTTP
read the same data.

Every rule type in `cds.engine.rules` is registered here; a disease package registers its own rules
next to them (e.g. `cds.trials.lupus`) with `@reads.register` and the helpers below (`types`,
`medications`, `observations`, `labs`, `observation_codes_of`). An unregistered rule raises
`TypeError` (and a test checks each rule type has a declaration).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cds.engine.definition import Analyte, Drug, Policy, ValueSet
from cds.engine.items import RangeTest
from cds.engine.record import MEDICATION_TYPES
from cds.engine.rules import (
    AgeRange,
    AlwaysReview,
    AntiInfectiveTreatment,
    AnyOf,
    CodedDiagnosis,
    ConditionPresent,
    DiagnosisAge,
    DrugExposure,
    LabTest,
    Malignancy,
    PositiveTestReview,
    Pregnancy,
    RecentSurgery,
    StableRegimen,
    SteroidDoseAbove,
    SteroidRequiringCondition,
)


@dataclass(frozen=True)
class Read:
    """One kind of data a rule reads. For Observations: `codes` (system, code) it selects by; `text`
    a pattern it recognises in `code.text` / `coding.display` of Observations in `categories`
    (system, code); `lookback_days` how far before the as-of date (None: any time).

    For other types, a read is of every resource of the type unless narrowed: `match`, only the
    resources whose code (a Procedure's also by category, an AllergyIntolerance's also by reaction
    substance) is in the value set; `listing_results`, only the DiagnosticReports whose `result`
    lists an Observation the record keeps (a report is read only as the link to its results: its
    status and time). The engine validates only what some read of the type can use
    (`cds.engine.trial.Trial.keep`); one un-narrowed read of a type keeps all of it."""

    resource_type: str
    codes: frozenset[tuple[str, str]] = frozenset()
    categories: frozenset[tuple[str, str]] = frozenset()
    text: re.Pattern[str] | None = None
    lookback_days: int | None = None
    match: ValueSet | None = None
    listing_results: bool = False

    @property
    def narrowed(self) -> bool:
        return self.match is not None or self.listing_results


def types(*resource_types: str) -> tuple[Read, ...]:
    """Whole resource types, read at any date."""
    return tuple(Read(t) for t in resource_types)


def value_sets_in(data: object) -> ValueSet:
    """Every value set a rule (or a data table of items) holds, at any depth, as one: a rule that
    matches a record's Conditions, Procedures or allergies only through its own value sets reads
    at most the resources this union matches."""
    found: list[ValueSet] = []
    seen: set[int] = set()

    def walk(value: object) -> None:
        if id(value) in seen or isinstance(value, str | int | float | bool | re.Pattern) or value is None:
            return
        seen.add(id(value))
        if isinstance(value, ValueSet):
            found.append(value)
        elif isinstance(value, Drug):
            found.append(value.value_set)  # its products' codes, extra codes and name pattern
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name))
        elif isinstance(value, Mapping):
            for v in value.values():
                walk(v)
        elif isinstance(value, Iterable):
            for v in value:
                walk(v)

    walk(data)
    return functools.reduce(operator.or_, found, ValueSet(f"value sets of {type(data).__name__}"))


def matching(data: object, *resource_types: str) -> tuple[Read, ...]:
    """Reads of `resource_types` narrowed to what the value sets in `data` (a rule) match."""
    vs = value_sets_in(data)
    return tuple(Read(t, match=vs) for t in resource_types)


def medications(rule: object) -> tuple[Read, ...]:
    """Every medication resource type, narrowed to the drugs (and value sets) `rule` holds."""
    return matching(rule, *sorted(MEDICATION_TYPES))


def observations(vs: ValueSet, days: int | None, policy: Policy) -> Read:
    """Observations selected by a value set's codes within `days` (None: at any date); its text pattern (if any) is
    recognised within the policy's text categories."""
    return Read(
        "Observation",
        codes=vs.codes,
        categories=frozenset(policy.observation_text_categories) if vs.text is not None else frozenset(),
        text=vs.text,
        lookback_days=days,
    )


def labs(analytes: Iterable[Analyte], days: int, policy: Policy) -> tuple[Read, ...]:
    """Lab results in the window, and the DiagnosticReports that list them (a report entered in
    error withdraws its results)."""
    return (
        *(observations(a.fetched_by, days, policy) for a in analytes),
        Read("DiagnosticReport", lookback_days=days, listing_results=True),
    )


@functools.singledispatch
def reads(rule: object, policy: Policy) -> tuple[Read, ...]:
    raise TypeError(f"{type(rule).__name__} does not declare what it reads (register it in cds.engine.reads)")


@reads.register
def _(rule: AnyOf, policy: Policy) -> tuple[Read, ...]:
    return tuple(r for part in rule.parts for r in reads(part, policy))


@reads.register
def _(rule: AlwaysReview, policy: Policy) -> tuple[Read, ...]:
    return ()


@reads.register
def _(rule: AgeRange, policy: Policy) -> tuple[Read, ...]:
    return types("Patient")


@reads.register(CodedDiagnosis)
@reads.register(DiagnosisAge)
@reads.register(Malignancy)
def _(rule: object, policy: Policy) -> tuple[Read, ...]:
    return (*types("Patient"), *matching(rule, "Condition"))


@reads.register
def _(rule: ConditionPresent, policy: Policy) -> tuple[Read, ...]:
    if rule.also_procedures is not None:
        return matching(rule, "Condition", "Procedure")
    return matching(rule, "Condition")


@reads.register
def _(rule: PositiveTestReview, policy: Policy) -> tuple[Read, ...]:
    if rule.window_days is not None:
        return labs(rule.analytes, rule.window_days, policy)
    # at any date, like the cumulative SLICC tests: fetched by the service's history query
    return tuple(observations(a.fetched_by, None, policy) for a in rule.analytes)


@reads.register
def _(rule: LabTest, policy: Policy) -> tuple[Read, ...]:
    return labs((rule.analyte,), rule.window_days, policy)


@reads.register
def _(rule: Pregnancy, policy: Policy) -> tuple[Read, ...]:
    return (*types("Patient"), *matching(rule, "Condition"), *labs((rule.tests,), rule.window_days, policy))


def _drug_reads(rule: DrugExposure) -> tuple[Read, ...]:
    extra = matching(rule.allergy, "AllergyIntolerance") if rule.allergy is not None else ()
    extra += matching(rule.review_procedures, "Procedure") if rule.review_procedures is not None else ()
    return (*medications(rule), *extra)


@reads.register
def _(rule: DrugExposure, policy: Policy) -> tuple[Read, ...]:
    return _drug_reads(rule)


@reads.register
def _(rule: AntiInfectiveTreatment, policy: Policy) -> tuple[Read, ...]:
    # the infections recorded decide treatment vs prophylaxis
    return (*_drug_reads(rule), *(matching(rule.infections, "Condition") if rule.infections is not None else ()))


def observation_codes_of(data: object) -> frozenset[tuple[str, str]]:
    """Every Observation code a data table of items names (its analytes and range tests), e.g. the
    SLICC 2012 and SLEDAI-2K tables of `cds.trials.lupus`."""
    codes: set[tuple[str, str]] = set()
    for f in dataclasses.fields(data):  # type: ignore[arg-type]
        value = getattr(data, f.name)
        for part in value if isinstance(value, tuple) else (value,):
            if isinstance(part, Analyte):
                codes |= part.fetched_by.codes
            elif isinstance(part, RangeTest):
                codes |= part.codes.codes
    return frozenset(codes)


@reads.register(SteroidDoseAbove)
@reads.register(StableRegimen)
def _(rule: object, policy: Policy) -> tuple[Read, ...]:
    return medications(rule)


@reads.register
def _(rule: SteroidRequiringCondition, policy: Policy) -> tuple[Read, ...]:
    return (*matching(rule, "Condition"), *medications(rule))


@reads.register
def _(rule: RecentSurgery, policy: Policy) -> tuple[Read, ...]:
    return matching(rule, "Procedure")  # by code or by category
