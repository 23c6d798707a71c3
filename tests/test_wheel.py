"""The wheel is the product only, and the installed `cds demo` works from any directory.

Builds the wheel from a copy of the checkout (`pip wheel --no-deps --no-build-isolation`: setuptools
from the dev extra), checks what it holds (`cds` and `cards` with the package data they read at run
time; no `sandbox/`, tests, fixtures or benchmarks), installs it without dependencies into a fresh
virtualenv, and runs that virtualenv's `cds` from a temporary directory outside the checkout.

The fresh virtualenv gets its dependencies from this project's virtualenv through a `.pth` line naming
its site-packages (a full `pip install` of the wheel takes about 130 s here). Site-packages added by
a `.pth` line are plain path entries: their own `.pth` files, among them the editable install's
import hook for this checkout, are not run, so `import cds` can only find the installed wheel (checked).
Runs in CI (`.ci/run`) like every test here; it needs no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Never copied into the build tree: virtualenvs, VCS data, build output, caches, Maven and npm output.
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "target",
    "node_modules",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "artifacts",
    "cds-population",
)


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the checkout (the build writes build/ and egg-info)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), "."],
        cwd=src,
    )
    (built,) = (tmp / "dist").glob("*.whl")
    return built


@dataclass(frozen=True)
class Installed:
    python: Path
    cds: Path
    site_packages: Path
    cwd: Path  # an empty directory outside the checkout
    env: dict[str, str]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            list(args), cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=600, check=False
        )
        if check:
            assert proc.returncode == 0, f"{args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel installed (no dependencies) in a new virtualenv; dependencies from this one."""
    tmp = tmp_path_factory.mktemp("installed")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        cwd=tmp,
    )
    site_packages = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp).strip()
    )
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site_packages / "zz-project-dependencies.pth").write_text("".join(f"{p}\n" for p in ours), encoding="utf-8")
    cwd = tmp / "elsewhere"
    cwd.mkdir()
    # No PYTHONPATH or PYTHONHOME pointing back into the checkout, no CDS_* settings from the test run.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "CDS_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return Installed(python=python, cds=venv / "bin" / "cds", site_packages=site_packages, cwd=cwd, env=env)


def test_wheel_holds_the_product_and_the_data_it_reads_at_run_time(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"cds", "cards"}
    for path in (
        "cds/service/demo_patients/base-candidate.json",  # `cds demo`'s patient
        "cds/store/migrations/env.py",
        "cds/store/migrations/script.py.mako",
        "cds/py.typed",
        "cards/py.typed",
    ):
        assert path in names, path
    # every module, every migration and every trial's data files
    for package in ("cds", "cards"):
        for source in (ROOT / package).rglob("*.py"):
            assert source.relative_to(ROOT).as_posix() in names, source
    for data in (ROOT / "cds" / "trials").glob("*/*.json"):
        assert data.relative_to(ROOT).as_posix() in names, data
    assert any(n.startswith("cds/store/migrations/versions/0001") for n in names)


def test_wheel_leaves_out_the_developer_tools_and_tests(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert not [n for n in names if n.split("/", 1)[0] in ("sandbox", "tests", "fixtures", "bench")]
    assert not [n for n in names if "sandbox" in n.split("/")[-1] or "pgtemp" in n or "/hapi/" in n]
    assert not [n for n in names if n.endswith((".java", "pom.xml"))]


def test_installed_cds_is_the_wheel_not_the_checkout(installed: Installed) -> None:
    probe = (
        "import importlib.util, cds, cards\n"
        "from cds.service.demo import DEFAULT_PATIENT\n"
        "from cds.store.database import MIGRATIONS\n"
        "print(cds.__file__)\nprint(cards.__file__)\nprint(DEFAULT_PATIENT)\nprint(MIGRATIONS)\n"
        "print(importlib.util.find_spec('sandbox'))\nprint(importlib.util.find_spec('tests'))\n"
    )
    *files, sandbox_spec, tests_spec = installed.run(str(installed.python), "-c", probe).stdout.split()
    assert len(files) == 4
    for path in files:
        assert Path(path).is_relative_to(installed.site_packages), path
        assert Path(path).exists(), path
    assert sandbox_spec == tests_spec == "None"


def test_installed_cds_demo_prints_the_card_from_any_directory(installed: Installed) -> None:
    out = installed.run(str(installed.cds), "demo").stdout
    assert "patient file base-candidate.json" in out
    assert "HTTP 200" in out
    assert "[info] Possible candidate for Sirolimus in active SLE (NCT04582136)" in out
    assert "SLE coded since 2022-03-15" in out  # the card's detail, rendered
    assert list(installed.cwd.iterdir()) == []  # nothing written where it was run


def test_installed_cds_sandbox_says_it_is_a_developer_tool(installed: Installed) -> None:
    proc = installed.run(str(installed.cds), "sandbox", "--help", check=False)
    assert proc.returncode == 2
    assert "developer tool" in proc.stderr
    assert "python -m sandbox" in proc.stderr
    assert proc.stdout == ""
