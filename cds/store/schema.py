"""Every table of the service's database, for migrations and the models-equal-migrations test."""

from __future__ import annotations

import importlib

from sqlalchemy import MetaData

from cds.store.base import Base

# Modules that declare tables on `Base`. Add a module here (and a migration) when it adds a table.
MODEL_MODULES = (
    "cds.service.feedback",
    "cds.store.replay",
    "cds.service.alerts",
    "cds.population.store",
    "cds.worklist.store",
)


def metadata() -> MetaData:
    """`Base.metadata` with every model module imported."""
    for module in MODEL_MODULES:
        importlib.import_module(module)
    return Base.metadata
