"""The service's database: one SQLAlchemy engine per process, shared by every store.

* `Database` (``cds.store.database``): the engine and session factory built from
  ``CDS_DATABASE_URL`` - a SQLite file by default (one process), PostgreSQL for production and for
  several workers or replicas (``postgresql://`` uses the psycopg 3 driver);
* `Base` (``cds.store.base``): the declarative base every table is declared on;
* the schema is owned by Alembic migrations (``cds/store/migrations``), applied by
  `Database.upgrade` - at service start-up (``CDS_DATABASE_MIGRATE``, on by default; concurrent
  starts serialise on a lock) or with ``cds db upgrade``;
* ``cds.store.replay``: JWT ids seen (replay protection shared by every worker and replica).
"""

from cds.store.base import Base
from cds.store.database import Database, DatabaseUnavailable

__all__ = ["Base", "Database", "DatabaseUnavailable"]
