"""Build and run the local HAPI FHIR R4 server of ``sandbox/hapi``.

The server is a real HAPI FHIR 8.8 JPA server on an in-memory H2 database, built from the small
Maven module beside this file (``sandbox/hapi``, see its ``pom.xml``). It needs ``java`` (17+) and
``mvn`` on the PATH; the first build downloads about 350 MB of jars into ``~/.m2``.

    with HapiSandbox() as fhir:             # builds if needed, starts, waits for /metadata
        ...                                  # talk to fhir.base_url, e.g. http://127.0.0.1:8090/fhir
    # the server is stopped here (unless we attached to one that was already running)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final
from urllib.parse import urlsplit

import httpx

from sandbox.errors import SandboxError

__all__ = [
    "CLASSPATH_FILE",
    "DEFAULT_PORT",
    "DEFAULT_STARTUP_TIMEOUT",
    "HAPI_DIR",
    "TARGET_DIR",
    "HapiSandbox",
    "build_launcher",
    "free_port",
]

#: The Maven module, beside this package (a developer checkout: the sandbox is not in the wheel).
HAPI_DIR: Final = Path(__file__).resolve().parent / "hapi"
TARGET_DIR: Final = HAPI_DIR / "target"
CLASSPATH_FILE: Final = TARGET_DIR / "classpath.txt"
MAIN_CLASS: Final = "cds.sandbox.hapi.HapiSandboxServer"
#: Touched after each successful build (Maven leaves classpath.txt alone when it is unchanged).
BUILD_STAMP: Final = TARGET_DIR / ".build-stamp"
MAIN_CLASS_FILE: Final = TARGET_DIR / "classes" / "cds" / "sandbox" / "hapi" / "HapiSandboxServer.class"

DEFAULT_PORT: Final = 8090
FHIR_VERSION: Final = "4.0.1"
DEFAULT_STARTUP_TIMEOUT: Final = 180.0
#: Heap and GC for the server JVM; override with the HAPI_SANDBOX_JAVA_OPTS environment variable.
DEFAULT_JAVA_OPTS: Final = ("-Xmx768m", "-XX:+UseSerialGC")

FHIR_JSON: Final = "application/fhir+json"


# --------------------------------------------------------------------------------------------
# Build


def _build_inputs() -> list[Path]:
    return [HAPI_DIR / "pom.xml", *(p for p in (HAPI_DIR / "src").rglob("*") if p.is_file())]


def _build_is_current() -> bool:
    """True if the last build through :func:`build_launcher` is newer than every build input and
    every jar on the written classpath is still in the local Maven repository."""
    if not (BUILD_STAMP.is_file() and CLASSPATH_FILE.is_file() and MAIN_CLASS_FILE.is_file()):
        return False
    built = BUILD_STAMP.stat().st_mtime
    if any(p.stat().st_mtime > built for p in _build_inputs()):
        return False
    jars = [j for j in CLASSPATH_FILE.read_text().strip().split(os.pathsep) if j]
    return bool(jars) and all(Path(j).exists() for j in jars)


def _require_tool(name: str, env_home: str | None = None) -> str:
    if env_home:
        candidate = Path(os.environ.get(env_home, "")) / "bin" / name
        if os.environ.get(env_home) and candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise SandboxError(
            f"`{name}` was not found on the PATH; the HAPI sandbox needs Java 17+ and Maven 3.8+ "
            "(e.g. `apt-get install openjdk-17-jdk-headless maven`)."
        )
    return found


def build_launcher(force: bool = False) -> Path:
    """Build ``sandbox/hapi`` with Maven unless its output is already up to date.

    Returns the classpath file (``sandbox/hapi/target/classpath.txt``). Raises :class:`SandboxError`
    if ``mvn`` or ``java`` is missing or the build fails (with the tail of Maven's output).
    """
    _require_tool("java", "JAVA_HOME")
    if not force and _build_is_current():
        return CLASSPATH_FILE
    mvn = _require_tool("mvn", "MAVEN_HOME")
    TARGET_DIR.mkdir(parents=True, exist_ok=True)
    # Serialise concurrent builds (e.g. several test processes starting at once).
    with open(TARGET_DIR / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and _build_is_current():
            return CLASSPATH_FILE
        cmd = [mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(HAPI_DIR / "pom.xml"), "package"]
        build_started = time.time()
        log_path = TARGET_DIR / "maven-build.log"
        with open(log_path, "w") as log:
            # Fixed argv, no shell.
            proc = subprocess.run(  # noqa: S603
                cmd, stdout=log, stderr=subprocess.STDOUT, cwd=HAPI_DIR, check=False
            )
        if proc.returncode == 0 and CLASSPATH_FILE.is_file() and MAIN_CLASS_FILE.is_file():
            BUILD_STAMP.touch()
            # Stamp with the start time: an input edited during the build makes it stale again.
            os.utime(BUILD_STAMP, (build_started, build_started))
        if not _build_is_current():
            raise SandboxError(
                f"Maven build failed (exit {proc.returncode}): {shlex.join(cmd)}\n"
                f"--- last lines of {log_path} ---\n{_tail(log_path)}"
            )
    return CLASSPATH_FILE


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------------------------
# Server process


def _metadata_ok(base_url: str, timeout: float = 15.0) -> bool:
    """True if ``{base_url}/metadata`` answers 200 with an R4 CapabilityStatement."""
    try:
        r = httpx.get(f"{base_url}/metadata", timeout=timeout, headers={"Accept": FHIR_JSON})
    except httpx.HTTPError:
        return False
    if r.status_code != 200:
        return False
    try:
        body = r.json()
    except ValueError:
        return False
    if body.get("fhirVersion") != FHIR_VERSION:
        raise SandboxError(
            f"{base_url} is a FHIR server, but version {body.get('fhirVersion')!r}, not R4 {FHIR_VERSION}"
        )
    return True


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class HapiSandbox:
    """A HAPI FHIR server on 127.0.0.1, started in the background (or attached to).

    ``HapiSandbox(port=8090)`` starts a server on that port unless one already answers there, in
    which case it attaches to it. ``HapiSandbox(base_url="http://host:port/fhir")`` attaches to that
    server if ``/metadata`` answers, and otherwise starts one (only possible for a 127.0.0.1 or
    localhost URL). A server we attached to is never stopped by :meth:`stop`.

    Use as a context manager, or call :meth:`start` and :meth:`stop` (the server is also stopped
    if the Python process exits, because it exits when its stdin pipe closes).
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        *,
        base_url: str | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        default_page_size: int = 50,
        max_page_size: int = 500,
        java_opts: Sequence[str] | None = None,
        log_path: Path | None = None,
        disk: bool = False,
        bulk_load: bool = False,
    ) -> None:
        if base_url is not None:
            base_url = base_url.rstrip("/")
            parts = urlsplit(base_url)
            self._startable = parts.hostname in ("127.0.0.1", "localhost") and parts.path == "/fhir"
            port = parts.port or 80
        else:
            self._startable = True
            base_url = f"http://127.0.0.1:{port}/fhir"
        self.port = port
        self._base_url = base_url
        self.startup_timeout = startup_timeout
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        env_opts = os.environ.get("HAPI_SANDBOX_JAVA_OPTS")
        self.java_opts = list(
            java_opts if java_opts is not None else (shlex.split(env_opts) if env_opts else DEFAULT_JAVA_OPTS)
        )
        self.log_path = log_path or TARGET_DIR / f"hapi-sandbox-{port}.log"
        #: H2 on disk (under target/, emptied at each start) instead of in memory: in-memory data
        #: lives on the Java heap (~15 KB per resource), so use this beyond ~10,000 cohort patients.
        self.disk = disk
        self.db_dir = TARGET_DIR / f"h2-{port}"
        #: HAPI's mass ingestion mode and conditional-reference cache, for loading a large population.
        self.bulk_load = bulk_load
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.attached = False
        self.startup_seconds: float | None = None

    @property
    def base_url(self) -> str:
        """FHIR base, e.g. ``http://127.0.0.1:8090/fhir`` (no trailing slash)."""
        return self._base_url

    @property
    def pid(self) -> int | None:
        """Process id of the server we started (None if attached or not running)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self.attached or (self._proc is not None and self._proc.poll() is None)

    def command(self, classpath_file: Path = CLASSPATH_FILE) -> list[str]:
        """The java command line that starts the server."""
        java = _require_tool("java", "JAVA_HOME")
        classpath = os.pathsep.join([str(TARGET_DIR / "classes"), classpath_file.read_text().strip()])
        return [
            java,
            *self.java_opts,
            "-Dhapi.sandbox.exitOnStdinEof=true",
            "-cp",
            classpath,
            MAIN_CLASS,
            f"--hapi.sandbox.port={self.port}",
            f"--hapi.sandbox.default-page-size={self.default_page_size}",
            f"--hapi.sandbox.max-page-size={self.max_page_size}",
            *([f"--hapi.sandbox.jdbc-url=jdbc:h2:file:{self.db_dir / 'hapi'}"] if self.disk else []),
            *(["--hapi.sandbox.bulk-load=true"] if self.bulk_load else []),
        ]

    def start(self) -> HapiSandbox:
        """Attach to a running server, or build and start one and wait until it is ready."""
        if self.running:
            return self
        if _metadata_ok(self.base_url):
            self.attached = True
            return self
        if not self._startable:
            raise SandboxError(
                f"no FHIR server answers at {self.base_url}/metadata (and it is not a local URL we can start)"
            )
        if _port_in_use(self.port):
            raise SandboxError(
                f"port {self.port} is in use by something that is not an R4 FHIR server at {self.base_url}"
            )
        classpath_file = build_launcher()
        cmd = self.command(classpath_file)
        if self.disk:
            shutil.rmtree(self.db_dir, ignore_errors=True)  # start empty, like the in-memory database
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        started = time.monotonic()
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            cmd,
            cwd=HAPI_DIR,
            # Kept open for the server's lifetime: when this process dies the pipe closes and the
            # server exits (-Dhapi.sandbox.exitOnStdinEof), so no orphaned JVM holds the port.
            stdin=subprocess.PIPE,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: Ctrl-C in a terminal does not reach it
        )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout
        while True:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise SandboxError(
                    f"HAPI sandbox exited with code {code} during start-up\n"
                    f"--- last lines of {self.log_path} ---\n{_tail(self.log_path)}"
                )
            if _metadata_ok(self.base_url):
                return
            if time.monotonic() > deadline:
                raise SandboxError(
                    f"HAPI sandbox not ready after {self.startup_timeout:.0f} s ({self.base_url}/metadata)\n"
                    f"--- last lines of {self.log_path} ---\n{_tail(self.log_path)}"
                )
            time.sleep(0.5)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop a server we started: SIGTERM to its process group, SIGKILL after ``timeout``."""
        proc, self._proc = self._proc, None
        self.attached = False
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> HapiSandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
