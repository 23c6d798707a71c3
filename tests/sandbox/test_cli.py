"""`python -m sandbox` and `cds sandbox` (the same `main`, found in the checkout): usage and failures, no Java."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cds import cli
from sandbox.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_python_m_sandbox_runs_from_the_root_of_the_checkout() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m sandbox")
    for option in ("--load", "--cohort", "--keep-running", "--disk", "--reset"):
        assert option in proc.stdout


def test_an_unreachable_server_is_an_error_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    # Not a local /fhir base, so nothing is started: attaching fails and says why.
    assert main(["--url", "http://127.0.0.1:9/not-fhir"]) == 1
    err = capsys.readouterr().err
    assert "error: no FHIR server answers at http://127.0.0.1:9/not-fhir/metadata" in err


def test_the_program_name_follows_the_caller(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"], prog="cds sandbox")
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: cds sandbox")


def test_cds_sandbox_runs_the_checkouts_developer_tool(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.checkout_root() == ROOT
    with pytest.raises(SystemExit) as exit_:
        cli.main(["sandbox", "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: cds sandbox")


def test_cds_sandbox_outside_a_checkout_says_it_is_a_developer_tool(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The installed wheel in a directory outside any checkout: tests/test_wheel.py runs that for real.
    monkeypatch.setattr(cli, "checkout_root", lambda start=None: None)
    assert cli.main(["sandbox", "--keep-running"]) == 2
    err = capsys.readouterr().err
    assert "developer tool" in err
    assert "python -m sandbox --help" in err
