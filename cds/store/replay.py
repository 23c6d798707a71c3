"""JWT ids seen, in the database: a token replayed against another worker or replica is refused.

`ReplayStore.claim(issuer, jti, until)` records ``(iss, jti)`` (hashed: the table holds no token
content) until ``until`` and says whether it was new. One atomic statement does it, an
``INSERT ... ON CONFLICT DO UPDATE ... WHERE expires_at < now RETURNING key`` (a row comes back
only when inserted or taken over from an expired entry): the primary key makes a concurrent
insert from another process lose (it sees the conflict after the winner commits), and an expired
row is reused. Expired rows are deleted at most once per `purge_every` seconds per process.

On PostgreSQL the claim is one server-side prepared statement on a pooled psycopg connection (no
SQLAlchemy result machinery): it runs on every authenticated call, so its CPU cost is the hook's.
The commit stays durable (``synchronous_commit`` as the server has it). Any database error, on
either backend, is `DatabaseUnavailable` (503): fail closed, never "not seen".
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Executable, Float, String, bindparam, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from cds.store.base import Base
from cds.store.database import Database, DatabaseUnavailable

Clock = Callable[[], float]


class ReplayRow(Base):
    __tablename__ = "cds_jwt_replay"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


def replay_key(issuer: str, jti: str) -> str:
    return hashlib.sha256(f"{len(issuer)}:{issuer}|{jti}".encode("utf-8", "surrogatepass")).hexdigest()


class ReplayStore:
    """Seen ``(iss, jti)`` pairs until their expiry, shared through the database. Synchronous."""

    def __init__(self, database: Database, *, clock: Clock = time.time, purge_every: float = 60.0) -> None:
        self.database = database
        self._clock = clock
        self._purge_every = purge_every
        self._next_purge = -1.0
        if database.backend not in ("postgresql", "sqlite"):
            raise ValueError(f"unsupported database for the JWT replay store: {database.backend}")
        self._upsert = self._statement(database.backend)
        self._dbapi_error: type[Exception] = getattr(database.engine.dialect.dbapi, "Error", DBAPIError)

    #: The PostgreSQL claim, as `_statement` builds it, in the driver's parameter style.
    _PG_CLAIM = (
        "INSERT INTO cds_jwt_replay (key, expires_at) VALUES (%(key)s, %(until)s) "
        "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at "
        "WHERE cds_jwt_replay.expires_at < %(now)s RETURNING cds_jwt_replay.key"
    )
    _PG_PURGE = "DELETE FROM cds_jwt_replay WHERE expires_at < %(now)s"

    @staticmethod
    def _statement(backend: str) -> Executable:
        """Insert, or take over an expired row; a live row is left alone (no row comes back). Built
        once, with bound parameters (``key``, ``until``, ``now``)."""
        values: dict[str, Any] = {"key": bindparam("key"), "expires_at": bindparam("until")}
        live = ReplayRow.expires_at < bindparam("now")
        if backend == "postgresql":
            pg = postgresql.insert(ReplayRow).values(values)
            return pg.on_conflict_do_update(
                index_elements=[ReplayRow.key], set_={"expires_at": pg.excluded.expires_at}, where=live
            ).returning(ReplayRow.key)
        lite = sqlite.insert(ReplayRow).values(values)
        return lite.on_conflict_do_update(
            index_elements=[ReplayRow.key], set_={"expires_at": lite.excluded.expires_at}, where=live
        ).returning(ReplayRow.key)

    def claim(self, issuer: str, jti: str, until: float) -> bool:
        """True if ``(issuer, jti)`` was not seen (or only expired): now remembered until `until`.
        False if a live entry exists. `DatabaseUnavailable` if the database fails (never "new")."""
        now = self._clock()
        params = {"key": replay_key(issuer, jti), "until": until, "now": now}
        if self.database.backend == "postgresql":
            return self._claim_postgresql(params, now)
        try:
            with self.database.engine.begin() as connection:
                fresh = connection.execute(self._upsert, params).first() is not None  # inserted or taken over
                if now >= self._next_purge:
                    self._next_purge = now + self._purge_every
                    connection.execute(delete(ReplayRow).where(ReplayRow.expires_at < now))
        except SQLAlchemyError as exc:
            raise DatabaseUnavailable(f"the database is unavailable ({type(exc).__name__})") from None
        return fresh

    def _claim_postgresql(self, params: dict[str, Any], now: float) -> bool:
        purge = now >= self._next_purge
        if purge:
            self._next_purge = now + self._purge_every
        try:
            connection = self.database.engine.raw_connection()  # pooled, pre-pinged
        except (SQLAlchemyError, self._dbapi_error) as exc:
            raise DatabaseUnavailable(f"the database is unavailable ({type(exc).__name__})") from None
        try:
            driver: Any = connection.driver_connection
            with driver.cursor() as cursor:
                cursor.execute(self._PG_CLAIM, params, prepare=True)
                fresh = cursor.fetchone() is not None  # inserted or taken over
                if purge:
                    cursor.execute(self._PG_PURGE, {"now": now}, prepare=True)
            driver.commit()
        except self._dbapi_error as exc:
            connection.invalidate()  # its state is unknown: never reused
            raise DatabaseUnavailable(f"the database is unavailable ({type(exc).__name__})") from None
        finally:
            connection.close()  # back to the pool
        return fresh

    def count(self) -> int:
        """Rows held (expired ones included until the next purge)."""
        with self.database.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(ReplayRow)).scalar_one())
