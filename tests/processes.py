"""Real service processes for tests: ``cds serve`` subprocesses on free loopback ports.

`ServiceProcesses.start(n, database_url, env)` starts `n` processes of the service as an operator
would (``python -m cds.cli serve --port P [--workers W]``, settings from ``CDS_*`` environment
variables), waits until each answers ``/health``, and returns their base URLs; `stop_all` ends
them. Used through the ``service_processes`` fixture (tests/conftest.py). Each process writes its
log to a file in the test's temporary directory (named in failures).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from sandbox import free_port

REPO = Path(__file__).resolve().parents[1]


class ServiceProcesses:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(
        self,
        n: int,
        database_url: str,
        env: dict[str, str] | None = None,
        *,
        workers: int = 1,
        timeout: float = 90.0,
    ) -> list[str]:
        """Start `n` service processes sharing `database_url`; their base URLs (http://127.0.0.1:P)."""
        started: list[tuple[subprocess.Popen[bytes], Path, str]] = []
        for _ in range(n):
            port = free_port()
            log_path = self.log_dir / f"service-{port}.log"
            full_env = {
                **os.environ,
                "CDS_DATABASE_URL": database_url,
                "CDS_LOG_LEVEL": "WARNING",
                **(env or {}),
            }
            cmd = [sys.executable, "-m", "cds.cli", "serve", "--port", str(port), "--workers", str(workers)]
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=full_env)
            self._procs.append((proc, log_path))
            started.append((proc, log_path, f"http://127.0.0.1:{port}"))
        deadline = time.monotonic() + timeout
        for proc, log_path, base in started:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"service exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
                try:
                    if httpx.get(f"{base}/health", timeout=1.0, trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"service did not start in {timeout:.0f} s: {log_path.read_text()[-2000:]}")
                time.sleep(0.2)
        return [base for _, _, base in started]

    def pids(self) -> list[int]:
        """The process ids of the services started (each the parent of its workers)."""
        return [proc.pid for proc, _ in self._procs]

    def stop_all(self) -> None:
        procs, self._procs = self._procs, []
        for proc, _ in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
