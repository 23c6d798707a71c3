"""JWT ids seen, in the database: a token replayed against another worker or replica is refused.

`ReplayStore.claim(issuer, jti, until)` records ``(iss, jti)`` (hashed: the table holds no token
content) until ``until`` and says whether it was new. One atomic statement does it, an
``INSERT ... ON CONFLICT DO UPDATE ... WHERE expires_at < now RETURNING key`` (a row comes back
only when inserted or taken over from an expired entry): the primary key makes a concurrent
insert from another process lose (it sees the conflict after the winner commits), and an expired
row is reused. Expired rows are deleted at most once per `purge_every` seconds per process.

It runs on every authenticated call, so its cost is the hook's. The service calls `aclaim`: on
PostgreSQL one server-side prepared statement in autocommit (one round trip, durable as the server's
``synchronous_commit`` has it) on a psycopg async connection from a per-process pool
(`psycopg_pool`), on the event loop itself: no thread hop, no SQLAlchemy machinery, no ping before
each use. A pooled connection the server dropped fails on use; it is discarded and the claim is
tried once more on a fresh one. If that retry finds the id already seen, the first attempt may have
recorded it before the connection was lost: the answer is then `DatabaseUnavailable`, not "seen".
On SQLite `aclaim` runs `claim` in a worker thread. Any database error, on either backend, is
`DatabaseUnavailable` (503): fail closed, never "not seen".
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any

import anyio.to_thread
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import Executable, Float, String, bindparam, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from cds.store.base import Base
from cds.store.database import Database, DatabaseUnavailable

Clock = Callable[[], float]


class _ConnectionLost(Exception):
    """A pooled connection turned out to be dropped by the server (it is discarded)."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


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
        self._async_pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._async_pool_lock = asyncio.Lock()

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

    async def aclaim(self, issuer: str, jti: str, until: float) -> bool:
        """`claim`, for the event loop (see the module docstring)."""
        if self.database.backend != "postgresql":
            return await anyio.to_thread.run_sync(self.claim, issuer, jti, until)
        now = self._clock()
        params = {"key": replay_key(issuer, jti), "until": until, "now": now}
        purge = now >= self._next_purge
        if purge:
            self._next_purge = now + self._purge_every
        try:
            pool = await self._pool()
            try:
                return await self._aclaim_once(pool, params, purge)
            except _ConnectionLost:
                pass  # a connection the server dropped while it sat in the pool: once more, on a fresh one
            try:
                fresh = await self._aclaim_once(pool, params, purge)
            except _ConnectionLost as lost:
                raise DatabaseUnavailable(f"the database is unavailable ({lost.error})") from None
        except (psycopg.Error, PoolTimeout) as exc:
            raise DatabaseUnavailable(f"the database is unavailable ({type(exc).__name__})") from None
        if not fresh:
            raise DatabaseUnavailable("the database connection was lost during the JWT id check")
        return fresh

    async def _aclaim_once(
        self, pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]], params: dict[str, Any], purge: bool
    ) -> bool:
        connection: psycopg.AsyncConnection[Any] | None = None
        try:
            async with pool.connection() as connection:
                cursor = await connection.execute(self._PG_CLAIM, params, prepare=True)
                fresh = await cursor.fetchone() is not None  # inserted or taken over
                if purge:
                    await connection.execute(self._PG_PURGE, {"now": params["now"]}, prepare=True)
                return fresh
        except psycopg.OperationalError as exc:
            if connection is not None and connection.broken:
                raise _ConnectionLost(type(exc).__name__) from None  # the pool discards it
            raise

    async def _pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        """This process's async pool (opened on first use, on the running loop)."""
        if self._async_pool is None:
            async with self._async_pool_lock:
                if self._async_pool is None:
                    url = self.database.url.set(drivername="postgresql")
                    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
                        url.render_as_string(hide_password=False),
                        min_size=0,
                        max_size=self.database.pool_size,
                        timeout=self.database.connect_timeout,
                        kwargs={"autocommit": True, "connect_timeout": max(1, round(self.database.connect_timeout))},
                        open=False,
                        name="cds-jwt-replay",
                    )
                    await pool.open()
                    self._async_pool = pool
        return self._async_pool

    async def aclose(self) -> None:
        """Close the async pool (the service's shutdown)."""
        pool, self._async_pool = self._async_pool, None
        if pool is not None:
            await pool.close()

    def count(self) -> int:
        """Rows held (expired ones included until the next purge)."""
        with self.database.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(ReplayRow)).scalar_one())
