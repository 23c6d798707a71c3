"""JWT ids in the database (`cds.store.replay`): new once, refused while live, shared by processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cds.store import Database, DatabaseUnavailable
from cds.store.replay import ReplayStore


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
    from sqlalchemy import text

    database = Database(postgres_url)
    database.upgrade()
    store = ReplayStore(database)
    try:
        assert store.claim("iss", "before", until=4e9)
        admin = Database(postgres_url)
        with admin.engine.begin() as connection:  # the server drops every other session of the database
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        admin.dispose()
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
