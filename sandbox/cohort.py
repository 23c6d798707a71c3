"""A synthetic, deterministic cohort of patients for load tests and benchmarks.

``generate_cohort(1000, seed=7)`` yields one ``collection`` Bundle per patient (the same Bundles
for the same seed and as-of date); ``load_cohort(base_url, 1000, seed=7)`` loads them.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import Final

import httpx

from sandbox.loader import DEFAULT_BATCH_SIZE, JsonObject, load_bundles

__all__ = ["COHORT_AS_OF", "COHORT_TAG", "generate_cohort", "load_cohort"]

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
