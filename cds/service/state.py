"""What a running service holds: settings, the database, the FHIR gateway, the feedback store, one
`TrialService` per enabled trial (its trial, engine, queries and card wording, under the service id
``<trial-id>-prescreen``) and the per-process concurrency limits."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol, TypeVar

from cards.trial import TrialLike
from cards.wording import CardWording
from cds.config import Settings
from cds.engine.model import Report
from cds.errors import NotFound
from cds.fhir.gateway import FhirGateway
from cds.fhir.urls import UrlAllowList
from cds.service.alerts import GATE_QUERIES, AlertPolicy, AlertStore
from cds.service.auth import JwtAuthenticator
from cds.service.feedback import FeedbackStore
from cds.service.limits import EngineRunner, Slots
from cds.service.prefetch import PrefetchQuery, queries_for
from cds.store.database import Database
from cds.trials import service_id

HOOK = "patient-view"
FAST_PATH_TYPES = ("Patient", "Condition")

R = TypeVar("R", bound=Mapping[str, Any])


class ServiceTrial(TrialLike, Protocol):
    @property
    def resource_types(self) -> Sequence[str]: ...

    @property
    def observation_codes(self) -> Sequence[tuple[str, str]]: ...

    @property
    def observation_categories(self) -> Sequence[tuple[str, str]]: ...

    @property
    def observation_history_codes(self) -> Sequence[tuple[str, str]]: ...

    @property
    def whole_record_types(self) -> Sequence[str]: ...

    def observation_cutoff(self, as_of: date) -> date: ...

    def certainly_excluded_without_evaluation(
        self,
        resources: Iterable[Mapping[str, Any]],
        *,
        patient_id: str,
        searched: Collection[str],
        incomplete: Collection[str] = (),
    ) -> bool: ...

    def without_unread_observations(self, resources: Iterable[R], *, patient_id: str, as_of: date) -> list[R]: ...

    def evaluate(
        self,
        resources: Iterable[Mapping[str, Any]],
        *,
        patient_id: str,
        as_of: date,
        searched: Collection[str] | None = None,
        incomplete: Collection[str] = (),
    ) -> Report: ...


class Evaluator(Protocol):
    def __call__(
        self,
        resources: list[dict[str, Any]],
        *,
        patient_id: str,
        as_of: date,
        searched: frozenset[str],
        incomplete: tuple[str, ...],
    ) -> Report: ...


def default_evaluator(trial: ServiceTrial) -> Evaluator:
    """The engine evaluating `trial` (the service's trial, never an implicit default), adapted to the
    service's call."""

    def run(
        resources: list[dict[str, Any]],
        *,
        patient_id: str,
        as_of: date,
        searched: frozenset[str],
        incomplete: tuple[str, ...],
    ) -> Report:
        return trial.evaluate(
            resources, patient_id=patient_id, as_of=as_of, searched=set(searched), incomplete=incomplete
        )

    return run


def default_trial() -> ServiceTrial:
    """The default trial of every command (`cds.trials.DEFAULT_TRIAL`)."""
    from cds.trials import DEFAULT_TRIAL, get

    trial: ServiceTrial = get(DEFAULT_TRIAL)
    return trial


def enabled_trials(settings: Settings) -> tuple[ServiceTrial, ...]:
    """The trials the settings enable (``CDS_ENABLED_TRIALS``; default every registered trial)."""
    from cds.trials import get_all

    return tuple(get_all(settings.trial_ids))


@dataclass
class TrialService:
    """One CDS service: a trial, the engine evaluating it, the queries its criteria declare and its
    card wording, under the id ``<trial-id>-prescreen``."""

    trial: ServiceTrial
    evaluator: Evaluator
    wording: CardWording
    queries: tuple[PrefetchQuery, ...] = ()
    id: str = field(init=False)
    fast_path_queries: tuple[PrefetchQuery, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.id = service_id(self.trial.id)
        if not self.queries:
            self.queries = queries_for(self.trial)  # what the criteria declare they read
        # What the not-applicable fast path reads (`certainly_excluded_without_evaluation`): the
        # Conditions, and the Patient every call requires.
        self.fast_path_queries = tuple(q for q in self.queries if q.resource_type in FAST_PATH_TYPES)


def trial_service(trial: ServiceTrial, evaluator: Evaluator | None = None) -> TrialService:
    """The service of `trial`: its own engine (unless a test injects one) and its card wording."""
    from cards.render import wording_of

    return TrialService(trial=trial, evaluator=evaluator or default_evaluator(trial), wording=wording_of(trial))


def random_uuid() -> str:
    return str(uuid.uuid4())


def new_report_token() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class ServiceState:
    settings: Settings
    database: Database
    gateway: FhirGateway
    store: FeedbackStore
    services: dict[str, TrialService]  # by service id, in registry order
    large_bodies: Slots
    engine: EngineRunner
    new_uuid: Callable[[], str] = random_uuid
    authenticator: JwtAuthenticator | None = None  # None: authentication off (demo, tests)
    fhir_allowed: UrlAllowList = field(init=False)
    # Alert fatigue (snooze, referral, opt-out) and report pages; on the feedback store's database.
    alerts: AlertStore = field(init=False)
    gate_queries: tuple[PrefetchQuery, ...] = GATE_QUERIES
    new_token: Callable[[], str] = new_report_token  # the opaque token of a report page URL

    def __post_init__(self) -> None:
        self.fhir_allowed = UrlAllowList(self.settings.fhir_allowed_servers)
        self.alerts = alert_store(self.settings, self.store)

    def service(self, service_id: str) -> TrialService:
        """The service with this id; `NotFound` (404) for any other id."""
        found = self.services.get(service_id)
        if found is None:
            raise NotFound("unknown CDS service")
        return found


def alert_store(settings: Settings, store: FeedbackStore) -> AlertStore:
    policy = AlertPolicy(
        snooze_days=settings.alert_snooze_days,
        snooze_days_by_reason=dict(settings.alert_snooze_days_by_reason),
        referral_quiet_days=settings.alert_referral_quiet_days,
        card_issue_days=settings.alert_card_issue_days,
        report_link_seconds=settings.report_link_seconds,
    )
    secret = settings.alert_key_secret.get_secret_value() if settings.alert_key_secret else None
    return AlertStore(store.engine, policy, secret)
