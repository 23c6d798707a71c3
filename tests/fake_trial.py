"""A tiny second trial registered for a test (the registry is monkeypatched, nothing is written).

`register_fake_trial(monkeypatch)` registers ``nct00000001``: NCT04582136's criteria under another
id, title and URL, with no ``card.py`` (so the plain card wording). Its module lives in
``sys.modules`` only, so `cds.trials.get` imports it like a trial folder.
"""

from __future__ import annotations

import dataclasses
import sys
import types

import pytest

import cds.trials
from cds.engine.trial import Trial
from cds.trials.nct04582136 import TRIAL as NCT04582136

FAKE_ID = "NCT00000001"
FAKE_KEY = FAKE_ID.lower()


def fake_trial() -> Trial:
    return dataclasses.replace(
        NCT04582136,
        id=FAKE_ID,
        title=f"Test trial ({FAKE_ID})",
        url=f"https://clinicaltrials.gov/study/{FAKE_ID}",
    )


def register_fake_trial(monkeypatch: pytest.MonkeyPatch) -> Trial:
    trial = fake_trial()
    module = types.ModuleType(f"cds.trials.{FAKE_KEY}")
    module.TRIAL = trial  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(cds.trials, "REGISTERED", (*cds.trials.REGISTERED, FAKE_KEY))
    return trial
