"""Serving the app with uvicorn: ``cds serve [--workers N]`` (`serve`), kept apart from the app
itself (`cds.service.app`) so the parent process of several workers stays small: it imports the
settings, the database layer and uvicorn, never the service, the engine or the FHIR models (each
worker builds its own app: `cds.service.app.app_factory`)."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

from cds.config import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_WORKERS, Settings
from cds.store.database import Database, DatabaseUnavailable

#: Set by `serve` in the parent of several workers once it has migrated the database: the workers
#: then skip the migration (and never import Alembic, ~9 MB per worker). Not a setting: process
#: plumbing between `serve` and `app_factory`.
MIGRATED_BY_PARENT = "_CDS_SERVE_MIGRATED"


def migrate_once(database_url: str) -> None:
    """Apply the migrations once before several workers start (``cds db upgrade`` in a short-lived
    child process, so neither this long-lived parent nor the workers import Alembic), then tell the
    workers (`MIGRATED_BY_PARENT`: they skip it). `DatabaseUnavailable` if it fails."""
    import subprocess

    env = {**os.environ, "CDS_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "cds.cli", "db", "upgrade"], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise DatabaseUnavailable(f"the database migration failed: {tail}")
    os.environ[MIGRATED_BY_PARENT] = database_url


def worker_settings() -> Settings:
    """The settings of one worker process: the environment's, without the start-up migration when
    the parent process has already applied it (`MIGRATED_BY_PARENT`)."""
    settings = Settings()
    if settings.database_migrate and os.environ.get(MIGRATED_BY_PARENT) == settings.database_url:
        settings = settings.model_copy(update={"database_migrate": False})
    return settings


def serve(
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, workers: int = DEFAULT_WORKERS, settings: Settings | None = None
) -> None:
    """Run the service with uvicorn (blocking). ``cds serve [--host] [--port] [--workers]`` calls this.

    With ``workers > 1`` uvicorn starts that many worker processes sharing the listening socket,
    each building its own app from the environment's settings (`app_factory`). Everything shared
    between workers (feedback, JWT ids seen) is in the database, migrated here once before the
    workers start; an in-memory SQLite database cannot be shared and is refused. This process
    then becomes uvicorn's supervisor of the workers (`supervisor_argv`, by exec): it never returns."""
    settings = settings or Settings()
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if workers == 1:
        import uvicorn

        from cds.service.app import create_app, prepare_process

        app = create_app(settings)
        prepare_process()
        uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(), proxy_headers=True)
        return
    database = Database.from_settings(settings)
    try:
        if not database.shared_across_processes:
            raise ValueError("several workers need a shared database: CDS_DATABASE_URL is an in-memory SQLite")
        if database.backend == "sqlite":
            logging.getLogger("cds.service").warning(
                "several workers share a SQLite file: fine on one machine; replicas need PostgreSQL",
                extra={"event": "store.sqlite_workers"},
            )
    finally:
        database.dispose()
    if settings.database_migrate:
        migrate_once(settings.database_url)
    # This process has imported the settings, the database layer and the CLI (about 70 MB) that the
    # supervisor of the workers never uses: it becomes a bare uvicorn supervisor instead (same pid,
    # so a process manager's signals reach it; about 25 MB). Each worker builds its app from the
    # environment, which carries the settings and `MIGRATED_BY_PARENT`.
    exec_process(supervisor_argv(host, port, workers, settings.log_level))


def supervisor_argv(host: str, port: int, workers: int, log_level: str) -> list[str]:
    """The command line of the workers' supervisor: uvicorn's own, serving `app_factory`."""
    return [
        sys.executable, "-m", "uvicorn", "cds.service.app:app_factory", "--factory",
        "--workers", str(workers), "--host", host, "--port", str(port),
        "--log-level", log_level.lower(), "--proxy-headers",
    ]  # fmt: skip


def exec_process(argv: list[str]) -> NoReturn:
    """Replace this process with `argv` (`os.execv`; the environment is kept)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # noqa: S606  (our own interpreter and arguments, no shell)
