"""JWT ids in the database (`cds.store.replay`): new once, refused while live, shared by processes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cds.store import Database, DatabaseUnavailable
from cds.store.replay import ReplayStore


def drop_other_sessions(postgres_url: str) -> None:
    """The server drops every other session of the database (as a restart or an admin would)."""
    from sqlalchemy import text

    admin = Database(postgres_url)
    with admin.engine.begin() as connection:
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path}/r.sqlite3" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    db = Database(url)
    db.upgrade()
    yield db
    db.dispose()


def test_a_jti_is_new_once_then_refused_until_it_expires(database: Database) -> None:
    now = [1000.0]
    store = ReplayStore(database, clock=lambda: now[0])
    assert store.claim("iss", "j1", until=1300.0)
    assert not store.claim("iss", "j1", until=1300.0)
    assert store.claim("other-iss", "j1", until=1300.0), "a jti is per issuer"
    now[0] = 1301.0
    assert store.claim("iss", "j1", until=1600.0), "an expired entry is taken over"
    assert not store.claim("iss", "j1", until=1600.0)


def test_expired_rows_are_purged(database: Database) -> None:
    now = [1000.0]
    store = ReplayStore(database, clock=lambda: now[0], purge_every=0.0)
    for i in range(50):
        assert store.claim("iss", f"j{i}", until=1100.0)
    assert store.count() == 50
    now[0] = 2000.0
    assert store.claim("iss", "late", until=2100.0)
    assert store.count() == 1


def test_two_stores_on_one_database_share_what_they_saw(database: Database) -> None:
    # two processes: each has its own engine and store on the same database
    other = Database(database.url.render_as_string(hide_password=False))
    try:
        assert ReplayStore(database).claim("iss", "shared", until=4e9)
        assert not ReplayStore(other).claim("iss", "shared", until=4e9)
    finally:
        other.dispose()


def test_concurrent_claims_of_one_jti_have_exactly_one_winner(postgres_url: str) -> None:
    databases = [Database(postgres_url) for _ in range(8)]
    databases[0].upgrade()
    results: list[bool] = []
    barrier = threading.Barrier(len(databases))

    def claim(db: Database) -> None:
        store = ReplayStore(db)
        barrier.wait()
        results.append(store.claim("iss", "race", until=4e9))

    threads = [threading.Thread(target=claim, args=(db,)) for db in databases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for db in databases:
        db.dispose()
    assert sorted(results) == [False] * 7 + [True]


def test_an_unreachable_database_is_unavailable_never_new() -> None:
    from sandbox import free_port

    database = Database(f"postgresql://cds@127.0.0.1:{free_port()}/none", connect_timeout=1.0)
    with pytest.raises(DatabaseUnavailable):
        ReplayStore(database).claim("iss", "j", until=4e9)
    with pytest.raises(DatabaseUnavailable):
        database.ping()
    database.dispose()


def test_a_lost_postgresql_connection_is_replaced_and_replays_stay_refused(postgres_url: str) -> None:
    """The PostgreSQL claim runs on a raw pooled connection: one the server dropped is not reused."""
    database = Database(postgres_url)
    database.upgrade()
    store = ReplayStore(database)
    try:
        assert store.claim("iss", "before", until=4e9)
        drop_other_sessions(postgres_url)
        results = []
        for _ in range(2):  # the dropped connection fails closed at most once, then a new one serves
            try:
                results.append(store.claim("iss", "after", until=4e9))
            except DatabaseUnavailable:
                results.append(None)
        assert results.count(True) == 1, results  # [True, False] or [None, True]
        assert not store.claim("iss", "before", until=4e9), "still remembered"
    finally:
        database.dispose()


# ------------------------------------------------------------------------------------------------
# `aclaim`: what the service calls on its event loop


async def test_aclaim_is_new_once_then_refused_and_shares_what_claim_saw(database: Database) -> None:
    now = [1000.0]
    store = ReplayStore(database, clock=lambda: now[0])
    try:
        assert await store.aclaim("iss", "a1", until=1300.0)
        assert not await store.aclaim("iss", "a1", until=1300.0)
        assert not store.claim("iss", "a1", until=1300.0), "the synchronous claim sees it too"
        assert store.claim("iss", "a2", until=1300.0)
        assert not await store.aclaim("iss", "a2", until=1300.0)
        now[0] = 1301.0
        assert await store.aclaim("iss", "a1", until=1600.0), "an expired entry is taken over"
    finally:
        await store.aclose()


async def test_aclaim_purges_expired_rows(database: Database) -> None:
    now = [1000.0]
    store = ReplayStore(database, clock=lambda: now[0], purge_every=0.0)
    try:
        for i in range(20):
            assert await store.aclaim("iss", f"p{i}", until=1100.0)
        now[0] = 2000.0
        assert await store.aclaim("iss", "late", until=2100.0)
        assert store.count() == 1
    finally:
        await store.aclose()


async def test_concurrent_aclaims_of_one_jti_have_exactly_one_winner(postgres_url: str) -> None:
    databases = [Database(postgres_url) for _ in range(4)]
    databases[0].upgrade()
    stores = [ReplayStore(db) for db in databases]
    try:
        # 4 processes' stores, 3 concurrent calls each, all on one event loop
        results = await asyncio.gather(*(s.aclaim("iss", "async-race", until=4e9) for s in stores for _ in range(3)))
    finally:
        for s, db in zip(stores, databases, strict=True):
            await s.aclose()
            db.dispose()
    assert sorted(results) == [False] * 11 + [True]


async def test_aclaim_on_an_unreachable_database_is_unavailable_never_new() -> None:
    from sandbox import free_port

    database = Database(f"postgresql://cds@127.0.0.1:{free_port()}/none", connect_timeout=1.0)
    store = ReplayStore(database)
    try:
        with pytest.raises(DatabaseUnavailable):
            await store.aclaim("iss", "j", until=4e9)
    finally:
        await store.aclose()
        database.dispose()


async def test_aclaim_replaces_a_connection_the_server_dropped_without_failing_the_call(postgres_url: str) -> None:
    """No ping before each use: a pooled connection the server dropped fails on use, is discarded,
    and the claim is made on a fresh one; replays stay refused."""
    database = Database(postgres_url)
    database.upgrade()
    store = ReplayStore(database)
    try:
        assert await store.aclaim("iss", "async-before", until=4e9)
        drop_other_sessions(postgres_url)
        assert await store.aclaim("iss", "async-after", until=4e9)
        assert not await store.aclaim("iss", "async-before", until=4e9), "still remembered"
        assert not await store.aclaim("iss", "async-after", until=4e9)
    finally:
        await store.aclose()
        database.dispose()


async def test_a_jti_seen_only_after_a_lost_connection_is_unavailable_not_replayed(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt may have recorded the id before its connection was lost: the retry's "seen"
    is then ambiguous, so the answer is 503 (DatabaseUnavailable), never a 401 for a replay."""
    from cds.store import replay

    database = Database(postgres_url)
    database.upgrade()
    store = ReplayStore(database)
    real = ReplayStore._aclaim_once
    attempts: list[bool] = []

    async def recorded_then_lost(self: ReplayStore, *args: Any) -> bool:
        fresh = await real(self, *args)
        attempts.append(fresh)
        if len(attempts) == 1:
            raise replay._ConnectionLost("OperationalError")  # the answer never came back
        return fresh

    monkeypatch.setattr(ReplayStore, "_aclaim_once", recorded_then_lost)
    try:
        with pytest.raises(DatabaseUnavailable):
            await store.aclaim("iss", "lost-answer", until=4e9)
        assert attempts == [True, False]
    finally:
        await store.aclose()
        database.dispose()
