"""A throw-away local PostgreSQL server, for tests and benchmarks (never for production).

`TempPostgres().start()` finds the server binaries (``CDS_PG_BINDIR``, ``pg_config --bindir``, or
Debian's ``/usr/lib/postgresql/<version>/bin``), runs ``initdb`` into a temporary directory and
starts ``postgres`` on a free port of 127.0.0.1 (trust authentication, loopback only; the data
directory is deleted at `stop`). PostgreSQL refuses to run as root: as root, the cluster is owned
by and run as the ``postgres`` system user (the Debian package creates it). `create_database`
gives each test its own database. Raises `PostgresUnavailable` with the reason when any of this
cannot be done.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

from sandbox.launcher import free_port

SUPERUSER = "cds"


class PostgresUnavailable(RuntimeError):
    pass


def find_bindir() -> Path:
    configured = os.environ.get("CDS_PG_BINDIR")
    candidates: list[Path] = [Path(configured)] if configured else []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(Path(out.stdout.strip()))
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += debian
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")


class TempPostgres:
    """``with TempPostgres() as pg: pg.create_database()`` (see the module docstring)."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable  # False: fsync off (tests); True: the server's defaults (benchmarks)
        self.port = free_port()
        self.directory: Path | None = None
        self._user: str | None = None

    @property
    def admin_url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, args: list[str], timeout: float = 60.0) -> None:
        try:
            subprocess.run(  # noqa: S603 - fixed argv, no shell
                args, capture_output=True, text=True, timeout=timeout, check=True, user=self._user
            )
        except subprocess.CalledProcessError as exc:
            tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-3:]
            raise PostgresUnavailable(f"{Path(args[0]).name} failed: {' | '.join(tail)}") from None
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostgresUnavailable(f"{Path(args[0]).name} failed: {type(exc).__name__}: {exc}") from None

    def start(self) -> TempPostgres:
        bindir = find_bindir()
        directory = Path(tempfile.mkdtemp(prefix="cds-pg-"))
        self.directory = directory
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                self.stop()
                raise PostgresUnavailable("running as root and there is no 'postgres' user to run the server") from None
            os.chown(directory, owner.pw_uid, owner.pw_gid)
            self._user = "postgres"
        data = directory / "data"
        try:
            self._run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    SUPERUSER,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--no-instructions",
                ],
                timeout=120,
            )
            options = f"-p {self.port} -k {directory} -c listen_addresses=127.0.0.1 -c max_connections=200"
            if not self.durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            self._run(
                [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(directory / "log"), "-w", "start"],
                timeout=60,
            )
        except PostgresUnavailable:
            self.stop()
            raise
        return self

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres") as conn:
            conn.autocommit = True
            conn.execute(statement.encode())

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; its SQLAlchemy URL."""
        name = name or f"cds_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        directory, self.directory = self.directory, None
        if directory is None:
            return
        data = directory / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(PostgresUnavailable):
                self._run([str(find_bindir() / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(directory, ignore_errors=True)

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
