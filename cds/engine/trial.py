"""A trial: criteria (id, kind, wording, rule) and the evaluation that turns a record into a Report."""

from __future__ import annotations

import dataclasses
import functools
import logging
import operator
import traceback
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, TypeVar

from cds.engine.definition import Analyte, Policy, ValueSet
from cds.engine.facts import raw_medication_activity
from cds.engine.model import CriterionResult, Evidence, Kind, Report, Status
from cds.engine.reads import Read, reads
from cds.engine.record import MEDICATION_TYPES, PatientRecord, about_patient, build_record
from cds.engine.rules import Context, Outcome, Rule
from cds.engine.timeutil import span
from cds.fhirjson import codes, coding_pairs, codings, observation_key

R = TypeVar("R", bound=Mapping[str, Any])

log = logging.getLogger("cds.engine")


@dataclass(frozen=True)
class Criterion:
    id: str
    kind: Kind
    title: str
    wording: str  # the trial's own wording
    rule_text: str  # how the service decides it
    data: str  # FHIR data used
    unknown_when: str  # what makes it unknown
    rule: Rule
    settleable: bool = True  # False: no data can settle it (investigator judgment)


@dataclass(frozen=True)
class Trial:
    id: str
    title: str
    url: str
    criteria: tuple[Criterion, ...]
    analytes: tuple[Analyte, ...]  # every lab the criteria read (documentation: default ULNs)
    # Without a usable Condition in this value set the patient is certainly excluded (the required
    # diagnosis is not_met): lets callers skip the full evaluation for most patients.
    applicability: ValueSet | None = None
    policy: Policy = dataclasses.field(default_factory=Policy)

    def reads_of(self, criterion: Criterion) -> tuple[Read, ...]:
        """What one criterion reads (its rule's declaration under this trial's policy)."""
        return reads(criterion.rule, self.policy)

    def depends_on(self, criterion: Criterion) -> tuple[str, ...]:
        """The resource types one criterion's result depends on: its declared reads, sorted (a rule
        may narrow them for one outcome: `Outcome.depends_on`)."""
        return self._depends_on[criterion.id]

    @functools.cached_property
    def _depends_on(self) -> dict[str, tuple[str, ...]]:
        return {c.id: tuple(sorted({r.resource_type for r in self.reads_of(c)})) for c in self.criteria}

    @functools.cached_property
    def reads(self) -> tuple[Read, ...]:
        """Everything the criteria read; the Patient is always read."""
        return (Read("Patient"), *(r for c in self.criteria for r in self.reads_of(c)))

    @functools.cached_property
    def resource_types(self) -> tuple[str, ...]:
        """The resource types the criteria read, in a stable order."""
        return tuple(sorted({r.resource_type for r in self.reads}))

    @functools.cached_property
    def _observation_reads(self) -> tuple[Read, ...]:
        return tuple(r for r in self.reads if r.resource_type == "Observation")

    @functools.cached_property
    def observation_codes(self) -> tuple[tuple[str, str], ...]:
        """The (system, code) pairs Observations are selected by within a look-back window (analytes,
        the SLEDAI-2K codes and the site's `Policy.sledai_local_codes`), derived from the rules'
        declarations; codes also read over the whole record are left to `observation_history_codes`
        (keeps the search URL short)."""
        windowed = {c for r in self._observation_reads if r.lookback_days is not None for c in r.codes}
        return tuple(sorted(windowed - set(self.observation_history_codes)))  # those are fetched at any date

    @functools.cached_property
    def observation_categories(self) -> tuple[tuple[str, str], ...]:
        """The Observation categories within which some rule recognises data by text."""
        return tuple(sorted({cat for r in self._observation_reads if r.text is not None for cat in r.categories}))

    @functools.cached_property
    def observation_lookback_days(self) -> int:
        """How far back any rule reads Observations (the longest declared window)."""
        windows = [r.lookback_days for r in self._observation_reads if r.lookback_days is not None]
        return max(windows, default=0)

    @functools.cached_property
    def whole_record_types(self) -> tuple[str, ...]:
        """The dated resource types (other than Observation, whose whole-record reads are by code:
        `observation_history_codes`) that some rule reads at any date: their fallback search must
        carry no date bound (e.g. a kidney biopsy report read whatever its age)."""
        return tuple(sorted({r.resource_type for r in self.reads if r.lookback_days is None} - {"Observation"}))

    @functools.cached_property
    def observation_history_codes(self) -> tuple[tuple[str, str], ...]:
        """The (system, code) pairs read over the whole record, whatever their date (reads with no
        look-back window: cumulative classification items such as SLICC 2012). The service fetches
        them with a query of their own that has no date bound."""
        return tuple(sorted({c for r in self._observation_reads if r.lookback_days is None for c in r.codes}))

    def with_policy(self, **changes: Any) -> Trial:
        return dataclasses.replace(self, policy=dataclasses.replace(self.policy, **changes))

    def observation_is_relevant(self, raw: Mapping[str, Any]) -> bool:
        """Cheap pre-filter on raw JSON: could any criterion read this Observation, and would the
        service's queries fetch it? Selected by a declared code (an analyte's, or a panel's that
        carries it as a component: `Analyte.panels`), or in a declared category with a text a rule
        recognises (see `cds.engine.reads`). A FHIR `code` search matches only the Observation's
        own code, so a component's code alone does not make it relevant."""
        code = raw.get("code")
        if not isinstance(code, Mapping):
            return True  # let validation report it
        codings = code.get("coding")
        pairs: list[tuple[str | None, str | None]] = []
        texts: list[str] = []
        if isinstance(codings, list):
            for c in codings:
                if isinstance(c, Mapping):
                    s, k, d = c.get("system"), c.get("code"), c.get("display")
                    pairs.append((s if isinstance(s, str) else None, k if isinstance(k, str) else None))
                    if isinstance(d, str):
                        texts.append(d)
        known = self._relevant_codes
        if any(p in known for p in pairs):
            return True
        t = code.get("text")
        if isinstance(t, str):
            texts.append(t)
        if not texts or not self._text_reads:
            return False
        categories = coding_pairs(raw.get("category"))
        return any(
            categories & r.categories and any(r.text.search(x) for x in texts)
            for r in self._text_reads
            if r.text is not None
        )

    def observation_cutoff(self, as_of: date) -> date:
        """The first day any criterion reads Observations from (`observation_lookback_days`)."""
        return as_of - timedelta(days=self.observation_lookback_days)

    def observation_in_reach(self, raw: Mapping[str, Any], as_of: date) -> bool:
        """Cheap pre-filter on raw JSON: False only when the Observation is certainly dated before
        the first day any criterion reads (`observation_cutoff`). Undated Observations and dates
        that do not parse are kept (validation decides)."""
        cutoff = self.observation_cutoff(as_of)
        return _dated_on_or_after(raw, cutoff, cutoff.isoformat())

    @functools.cached_property
    def _narrowed_reads(self) -> dict[str, tuple[Read, ...]]:
        """Per resource type other than Observation and Patient: its reads, when every one of them
        is narrowed (`Read.match` / `Read.listing_results`); a type with one un-narrowed read is
        kept whole and is not listed."""
        by_type: dict[str, list[Read]] = {}
        for r in self.reads:
            if r.resource_type not in ("Observation", "Patient"):
                by_type.setdefault(r.resource_type, []).append(r)
        return {t: tuple(rs) for t, rs in by_type.items() if all(r.narrowed for r in rs)}

    @functools.cached_property
    def _narrowed(self) -> dict[str, _Narrowed]:
        """`_narrowed_reads` folded per type: one value set (the union) and whether reports are
        read through their results."""
        out: dict[str, _Narrowed] = {}
        for rtype, rs in self._narrowed_reads.items():
            sets = [r.match for r in rs if r.match is not None]
            union = functools.reduce(operator.or_, sets) if sets else None
            out[rtype] = _Narrowed(union, any(r.listing_results for r in rs))
        return out

    def keep(self, as_of: date, resources: Iterable[Mapping[str, Any]] | None = None) -> Prefilter:
        """The raw pre-filter `evaluate` passes to `build_record`: only what some criterion can read
        (`Prefilter`); `resources`, the whole record, lets it follow references (a medication's
        Medication, a report's results), else what needs them is kept."""
        return Prefilter(self, as_of, resources)

    def without_unread_observations(self, resources: Iterable[R], *, patient_id: str, as_of: date) -> list[R]:
        """`resources` without the Observations about this patient that no criterion reads on
        `as_of` (the `Prefilter`'s decision, which looks at nothing but the Observation itself):
        `evaluate` gives the same report on what this returns as on `resources`. A caller holding a
        big record lets the dropped Observations go before the models are built (the hook service
        under a 20,000-Observation prefetch). Anything else (another patient's, not an object) is
        kept for `evaluate` to report."""
        keep = Prefilter(self, as_of, None)
        return [
            raw
            for raw in resources
            if not isinstance(raw, Mapping)
            or raw.get("resourceType") != "Observation"
            or not about_patient(raw, patient_id)
            or keep("Observation", raw)
        ]

    def not_applicable(self, conditions: Iterable[Mapping[str, Any]]) -> bool:
        """True when no usable Condition carries an applicability code (raw JSON, no model building).

        Only meaningful when Conditions were actually searched; a refuted or entered-in-error
        record does not count. Matches the full evaluation: such a patient is always `excluded`.
        """
        if self.applicability is None:
            return False
        for raw in conditions:
            if not isinstance(raw, Mapping) or raw.get("resourceType") != "Condition":
                continue
            if codes(raw.get("verificationStatus")) & {"refuted", "entered-in-error"}:
                continue
            code = raw.get("code")
            if not isinstance(code, Mapping):
                continue
            if self.applicability.match_codings(sorted(coding_pairs(code))) is not None:
                return False
            texts = [code.get("text")] + [c.get("display") for c in codings(code)]
            if self.applicability.match_text([t for t in texts if isinstance(t, str)]) is not None:
                return False
        return True

    def certainly_excluded_without_evaluation(
        self,
        resources: Iterable[Mapping[str, Any]],
        *,
        patient_id: str,
        searched: Collection[str],
        incomplete: Collection[str] = (),
    ) -> bool:
        """The fast path for the common patient-view: True only when the full evaluation would
        certainly find the patient `excluded` on completely read, valid Condition data (no
        applicability code at all), so nothing else needs to be validated or evaluated.

        Conservative: Conditions must have been searched and read completely, and every Condition
        record the criteria can read (the `Prefilter`'s) must be valid and about this patient
        (otherwise the full path reports the issue).
        """
        if "Condition" not in searched or "Condition" in incomplete:
            return False
        conditions = [r for r in resources if isinstance(r, Mapping) and r.get("resourceType") == "Condition"]
        if not self.not_applicable(conditions):
            return False
        keep = Prefilter(self, None, conditions)  # Conditions are kept whatever the as-of date
        return not build_record(conditions, patient_id=patient_id, searched=("Condition",), keep=keep).issues

    @functools.cached_property
    def _relevant_codes(self) -> frozenset[tuple[str | None, str | None]]:
        return frozenset(self.observation_codes) | frozenset(self.observation_history_codes)

    @functools.cached_property
    def _text_reads(self) -> tuple[Read, ...]:
        return tuple(r for r in self._observation_reads if r.text is not None and r.categories)

    def evaluate_record(self, record: PatientRecord, as_of: date, incomplete: Collection[str] = ()) -> Report:
        ctx = Context(record=record, as_of=as_of, policy=self.policy)
        results = []
        for c in self.criteria:
            outcome = _run(c, ctx)
            results.append(
                CriterionResult(
                    id=c.id,
                    kind=c.kind,
                    status=outcome.status,
                    reason=outcome.reason,
                    evidence=outcome.evidence,
                    title=c.title,
                    settleable=c.settleable,
                    items=outcome.items,
                    depends_on=outcome.depends_on if outcome.depends_on is not None else self.depends_on(c),
                )
            )
        return Report(
            trial=self.id,
            patient=f"Patient/{record.patient_id}",
            as_of=as_of,
            criteria=tuple(results),
            data_issues=tuple(record.issues),
            incomplete=tuple(sorted(set(incomplete))),
        )

    def evaluate(
        self,
        resources: Iterable[Mapping[str, Any]],
        *,
        patient_id: str,
        as_of: date,
        searched: Collection[str] | None = None,
        incomplete: Collection[str] = (),
    ) -> Report:
        resources = resources if isinstance(resources, list | tuple) else list(resources)
        keep = self.keep(as_of, resources)
        record = build_record(resources, patient_id=patient_id, searched=searched, keep=keep)
        record.medication_activity.extend(keep.medication_activity)
        if incomplete:
            record.searched = record.searched - frozenset(incomplete)
        return self.evaluate_record(record, as_of, incomplete)


class _Narrowed:
    """What the narrowed reads of one resource type use: codes and text of `match` (their union),
    and for reports the results they list."""

    def __init__(self, match: ValueSet | None, listing_results: bool) -> None:
        self.match = match
        self.listing_results = listing_results
        # the union's text pattern is long and a chart repeats its texts: each is searched once
        self.text_matches = functools.lru_cache(maxsize=65536)(self._text_matches)

    def _text_matches(self, text: str) -> bool:
        return self.match is not None and self.match.match_text([text]) is not None


class Prefilter:
    """Which raw resources the criteria can read, decided on raw JSON before any model is built.

    Observations: a code read over the whole record; else by date on the as-of date, then by code.
    Other types whose reads are all narrowed (`Read.match`: by code, a medication's by its drug
    concept or its Medication's code and ingredients; `Read.listing_results`: the DiagnosticReports
    that list a kept Observation). Every other resource is kept, and so is anything whose code,
    medication or result list cannot be read as plain JSON (validation reports it). A dropped
    medication resource still gives its activity dates (`medication_activity`), which tell whether
    the medication list is current."""

    def __init__(self, trial: Trial, as_of: date | None, resources: Iterable[Mapping[str, Any]] | None) -> None:
        """`as_of` None: Observations are kept whatever their date (only codes decide)."""
        cutoff = trial.observation_cutoff(as_of) if as_of is not None else None
        self._trial = trial
        self._cutoff = cutoff
        self._cutoff_text = cutoff.isoformat() if cutoff is not None else ""
        self._history = frozenset(trial.observation_history_codes)
        self._narrowed = trial._narrowed
        self.medication_activity: list[date] = []
        self._kept_results: frozenset[str] | None = None
        self._medications: dict[str, Mapping[str, Any]] | None = None
        self._kept_observations: set[int] | None = None
        if resources is None:
            return
        raws = [r for r in resources if isinstance(r, Mapping)]
        kept = [raw for raw in raws if raw.get("resourceType") == "Observation" and self._keep_observation(raw)]
        self._kept_observations = {id(raw) for raw in kept}  # decided once, looked up by `__call__`
        self._kept_results = frozenset(f"Observation/{raw.get('id')}" for raw in kept)
        self._medications = {
            f"Medication/{raw['id']}": raw
            for raw in raws
            if raw.get("resourceType") == "Medication" and isinstance(raw.get("id"), str)
        }

    def _keep_observation(self, raw: Mapping[str, Any]) -> bool:
        if self._history and coding_pairs([raw.get("code")]) & self._history:
            return True  # read whatever its date (the history query has no date bound)
        in_reach = self._cutoff is None or _dated_on_or_after(raw, self._cutoff, self._cutoff_text)
        return in_reach and self._trial.observation_is_relevant(raw)

    def __call__(self, rtype: str, raw: Mapping[str, Any]) -> bool:
        if rtype == "Observation":
            if self._kept_observations is not None:
                return id(raw) in self._kept_observations
            return self._keep_observation(raw)
        narrowed = self._narrowed.get(rtype)
        if narrowed is None:
            return True
        concepts = self._concepts(rtype, raw)
        if concepts is None or self._accepts(narrowed, concepts, raw):
            return True
        if rtype in MEDICATION_TYPES:
            activity = raw_medication_activity(rtype, raw)
            if activity is None:
                return True
            self.medication_activity.extend(activity)
        return False

    def _accepts(self, narrowed: _Narrowed, concepts: list[Mapping[str, Any]], raw: Mapping[str, Any]) -> bool:
        if narrowed.listing_results and self._lists_kept_result(raw):
            return True
        if narrowed.match is None:
            return False
        for concept in concepts:
            if narrowed.match.match_codings(sorted(coding_pairs(concept))) is not None:
                return True
        texts = {
            t for concept in concepts for t in (concept.get("text"), *(c.get("display") for c in codings(concept)))
        }
        return any(narrowed.text_matches(t) for t in texts if isinstance(t, str))

    def _lists_kept_result(self, raw: Mapping[str, Any]) -> bool:
        if self._kept_results is None:
            return True
        results = raw.get("result")
        if results is None:
            return False  # lists nothing: links no result
        if not isinstance(results, list):
            return True
        for item in results:
            ref = item.get("reference") if isinstance(item, Mapping) else None
            if not isinstance(ref, str):
                return True
            key = observation_key(ref)
            if key is None or key in self._kept_results:
                return True
        return False

    def _concepts(self, rtype: str, raw: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
        """The CodeableConcepts a narrowed read matches (R4: Procedure.category is one concept; a
        report's conclusion text counts as a concept's text); None when one of them is not plain
        JSON or a medication's Medication cannot be found."""
        found: list[Any]
        if rtype == "Procedure":
            found = [raw.get("code"), raw.get("category")]
        elif rtype == "AllergyIntolerance":
            reaction = raw.get("reaction", [])
            if not isinstance(reaction, list):
                return None
            found = [raw.get("code"), *(r.get("substance") if isinstance(r, Mapping) else r for r in reaction)]
        elif rtype == "DiagnosticReport":
            conclusion = raw.get("conclusion")
            coded = raw.get("conclusionCode", [])
            if not isinstance(coded, list) or not isinstance(conclusion, str | None):
                return None
            found = [raw.get("code"), *coded, {"text": conclusion} if conclusion is not None else None]
        elif rtype in MEDICATION_TYPES:
            medication = self._medication_of(raw)
            if medication is None:
                return None
            found = medication
        else:
            found = [raw.get("code")]
        out: list[Mapping[str, Any]] = []
        for concept in found:
            if concept is None:
                continue
            if not isinstance(concept, Mapping):
                return None
            coding = concept.get("coding", [])
            if not isinstance(coding, list) or len(codings(concept)) != len(coding):
                return None
            out.append(concept)
        return out

    def _medication_of(self, raw: Mapping[str, Any]) -> list[Any] | None:
        """The drug concepts of a medication resource, as `facts._medication_concept` reads them:
        its medicationCodeableConcept, else its Medication's code and ingredient items (contained
        or in the record)."""
        concept = raw.get("medicationCodeableConcept")
        if concept is not None:
            return [concept]
        reference = raw.get("medicationReference")
        if reference is None:
            return []  # no drug: never an exposure
        if not isinstance(reference, Mapping):
            return None
        ref = reference.get("reference")
        if ref is None:
            return []
        if not isinstance(ref, str):
            return None
        medication: object = None
        if ref.startswith("#"):
            contained = raw.get("contained", [])
            if not isinstance(contained, list):
                return None
            for c in contained:
                if isinstance(c, Mapping) and c.get("resourceType") == "Medication" and f"#{c.get('id')}" == ref:
                    medication = c
        elif self._medications is not None:
            medication = self._medications.get(ref) or self._medications.get("Medication/" + ref.rsplit("/", 1)[-1])
        if medication is None:
            return None if self._medications is None or ref.startswith("#") else []
        if not isinstance(medication, Mapping):
            return None
        ingredients = medication.get("ingredient", [])
        if not isinstance(ingredients, list):
            return None
        items = [i.get("itemCodeableConcept") if isinstance(i, Mapping) else i for i in ingredients]
        return [medication.get("code"), *items]


def _dated_on_or_after(raw: Mapping[str, Any], cutoff: date, cutoff_text: str) -> bool:
    """False only when the raw Observation's date (as `cds.engine.facts.obs_date` reads it from
    the model: effective[x], else issued; the latest day of a partial date) is before `cutoff`."""
    value = _raw_observation_date(raw)
    if value is None:
        return True
    # Fast path: a full date or dateTime compares as text ("2026-10-20T08:40:00-05:00" is on the
    # 2026-10-20 of its own time zone, as the engine reads it); anything else goes through `span`.
    day = value[:10]
    if len(day) == 10 and day[4] == day[7] == "-" and (day[:4] + day[5:7] + day[8:]).isdigit():
        return day >= cutoff_text
    s = span(value)
    return s is None or s.latest >= cutoff


def _raw_observation_date(raw: Mapping[str, Any]) -> str | None:
    """The raw date text `obs_date` would read, or None when there is none or it is not a string."""
    value = raw.get("effectiveDateTime")
    if value is None:
        value = raw.get("effectiveInstant")
    if value is None and "effectivePeriod" in raw:
        period = raw.get("effectivePeriod")
        if not isinstance(period, Mapping):
            return None
        value = period.get("end")
        if value is None:
            value = period.get("start")
    elif value is None:
        value = raw.get("issued")
    return value if isinstance(value, str) else None


def _run(criterion: Criterion, ctx: Context) -> Outcome:
    """Evaluate one criterion. A bug in one rule never becomes a silent met/not_met: it becomes
    `unknown` with an explicit 'evaluation error' reason (and is re-raised in debug runs)."""
    try:
        return criterion.rule.evaluate(ctx)
    except Exception as err:
        if _STRICT[0]:
            raise
        frame = traceback.extract_tb(err.__traceback__)[-1]
        # No message text: it could quote patient data. Type, criterion and code location only.
        log.error(
            "criterion evaluation failed",
            extra={
                "criterion": criterion.id,
                "error": type(err).__name__,
                "at": f"{frame.filename}:{frame.lineno}",
            },
        )
        return Outcome(
            Status.UNKNOWN,
            f"evaluation error ({type(err).__name__}): needs manual review",
            (Evidence("engine", "internal error while evaluating this criterion"),),
        )


# Tests set this to re-raise rule errors instead of reporting them as unknown.
_STRICT = [False]


def set_strict(strict: bool) -> None:
    _STRICT[0] = strict
