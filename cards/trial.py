"""What the cards need to know about the trial (`cds.trials.nct04582136.TRIAL` satisfies it)."""

from __future__ import annotations

from typing import Protocol


class TrialLike(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def url(self) -> str: ...
