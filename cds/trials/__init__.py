"""The trial registry: one folder per trial under `cds/trials/`, registered here by its id.

A trial folder (`cds/trials/<id>/`) is a package whose ``TRIAL`` is a `cds.engine.trial.Trial`:
its criteria, value sets (each citing its source), thresholds, windows and disease-specific rules;
optionally a ``card.py`` whose ``WORDING`` is a `cards.wording.CardWording` (the supporting facts its
card highlights; `card_wording`). Everything else (discovery, prefetch templates, FHIR fallback queries, SMART scopes,
`cds screen --trial`, `cds criteria --trial`, the population export) is derived from it.

Adding a trial = adding its folder and its id to `REGISTERED`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cards.wording import CardWording
    from cds.engine.trial import Trial

# The registered trials, by lower-case id (the folder name). The first is the default of every command.
REGISTERED: tuple[str, ...] = ("nct04582136", "nct06155604")
DEFAULT_TRIAL: str = REGISTERED[0]


class UnknownTrial(ValueError):
    """A trial id that is not registered."""

    def __init__(self, trial_id: str) -> None:
        super().__init__(f"unknown trial {trial_id!r} (known: {', '.join(REGISTERED)})")
        self.trial_id = trial_id


def normalize(trial_id: str) -> str:
    """The registry key of a trial id (``NCT04582136`` -> ``nct04582136``); UnknownTrial if not registered."""
    key = trial_id.strip().lower()
    if key not in REGISTERED:
        raise UnknownTrial(trial_id)
    return key


def service_id(trial_id: str) -> str:
    """The CDS service id of a trial: ``<trial-id>-prescreen``, lower case (``nct04582136-prescreen``)."""
    return f"{trial_id.strip().lower()}-prescreen"


def get(trial_id: str) -> Trial:
    """The registered trial with this id (any case)."""
    module = importlib.import_module(f"cds.trials.{normalize(trial_id)}")
    trial: Trial = module.TRIAL
    return trial


def get_all(trial_ids: Iterable[str] | None = None) -> tuple[Trial, ...]:
    """The given trials (default: every registered trial), in registry order, without duplicates."""
    keys = REGISTERED if trial_ids is None else tuple(dict.fromkeys(normalize(t) for t in trial_ids))
    return tuple(get(k) for k in keys)


def card_wording(trial_id: str) -> CardWording:
    """The card wording of a registered trial: ``WORDING`` of its ``card.py``, else the plain wording."""
    from cards.wording import PLAIN_WORDING, CardWording

    key = normalize(trial_id)
    try:
        module = importlib.import_module(f"cds.trials.{key}.card")
    except ModuleNotFoundError as exc:
        if exc.name != f"cds.trials.{key}.card":
            raise  # card.py exists but imports something missing: a bug, not "no wording"
        return PLAIN_WORDING
    wording = module.WORDING
    if not isinstance(wording, CardWording):
        raise TypeError(f"cds.trials.{key}.card.WORDING is not a CardWording")
    return wording
