"""Card wording as trial data: which supporting facts a trial's card highlights, and how.

The renderer (`cards.render`) is trial-agnostic: after what is against and what needs verifying, the
card's detail shows a few supporting facts the study team reads first. Which facts those are is the
trial's choice, declared in its folder (``cds/trials/<id>/card.py``: ``WORDING = CardWording(...)``)
and loaded by `cds.trials.card_wording`. A trial without ``card.py`` gets `PLAIN_WORDING` (no
supporting facts: the verdict line and what is against / to verify only).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SinceFact:
    """A "- **<label>** coded since <date>" bullet: shown when criterion `requires` is met; the date is
    the earliest evidence date of the first criterion of `dates_from` that is met and has dated
    evidence (none: no bullet)."""

    label: str
    requires: str
    dates_from: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Highlight:
    """A "- **<label>:** fact; fact" bullet: the first two evidence values of criterion `criterion`,
    shown only when it is met and its evidence holds values."""

    criterion: str
    label: str


@dataclass(frozen=True, slots=True)
class CardWording:
    """What a trial's card shows besides the verdict: supporting facts, in this order (since first)."""

    since: SinceFact | None = None
    highlights: tuple[Highlight, ...] = ()

    @property
    def criterion_ids(self) -> frozenset[str]:
        """Every criterion id the wording names (a trial's test checks they exist)."""
        ids = {h.criterion for h in self.highlights}
        if self.since is not None:
            ids |= {self.since.requires, *self.since.dates_from}
        return frozenset(ids)


PLAIN_WORDING = CardWording()
