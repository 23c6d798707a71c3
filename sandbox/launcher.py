"""Local HAPI FHIR R4 sandbox: build, start, load data, reset.

The server is a real HAPI FHIR 8.8 JPA server on an in-memory H2 database, built from the small
Maven module in ``sandbox/hapi`` (see its ``pom.xml``). It needs ``java`` (17+) and ``mvn`` on the
PATH; the first build downloads about 350 MB of jars into ``~/.m2``.

Typical use::

    with HapiSandbox() as fhir:             # builds if needed, starts, waits for /metadata
        load_bundles(fhir.base_url, [Path("tests/fixtures/patient-a.json")])
        load_cohort(fhir.base_url, 1000, seed=7)
        ...                                  # talk to fhir.base_url, e.g. http://127.0.0.1:8090/fhir
    # the server is stopped here (unless we attached to one that was already running)

From the command line: ``python -m cds.sandbox --load bundle.json --cohort 500 --keep-running``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Final
from urllib.parse import urlsplit

import httpx

__all__ = [
    "DEFAULT_PORT",
    "TARGET_DIR",
    "HapiSandbox",
    "SandboxError",
    "build_launcher",
    "expunge",
    "free_port",
    "generate_cohort",
    "load_bundles",
    "load_cohort",
    "main",
]

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
HAPI_DIR: Final = REPO_ROOT / "sandbox" / "hapi"
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
#: Entries per transaction Bundle when loading.
DEFAULT_BATCH_SIZE: Final = 500

FHIR_JSON: Final = "application/fhir+json"
_ID_RE: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_LOCAL_REF_RE: Final = re.compile(r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?")

JsonObject = dict[str, Any]


class SandboxError(RuntimeError):
    """The sandbox could not be built, started or loaded; the message says why."""


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


# --------------------------------------------------------------------------------------------
# Loading data


def _check_id(rtype: str, rid: Any, where: str) -> str:
    if not isinstance(rid, str) or not rid:
        raise SandboxError(
            f"{where}: {rtype} has no id; every resource needs one so that loading is idempotent (PUT {rtype}/<id>)"
        )
    if not _ID_RE.fullmatch(rid):
        raise SandboxError(f"{where}: {rtype}/{rid}: not a valid FHIR id ([A-Za-z0-9-.], at most 64 characters)")
    if rid.isdigit():
        raise SandboxError(
            f"{where}: {rtype}/{rid}: HAPI only accepts client-assigned ids that contain a non-digit "
            f"(HAPI-0960); rename it, e.g. to '{rtype.lower()}-{rid}'"
        )
    return rid


def _bundle_resources(
    item: Path | str | Mapping[str, Any],
) -> tuple[str, list[tuple[str | None, JsonObject]]]:
    """(label, [(fullUrl, resource)]) for one input: a Bundle file/dict, or a single resource."""
    if isinstance(item, Mapping):
        doc: Any = item
        label = f"bundle {item.get('id', '(no id)')}"
    else:
        path = Path(item)
        label = str(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise SandboxError(f"{label}: cannot read JSON: {e}") from e
    if not isinstance(doc, Mapping) or "resourceType" not in doc:
        raise SandboxError(f"{label}: not a FHIR resource")
    if doc["resourceType"] != "Bundle":
        return label, [(None, dict(doc))]
    out: list[tuple[str | None, JsonObject]] = []
    for entry in doc.get("entry", []):
        resource = entry.get("resource")
        if resource is None:
            continue  # e.g. a DELETE or GET entry of a transaction/batch: nothing to store
        if entry.get("search", {}).get("mode") == "outcome":
            continue  # searchset warnings
        out.append((entry.get("fullUrl"), dict(resource)))
    return label, out


def _expand_inputs(
    paths_or_bundles: Iterable[Path | str | Mapping[str, Any]],
) -> Iterator[Path | str | Mapping[str, Any]]:
    for item in paths_or_bundles:
        if not isinstance(item, Mapping) and Path(item).is_dir():
            yield from sorted(Path(item).glob("*.json"))
        else:
            yield item


def _rewrite_references(node: Any, aliases: Mapping[str, str]) -> Any:
    """Replace references to an entry's fullUrl (``urn:uuid:...`` or absolute) with ``Type/id``."""
    if isinstance(node, dict):
        out: JsonObject = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value in aliases:
                out[key] = aliases[value]
            else:
                out[key] = _rewrite_references(value, aliases)
        return out
    if isinstance(node, list):
        return [_rewrite_references(v, aliases) for v in node]
    return node


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                m = _LOCAL_REF_RE.fullmatch(value)
                if m:
                    yield f"{m.group(1)}/{m.group(2)}"
            elif key != "contained":
                yield from _references(value)
    elif isinstance(node, list):
        for v in node:
            yield from _references(v)


def _dependency_units(resources: Mapping[str, JsonObject]) -> list[list[str]]:
    """Group keys ("Type/id") into units and order them so every unit comes after the units it
    references: Tarjan's strongly connected components (iterative), which emits a component only
    after everything it depends on. Reference cycles end up together in one unit. Follows the
    input order, so each patient's resources stay close together."""
    edges = {k: [d for d in dict.fromkeys(_references(r)) if d in resources and d != k] for k, r in resources.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    units: list[list[str]] = []
    counter = 0
    for root in resources:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = edges[node]
            if i < len(children):
                work.append((node, i + 1))
                child = children[i]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if low[node] == index[node]:
                unit: list[str] = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    unit.append(top)
                    if top == node:
                        break
                units.append(unit)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return units


def _post_transaction(client: httpx.Client, base_url: str, entries: list[JsonObject]) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    r = client.post(
        base_url,
        json=bundle,
        headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, "Prefer": "return=minimal"},
    )
    if r.status_code != 200:
        raise SandboxError(f"transaction of {len(entries)} entries failed: HTTP {r.status_code}: {_outcome_text(r)}")
    body = r.json()
    if body.get("type") != "transaction-response" or len(body.get("entry", [])) != len(entries):
        raise SandboxError(f"unexpected transaction response: {str(body)[:500]}")
    for sent, got in zip(entries, body["entry"], strict=True):
        status = str(got.get("response", {}).get("status", ""))
        if not status.startswith("2"):
            raise SandboxError(f"{sent['request']['url']}: {status}")


def _outcome_text(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:500]
    if body.get("resourceType") == "OperationOutcome":
        return "; ".join(
            str(i.get("diagnostics") or i.get("details", {}).get("text") or i) for i in body.get("issue", [])
        )
    return r.text[:500]


def load_bundles(
    base_url: str,
    paths_or_bundles: Iterable[Path | str | Mapping[str, Any]],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    client: httpx.Client | None = None,
) -> list[str]:
    """Load FHIR Bundles (collection, searchset, transaction or batch; files, directories of
    ``*.json`` files, or dicts) into the server, idempotently.

    Every resource is sent as ``PUT {type}/{id}`` with its own id inside ``transaction`` Bundles of
    at most ``batch_size`` entries (more only if a reference cycle is larger), so loading the same
    data twice changes nothing. References to an entry's ``fullUrl`` (e.g. ``urn:uuid:...``) are
    rewritten to ``Type/id``, and resources are ordered so that a referenced resource is in the same
    or an earlier transaction (HAPI rejects references to resources that do not exist). Consecutive
    small Bundles share transactions; the input is streamed, so a generator of per-patient Bundles
    can be arbitrarily long.

    Returns the ids of the Patients loaded, in input order. Raises :class:`SandboxError` for
    resources without an id, numeric-only ids (HAPI-0960) or a failed transaction.
    """
    base_url = base_url.rstrip("/")
    own_client = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0))
    aliases: dict[str, str] = {}
    pending: dict[str, JsonObject] = {}  # key -> resource, insertion-ordered, at most one per key
    patient_ids: dict[str, None] = {}

    def flush() -> None:
        if pending:
            entries = [{"resource": res, "request": {"method": "PUT", "url": key}} for key, res in pending.items()]
            _post_transaction(http, base_url, entries)
            pending.clear()

    try:
        for item in _expand_inputs(paths_or_bundles):
            label, pairs = _bundle_resources(item)
            resources: dict[str, JsonObject] = {}
            for full_url, res in pairs:
                rtype = res.get("resourceType")
                if not isinstance(rtype, str):
                    raise SandboxError(f"{label}: entry without resourceType")
                key = f"{rtype}/{_check_id(rtype, res.get('id'), label)}"
                if full_url:
                    aliases[full_url] = key
                resources[key] = res  # a later duplicate replaces an earlier one
            for unit in _dependency_units(resources):
                if pending and len(pending) + len(unit) > batch_size:
                    flush()
                for key in unit:
                    pending[key] = _rewrite_references(resources[key], aliases)
                    if key.startswith("Patient/"):
                        patient_ids[key.removeprefix("Patient/")] = None
            if len(pending) >= batch_size:
                flush()
        flush()
    finally:
        if own_client:
            http.close()
    return list(patient_ids)


def expunge(base_url: str, *, client: httpx.Client | None = None) -> int:
    """Delete everything on the server (``POST [base]/$expunge`` with ``expungeEverything``).

    Returns the number of rows HAPI reports as expunged. Needs expunge enabled on the server (the
    sandbox has it on).
    """
    params = {
        "resourceType": "Parameters",
        "parameter": [{"name": "expungeEverything", "valueBoolean": True}],
    }
    http = client or httpx.Client(timeout=300.0)
    try:
        r = http.post(
            f"{base_url.rstrip('/')}/$expunge",
            json=params,
            headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
        )
    finally:
        if client is None:
            http.close()
    if r.status_code != 200:
        raise SandboxError(f"$expunge failed: HTTP {r.status_code}: {_outcome_text(r)}")
    for p in r.json().get("parameter", []):
        if p.get("name") == "count":
            return int(p.get("valueInteger", 0))
    return 0


# --------------------------------------------------------------------------------------------
# Synthetic cohort

SNOMED: Final = "http://snomed.info/sct"
LOINC: Final = "http://loinc.org"
UCUM: Final = "http://unitsofmeasure.org"
COHORT_TAG: Final = {"system": "urn:cds:sandbox", "code": "cohort"}
#: Default reference date for generated data (fixed, so a seed always gives the same data).
COHORT_AS_OF: Final = dt.date(2025, 1, 1)

_SLE = ("55464009", "Systemic lupus erythematosus")
_OTHER_CONDITIONS: Final = [
    # (probability, SNOMED code, display)
    (0.25, "59621000", "Essential hypertension"),
    (0.10, "44054006", "Diabetes mellitus type 2"),
    (0.06, "195967001", "Asthma"),
    (0.02, "69896004", "Rheumatoid arthritis"),
    (0.01, "200936003", "Lupus erythematosus"),
]
# LOINC code -> (display, UCUM unit, unit text)
_LABS: Final = {
    "6690-2": ("Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", "10*3/uL"),
    "4485-9": ("Complement C3 [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL"),
    "33799-8": ("DNA double strand Ab [Units/volume] in Serum by Immunoassay", "[IU]/mL", "IU/mL"),
}
_FEMALE_NAMES: Final = ["Mary", "Li", "Ana", "Fatima", "Olga", "Mei", "Sara", "Grace", "Aiko", "Nadia"]
_MALE_NAMES: Final = ["John", "Wei", "Carlos", "Omar", "Ivan", "Jun", "David", "Samuel", "Kenji", "Amir"]
_FAMILY_NAMES: Final = [
    "Smith",
    "Wang",
    "Garcia",
    "Khan",
    "Ivanova",
    "Chen",
    "Cohen",
    "Okafor",
    "Sato",
    "Haddad",
]


def _iso(day: dt.date) -> str:
    return day.isoformat()


def _cohort_patient(i: int, seed: int, as_of: dt.date) -> list[JsonObject]:
    # One stream per patient, so any patient is reproducible on its own. Test data, not crypto.
    rng = random.Random(seed * 1_000_003 + i)  # noqa: S311
    pid = f"cohort-{i:06d}"
    subject = {"reference": f"Patient/{pid}"}
    meta = {"tag": [dict(COHORT_TAG)]}
    has_sle = rng.random() < 0.10
    female = rng.random() < (0.9 if has_sle else 0.52)
    age_days = rng.randint(12 * 365, 85 * 365)
    birth = as_of - dt.timedelta(days=age_days)
    resources: list[JsonObject] = [
        {
            "resourceType": "Patient",
            "id": pid,
            "meta": meta,
            "identifier": [{"system": "urn:cds:sandbox:cohort", "value": pid}],
            "active": True,
            "name": [
                {
                    "family": rng.choice(_FAMILY_NAMES),
                    "given": [rng.choice(_FEMALE_NAMES if female else _MALE_NAMES)],
                }
            ],
            "gender": "female" if female else "male",
            "birthDate": _iso(birth),
        }
    ]

    def condition(n: int, code: str, display: str, onset: dt.date) -> JsonObject:
        return {
            "resourceType": "Condition",
            "id": f"{pid}-cond-{n}",
            "meta": meta,
            "clinicalStatus": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
            },
            "verificationStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                        "code": "confirmed",
                    }
                ]
            },
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                            "code": "problem-list-item",
                        }
                    ]
                }
            ],
            "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
            "subject": subject,
            "onsetDateTime": _iso(onset),
            "recordedDate": _iso(onset),
        }

    def onset_after(min_age_years: int) -> dt.date:
        earliest = birth + dt.timedelta(days=min_age_years * 365)
        span = max((as_of - earliest).days, 1)
        return earliest + dt.timedelta(days=rng.randrange(span))

    n_cond = 0
    if has_sle:
        n_cond += 1
        resources.append(condition(n_cond, *_SLE, onset_after(10)))
    for p, code, display in _OTHER_CONDITIONS:
        if rng.random() < p:
            n_cond += 1
            resources.append(condition(n_cond, code, display, onset_after(5)))

    n_obs = 0

    def lab(code: str, value: float, days_ago: int) -> None:
        nonlocal n_obs
        n_obs += 1
        display, ucum, unit = _LABS[code]
        when = dt.datetime.combine(
            as_of - dt.timedelta(days=days_ago), dt.time(8 + rng.randrange(10), rng.randrange(60)), dt.UTC
        )
        resources.append(
            {
                "resourceType": "Observation",
                "id": f"{pid}-obs-{n_obs}",
                "meta": meta,
                "status": "final",
                "category": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                "code": "laboratory",
                            }
                        ]
                    }
                ],
                "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
                "subject": subject,
                "effectiveDateTime": when.isoformat(),
                "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": ucum},
            }
        )

    for _ in range(rng.randint(1, 3)):  # everyone has a few blood counts
        wbc = rng.uniform(2.2, 7.0) if has_sle else rng.uniform(3.8, 11.0)
        lab("6690-2", round(wbc, 1), rng.randrange(400))
    if has_sle or rng.random() < 0.05:  # serology mostly in lupus patients
        for _ in range(rng.randint(1, 2)):
            c3 = rng.uniform(45, 120) if has_sle else rng.uniform(85, 180)
            dsdna = rng.uniform(2, 400) if has_sle else rng.uniform(0, 12)
            days = rng.randrange(180)
            lab("4485-9", round(c3), days)
            lab("33799-8", round(dsdna, 1), days)
    return resources


def generate_cohort(n: int, seed: int = 0, *, as_of: dt.date = COHORT_AS_OF, start: int = 1) -> Iterator[JsonObject]:
    """Yield ``n`` synthetic patients as ``collection`` Bundles (one per patient), deterministic
    for a given ``seed`` and ``as_of`` date.

    Patient ids are ``cohort-000001``, ``cohort-000002``, ... (from ``start``); each has 1–3 WBC
    counts (LOINC 6690-2, 10*3/uL), and about 10 % have systemic lupus erythematosus (SNOMED
    55464009) with C3 (4485-9, mg/dL) and anti-dsDNA (33799-8, [IU]/mL), mostly abnormal. Others
    get some hypertension, type 2 diabetes, asthma, rheumatoid arthritis or generic lupus
    (200936003) Conditions. Every resource carries the tag ``urn:cds:sandbox|cohort``.
    """
    for i in range(start, start + n):
        resources = _cohort_patient(i, seed, as_of)
        yield {
            "resourceType": "Bundle",
            "id": f"cohort-{i:06d}",
            "type": "collection",
            "entry": [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r} for r in resources],
        }


def load_cohort(
    base_url: str,
    n: int,
    seed: int = 0,
    *,
    as_of: dt.date = COHORT_AS_OF,
    batch_size: int = DEFAULT_BATCH_SIZE,
    client: httpx.Client | None = None,
) -> list[str]:
    """Load :func:`generate_cohort` into the server in transactions of ``batch_size`` entries;
    returns the Patient ids. Loading the same ``n``/``seed``/``as_of`` again changes nothing."""
    return load_bundles(base_url, generate_cohort(n, seed, as_of=as_of), batch_size=batch_size, client=client)


# --------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cds.sandbox",
        description="Start a local HAPI FHIR R4 server (in-memory H2), optionally load data, print its base URL.",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    p.add_argument("--url", help="attach to this FHIR base URL if it answers instead of starting a server")
    p.add_argument(
        "--load",
        nargs="+",
        action="extend",
        default=[],
        metavar="PATH",
        help="Bundle JSON files or directories to load",
    )
    p.add_argument("--cohort", type=int, default=0, metavar="N", help="also load N synthetic patients")
    p.add_argument("--seed", type=int, default=0, help="seed for --cohort (default 0)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="entries per transaction")
    p.add_argument("--disk", action="store_true", help="keep the H2 database on disk (for more than ~10,000 patients)")
    p.add_argument("--reset", action="store_true", help="$expunge everything before loading")
    p.add_argument("--rebuild", action="store_true", help="run Maven even if the build looks current")
    p.add_argument("--timeout", type=float, default=DEFAULT_STARTUP_TIMEOUT, help="start-up timeout in seconds")
    p.add_argument("--keep-running", action="store_true", help="keep the server running until Ctrl-C")
    return p


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _info(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``python -m cds.sandbox``); returns the exit status.

    Standard output gets the FHIR base URL, then one ``Patient/<id>`` line per patient loaded with
    ``--load``; progress and the cohort summary go to standard error.
    """
    args = _parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)  # so `with` still stops the server
    try:
        if args.rebuild:
            build_launcher(force=True)
        sandbox = HapiSandbox(args.port, base_url=args.url, startup_timeout=args.timeout, disk=args.disk)
        with sandbox:
            if sandbox.attached:
                _info(f"attached to the FHIR server at {sandbox.base_url}")
            else:
                _info(f"HAPI FHIR sandbox started in {sandbox.startup_seconds or 0:.1f} s (pid {sandbox.pid})")
            _out(sandbox.base_url)
            if args.reset:
                _info(f"expunged {expunge(sandbox.base_url)} rows")
            if args.load:
                ids = load_bundles(sandbox.base_url, args.load, batch_size=args.batch_size)
                _info(f"loaded {len(ids)} patients from {len(args.load)} input(s)")
                for pid in ids:
                    _out(f"Patient/{pid}")
            if args.cohort:
                started = time.monotonic()
                ids = load_cohort(sandbox.base_url, args.cohort, args.seed, batch_size=args.batch_size)
                _info(
                    f"loaded a cohort of {len(ids)} patients ({ids[0]} .. {ids[-1]}, seed {args.seed}) "
                    f"in {time.monotonic() - started:.1f} s"
                )
            if args.keep_running and not sandbox.attached:
                _info(f"running; log: {sandbox.log_path}; Ctrl-C to stop")
                while sandbox.running:
                    time.sleep(1)
                _info("the server exited on its own")
                return 1
        return 0
    except SandboxError as e:
        _info(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
