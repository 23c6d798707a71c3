"""`cds db upgrade|current` and `cds serve --workers` argument checks."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from cds.cli import build_parser, database_command


def test_db_upgrade_then_current_print_the_head_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{tmp_path}/cli.sqlite3")
    out = io.StringIO()
    assert database_command("current", out) == 0
    assert out.getvalue().strip() == "(empty)"
    out = io.StringIO()
    assert database_command("upgrade", out) == 0
    head = out.getvalue().strip()
    assert head.isdigit()
    out = io.StringIO()
    database_command("current", out)
    assert out.getvalue().strip() == head


@pytest.mark.parametrize("workers", ["0", "-1", "two"])
def test_serve_refuses_a_worker_count_below_one(workers: str) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--workers", workers])


def test_serve_takes_a_worker_count() -> None:
    assert build_parser().parse_args(["serve", "--workers", "4"]).workers == 4


def test_several_workers_on_an_in_memory_database_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from cds.config import Settings
    from cds.service.serving import serve

    with pytest.raises(ValueError, match="shared database"):
        serve(workers=2, settings=Settings(database_url="sqlite://"))
