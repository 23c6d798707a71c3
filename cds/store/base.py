"""The declarative base of every table of the service's database.

A module that declares a table on `Base` must be imported by `cds.store.schema.metadata` and needs
an Alembic migration (``cds/store/migrations/versions``): ``tests/store/test_migrations.py`` fails
while the models and the migrations differ.
"""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass
