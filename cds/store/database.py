"""One SQLAlchemy engine (and session factory) for the service's database, built from the settings.

SQLite (the default, a file next to the working directory) suits one process; several workers on
one machine may share a SQLite file (WAL mode, a busy timeout), but replicas on several machines
need PostgreSQL. ``postgresql://`` URLs use the psycopg 3 driver. Parameters are hidden from SQL
logs and error messages (user comments may hold PHI). Synchronous: call it from a thread pool in
async code.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from cds.config import setting_default
from cds.errors import ServiceUnavailable

_CONNECT_TIMEOUT: float = setting_default("database_connect_timeout")
_POOL_SIZE: int = setting_default("database_pool_size")

if TYPE_CHECKING:
    from cds.config import Settings

log = logging.getLogger("cds.store")

#: Package data of the installed `cds` (a directory on disk: Alembic reads its scripts from there).
MIGRATIONS = Path(str(files("cds.store").joinpath("migrations")))
INITIAL_REVISION = "0001"
_MIGRATION_LOCK = 4_582_136  # PostgreSQL advisory lock key: one migrating process at a time


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be reached (or refused a statement): 503, try again later."""


def normalise_url(url: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and (not url.database or url.database == ":memory:")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout = 5000")  # other workers may hold the write lock briefly
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def make_engine(url: str, *, connect_timeout: float = _CONNECT_TIMEOUT, pool_size: int = _POOL_SIZE) -> Engine:
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        if is_memory_sqlite(parsed):  # one shared connection: every thread sees the same database
            return create_engine(
                parsed,
                connect_args={"check_same_thread": False},
                poolclass=StaticPool,
                hide_parameters=True,
            )
        database = parsed.database or ""
        if not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": connect_timeout},
            hide_parameters=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = max(1, round(connect_timeout))
    return create_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=2 * pool_size,
        pool_timeout=connect_timeout,
        connect_args=connect_args,
        hide_parameters=True,
    )


class Database:
    """The engine and session factory of one process (see the module docstring)."""

    def __init__(self, url: str, *, connect_timeout: float = _CONNECT_TIMEOUT, pool_size: int = _POOL_SIZE) -> None:
        self.url = normalise_url(url)
        self.connect_timeout = connect_timeout
        self.pool_size = pool_size
        self.engine = make_engine(url, connect_timeout=connect_timeout, pool_size=pool_size)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(
            settings.database_url,
            connect_timeout=settings.database_connect_timeout,
            pool_size=settings.database_pool_size,
        )

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()

    @property
    def shared_across_processes(self) -> bool:
        """False for an in-memory SQLite database (each process would have its own)."""
        return not is_memory_sqlite(self.url)

    def session(self) -> Session:
        return self.sessions()

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection; any database error becomes `DatabaseUnavailable` (503)."""
        try:
            with self.engine.connect() as connection:
                yield connection
        except SQLAlchemyError as exc:
            raise DatabaseUnavailable(f"the database is unavailable ({type(exc).__name__})") from None

    def ping(self) -> None:
        """Raise `DatabaseUnavailable` unless the database answers a trivial query."""
        with self.connect() as connection:
            connection.execute(text("SELECT 1"))

    def upgrade(self) -> None:
        """Apply the Alembic migrations up to head (idempotent; concurrent callers take turns).

        A database created before migrations existed (the feedback table made by ``create_all``)
        is stamped with the initial revision first, then upgraded."""
        from alembic import command
        from alembic.config import Config

        with self._migration_lock(), self.engine.begin() as connection:
            if self.backend == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            tables = set(inspect(connection).get_table_names())
            if "alembic_version" not in tables and "cds_feedback" in tables:
                log.info("stamping a pre-migration database", extra={"event": "store.stamp"})
                command.stamp(config, INITIAL_REVISION)
            command.upgrade(config, "head")

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """A file lock beside a SQLite database file (PostgreSQL uses an advisory lock)."""
        database = self.url.database or ""
        if self.backend != "sqlite" or is_memory_sqlite(self.url) or database.startswith("file:"):
            yield
            return
        lock_path = Path(database).expanduser().with_name(Path(database).name + ".migrate-lock")
        with open(lock_path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def dispose(self) -> None:
        self.engine.dispose()
