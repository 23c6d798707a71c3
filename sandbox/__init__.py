"""Developer tools: a local HAPI FHIR R4 server, a bundle loader, a synthetic cohort, PostgreSQL.

Not part of the product (the wheel ships only ``cds`` and ``cards``): this package lives beside the
Maven module it drives (``sandbox/hapi``) and is used from a checkout, by the tests, the
benchmarks (``bench/``), ``fixtures/synthea`` and ``.ci/run``.

Typical use::

    from sandbox import HapiSandbox, load_bundles, load_cohort

    with HapiSandbox() as fhir:             # builds if needed, starts, waits for /metadata
        load_bundles(fhir.base_url, [Path("fixtures/patients/base-candidate.json")])
        load_cohort(fhir.base_url, 1000, seed=7)
        ...                                  # talk to fhir.base_url, e.g. http://127.0.0.1:8090/fhir
    # the server is stopped here (unless we attached to one that was already running)

From the command line (at the root of the checkout): ``python -m sandbox --load fixtures/patients
--cohort 500 --keep-running``, or ``cds sandbox ...`` with the project's editable install.

* `sandbox.launcher`: Maven build of ``sandbox/hapi``, `HapiSandbox` (JVM lifecycle), `free_port`;
* `sandbox.loader`: `load_bundles` (idempotent PUTs in dependency order), `expunge`;
* `sandbox.cohort`: `generate_cohort` / `load_cohort` (deterministic synthetic patients);
* `sandbox.postgres`: `TempPostgres`, a throw-away PostgreSQL cluster for tests and benchmarks;
* `sandbox.cli`: the command line (``python -m sandbox``).
"""

from __future__ import annotations

from sandbox.cohort import COHORT_AS_OF, generate_cohort, load_cohort
from sandbox.errors import SandboxError
from sandbox.launcher import DEFAULT_PORT, TARGET_DIR, HapiSandbox, build_launcher, free_port
from sandbox.loader import expunge, load_bundles

__all__ = [
    "COHORT_AS_OF",
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
]
