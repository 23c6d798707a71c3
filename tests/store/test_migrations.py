"""The migrations (cds/store/migrations) build exactly the tables the models declare.

A table or column added to a model without a migration - or a migration that drifts from its
model - fails here, on SQLite and on a real PostgreSQL.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

import cds.service.app  # every module the service imports: each table it could declare
from cds.store import Base, Database
from cds.store.schema import MODEL_MODULES, metadata


def _diff(database: Database) -> list[Any]:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def test_every_table_of_the_app_is_declared_by_a_listed_model_module() -> None:
    assert cds.service.app is not None
    assert set(Base.metadata.tables) == set(metadata().tables)
    assert {"cds_feedback", "cds_jwt_replay"} <= set(Base.metadata.tables)
    assert "cds.store.replay" in MODEL_MODULES


def test_models_equal_migrations_on_sqlite(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/m.sqlite3")
    database.upgrade()
    assert _diff(database) == []
    database.dispose()


def test_models_equal_migrations_on_postgresql(postgres_url: str) -> None:
    database = Database(postgres_url)
    database.upgrade()
    assert _diff(database) == []
    database.dispose()


def test_upgrade_is_idempotent_and_reaches_head(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path}/m.sqlite3")
    database.upgrade()
    head = database.current_revision()
    database.upgrade()
    assert database.current_revision() == head
    assert head is not None
    database.dispose()


def test_a_database_created_before_migrations_is_stamped_then_upgraded(tmp_path: Path) -> None:
    # the feedback table as `create_all` made it before migrations existed, holding a row
    database = Database(f"sqlite:///{tmp_path}/old.sqlite3")
    Base.metadata.tables["cds_feedback"].create(database.engine)
    with database.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO cds_feedback (service_id, card, accepted_suggestions, override_reasons, item, "
                "received_at) VALUES ('s', 'c', '[]', '[]', '{}', '2026-11-01 00:00:00')"
            )
        )
    database.upgrade()
    assert "cds_jwt_replay" in inspect(database.engine).get_table_names()
    with database.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM cds_feedback")).scalar_one() == 1
    assert _diff(database) == []
    database.dispose()


def test_concurrent_upgrades_on_postgresql_take_turns(postgres_url: str) -> None:
    errors: list[BaseException] = []

    def upgrade() -> None:
        database = Database(postgres_url)
        try:
            database.upgrade()
        except BaseException as exc:
            errors.append(exc)
        finally:
            database.dispose()

    threads = [threading.Thread(target=upgrade) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    database = Database(postgres_url)
    assert _diff(database) == []
    database.dispose()


@pytest.mark.parametrize("url", ["postgresql://u@h/db", "postgres://u@h/db"])
def test_plain_postgresql_urls_use_psycopg_3(url: str) -> None:
    from cds.store.database import normalise_url

    assert normalise_url(url).drivername == "postgresql+psycopg"
