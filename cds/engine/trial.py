"""A trial: criteria (id, kind, wording, rule) and the evaluation that turns a record into a Report."""

from __future__ import annotations

import dataclasses
import logging
import traceback
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from cds.engine.definition import Analyte, Policy, ValueSet
from cds.engine.model import CriterionResult, Evidence, Kind, Report, Status
from cds.engine.record import PatientRecord, build_record
from cds.engine.rules import Context, Outcome, Rule

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
    analytes: tuple[Analyte, ...]  # every lab the criteria read (drives the Observation query)
    extra_observation_codes: ValueSet  # non-lab observations read (e.g. a local SLEDAI code)
    # Without a usable Condition in this value set the patient is certainly excluded (the required
    # diagnosis is not_met): lets callers skip the full evaluation for most patients.
    applicability: ValueSet | None = None
    policy: Policy = dataclasses.field(default_factory=Policy)

    @property
    def observation_codes(self) -> tuple[tuple[str, str], ...]:
        codes: set[tuple[str, str]] = set(self.extra_observation_codes.codes)
        for a in self.analytes:
            codes |= a.codes.codes
        return tuple(sorted(codes))

    def with_policy(self, **changes: Any) -> Trial:
        return dataclasses.replace(self, policy=dataclasses.replace(self.policy, **changes))

    def observation_is_relevant(self, raw: Mapping[str, Any]) -> bool:
        """Cheap pre-filter on raw JSON: could any criterion read this Observation?"""
        code = raw.get("code")
        if not isinstance(code, Mapping):
            return True  # let validation report it
        codings = code.get("coding")
        pairs: list[tuple[str | None, str | None]] = []
        texts: list[str | None] = []
        if isinstance(codings, list):
            for c in codings:
                if isinstance(c, Mapping):
                    s, k, d = c.get("system"), c.get("code"), c.get("display")
                    pairs.append((s if isinstance(s, str) else None, k if isinstance(k, str) else None))
                    texts.append(d if isinstance(d, str) else None)
        t = code.get("text")
        texts.append(t if isinstance(t, str) else None)
        known = self._relevant_codes()
        if any(p in known for p in pairs):
            return True
        local = ValueSet.of("local", self.policy.sledai_local_codes)
        if local.match_codings(pairs) is not None:
            return True
        if self.extra_observation_codes.match_text(texts) is not None:
            return True
        return any(a.codes.text is not None and a.codes.match_text(texts) is not None for a in self.analytes)

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
            if _raw_codes(raw.get("verificationStatus")) & {"refuted", "entered-in-error"}:
                continue
            code = raw.get("code")
            if not isinstance(code, Mapping):
                continue
            codings = code.get("coding")
            pairs = [
                (c.get("system"), c.get("code"))
                for c in (codings if isinstance(codings, list) else [])
                if isinstance(c, Mapping) and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)
            ]
            if self.applicability.match_codings(pairs) is not None:
                return False
            texts = [code.get("text")] + [c.get("display") for c in (codings or []) if isinstance(c, Mapping)]
            if self.applicability.match_text([t for t in texts if isinstance(t, str)]) is not None:
                return False
        return True

    def _relevant_codes(self) -> frozenset[tuple[str | None, str | None]]:
        return frozenset(self.observation_codes)

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
        def keep(rtype: str, raw: Mapping[str, Any]) -> bool:
            return rtype != "Observation" or self.observation_is_relevant(raw)

        record = build_record(resources, patient_id=patient_id, searched=searched, keep=keep)
        if incomplete:
            record.searched = record.searched - frozenset(incomplete)
        return self.evaluate_record(record, as_of, incomplete)


def _raw_codes(concept: Any) -> set[str]:
    if not isinstance(concept, Mapping) or not isinstance(concept.get("coding"), list):
        return set()
    return {c["code"] for c in concept["coding"] if isinstance(c, Mapping) and isinstance(c.get("code"), str)}


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
