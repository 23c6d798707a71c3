"""Start and stop the benchmarked apps as uvicorn subprocesses on free loopback ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from bench.serve import REPO
from sandbox import free_port

SERVICE_ID = "nct04582136-prescreen"


class AppProcess:
    """``with AppProcess("service", env={...}, name="service-no-auth") as app: app.hook_url`` (a
    separate process, so the load generator never shares the server's event loop or GIL). `name`
    names the log file (``bench/out/logs/<name>.log``)."""

    def __init__(
        self,
        kind: str,
        *,
        env: dict[str, str] | None = None,
        workers: int = 1,
        name: str | None = None,
        log_dir: Path | None = None,
        shipped: bool = False,
    ) -> None:
        """`shipped`: the service as an operator runs it, ``cds serve --workers N`` (its own parent
        process, no ``/bench/stats``), instead of `bench.serve`."""
        if shipped and kind != "service":
            raise ValueError("only the service is shipped")
        self.shipped = shipped
        self.kind = kind
        self.workers = workers
        self.env = env or {}
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.hook_url = f"{self.base}/cds-services/{SERVICE_ID}"
        name = (name or kind) + (f"-{workers}w" if workers > 1 else "")
        self.log_path = (log_dir or REPO / "bench" / "out" / "logs") / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> AppProcess:
        program = ["cds.cli", "serve"] if self.shipped else ["bench.serve", self.kind]
        cmd = [sys.executable, "-m", *program, "--port", str(self.port), "--workers", str(self.workers)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(REPO), **self.env}
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self._proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.base}/health", timeout=1.0, trust_env=False).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.kind} did not start within {timeout:.0f} s; see {self.log_path}")

    def hook_log(self, since: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The service's own "hook call" log records written after byte offset `since`, and the new
        offset (the service logs fetchMs / evaluateMs / totalMs per call)."""
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return [], since
        rows = []
        for line in data[since:].splitlines():
            if line.startswith(b"{") and b'"hook call"' in line:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
        return rows, len(data)

    def fhir_stats(self) -> tuple[int, list[str]]:
        """The service's FHIR gateway: requests sent so far, and the latest request URLs."""
        r = httpx.get(f"{self.base}/bench/stats", timeout=5.0, trust_env=False)
        data = r.json()
        return int(data["fhirRequests"]), [str(u) for u in data["recentUrls"]]

    def fhir_requests(self) -> int:
        return self.fhir_stats()[0]

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> AppProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
