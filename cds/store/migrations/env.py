"""Alembic environment of the service's database: always run through `cds.store.Database.upgrade`
(or ``cds db upgrade``), which passes an open connection in ``config.attributes``."""

from __future__ import annotations

from alembic import context

from cds.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the only entry points pass a connection
    raise RuntimeError("run migrations with `cds db upgrade` (cds.store.Database.upgrade)")
context.configure(
    connection=connection,
    target_metadata=metadata(),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
