"""Laboratory unit spellings -> UCUM: the one table of non-UCUM spellings the engine accepts.

Laboratory systems print units as their analysers and report templates do, not as UCUM: US
reports (Epic, Oracle Health / Cerner, Quest, LabCorp) write ``K/uL``, ``Thousand/uL``,
``x10E3/uL``, ``mg/dl``, ``IU/mL``, ``mcg/dL``; Chinese and European reports write ``10^9/L``,
``×10⁹/L``, ``g/l``, ``μmol/L``. Every entry below is an unambiguous spelling in a *laboratory
value* context, mapped to the UCUM code that `cds.engine.units` converts.

Rules:

* ``EXACT`` is looked up first, with the spelling exactly as written (UCUM is case-sensitive:
  ``K/uL`` would otherwise parse as kelvin per microlitre).
* ``CASELESS`` is looked up next on the case-folded spelling. It holds only spellings whose case
  carries no meaning in a lab report (``MG/DL``, ``Mmol/L``). Spellings where case changes the
  prefix (``mU/L`` milli vs ``MU/L`` mega) are deliberately NOT in it.
* Anything else is passed on unchanged: if it is valid UCUM it converts, otherwise the value is
  ``unknown`` (never guessed).

Sources for the spellings: LOINC example units / UCUM "common units" table
(https://ucum.org/docs/common-units); Epic and Oracle Health FHIR R4 Observation examples; the
unit columns of Chinese national lab reporting (WS/T 404) for ``10^9/L``-style counts.
"""

from __future__ import annotations

# Spelling exactly as printed -> UCUM code.
EXACT: dict[str, str] = {
    # cell counts per microlitre (= 10^9/L)
    "K/uL": "10*3/uL",
    "K/µL": "10*3/uL",
    "K/μL": "10*3/uL",
    "K/mcL": "10*3/uL",
    "K/cumm": "10*3/uL",
    "Thousand/uL": "10*3/uL",
    "thousand/uL": "10*3/uL",
    "THOUS/uL": "10*3/uL",
    "x10^3/uL": "10*3/uL",
    "x10E3/uL": "10*3/uL",
    "X10E3/uL": "10*3/uL",
    "x10(3)/uL": "10*3/uL",
    "10^3/uL": "10*3/uL",
    "10E3/uL": "10*3/uL",
    "10x3/uL": "10*3/uL",
    "x 10^3/uL": "10*3/uL",
    "×10³/µL": "10*3/uL",
    "10*3/mm3": "10*3/mm3",
    # per litre (Chinese / European count units)
    "x10^9/L": "10*9/L",
    "10^9/L": "10*9/L",
    "x10E9/L": "10*9/L",
    "X10E9/L": "10*9/L",
    "10E9/L": "10*9/L",
    "x10(9)/L": "10*9/L",
    "x 10^9/L": "10*9/L",
    "×10^9/L": "10*9/L",
    "×10⁹/L": "10*9/L",
    "10⁹/L": "10*9/L",
    "G/L": "10*9/L",  # "giga per litre" in French/German cell-count reports (never grams: g is lowercase)
    "x10^12/L": "10*12/L",
    "10^12/L": "10*12/L",
    "x10E6/uL": "10*6/uL",
    "M/uL": "10*6/uL",
    "Million/uL": "10*6/uL",
    "cells/uL": "/uL",
    "cells/µL": "/uL",
    "cells/mm3": "/mm3",
    # international units (arbitrary: convert only to themselves)
    "IU/mL": "[IU]/mL",
    "IU/ml": "[IU]/mL",
    "IU/L": "[IU]/L",
    "kIU/L": "k[IU]/L",
    "mIU/mL": "m[IU]/mL",
    "mIU/L": "m[IU]/L",
    "WHO IU/mL": "[IU]/mL",
    # micro spelled as mc / µ / μ
    "µmol/L": "umol/L",
    "μmol/L": "umol/L",
    "mcmol/L": "umol/L",
    "mcg/dL": "ug/dL",
    "µg/dL": "ug/dL",
    "mcg/L": "ug/L",
    "mcg/mL": "ug/mL",
    # milliequivalents
    "mEq/L": "meq/L",
    # time-based (24-hour urine)
    "mg/24h": "mg/(24.h)",
    "mg/24 h": "mg/(24.h)",
    "mg/24hr": "mg/(24.h)",
    "mg/24 hr": "mg/(24.h)",
    "mg/24 hrs": "mg/(24.h)",
    "mg/d": "mg/d",
    "g/24h": "g/(24.h)",
    "g/24 h": "g/(24.h)",
    "g/24hr": "g/(24.h)",
    "g/24 hr": "g/(24.h)",
    # ratios
    "mg/g creat": "mg/g",
    "mg/g Cr": "mg/g",
    "mg/mmol creat": "mg/mmol",
    # temperature
    "°C": "Cel",
    "degC": "Cel",
    "°F": "[degF]",
    "degF": "[degF]",
    # eGFR
    "mL/min/1.73m2": "mL/min/{1.73_m2}",
    "mL/min/1.73 m2": "mL/min/{1.73_m2}",
    "mL/min/1.73m^2": "mL/min/{1.73_m2}",
    "mL/min/1.73 m^2": "mL/min/{1.73_m2}",
    "mL/min/1.73m²": "mL/min/{1.73_m2}",
    "mL/min/1.73 m²": "mL/min/{1.73_m2}",
    "ml/min/1.73m2": "mL/min/{1.73_m2}",
    "mL/min/{1.73m2}": "mL/min/{1.73_m2}",
    # dose units
    "tablet": "{tbl}",
    "tablets": "{tbl}",
    "TAB": "{tbl}",
    "tab": "{tbl}",
    "capsule": "{capsule}",
    "capsules": "{capsule}",
    "CAP": "{capsule}",
}

# Case-folded spelling -> UCUM code, for spellings whose case means nothing in a lab report.
CASELESS: dict[str, str] = {
    "mg/dl": "mg/dL",
    "g/dl": "g/dL",
    "g/l": "g/L",
    "mg/l": "mg/L",
    "ng/ml": "ng/mL",
    "ug/ml": "ug/mL",
    "ug/dl": "ug/dL",
    "mcg/dl": "ug/dL",
    "mmol/l": "mmol/L",
    "umol/l": "umol/L",
    "µmol/l": "umol/L",
    "μmol/l": "umol/L",
    "iu/ml": "[IU]/mL",
    "iu/l": "[IU]/L",
    "u/l": "U/L",
    "u/ml": "U/mL",
    "k/ul": "10*3/uL",
    "thousand/ul": "10*3/uL",
    "x10e3/ul": "10*3/uL",
    "x10^3/ul": "10*3/uL",
    "10^3/ul": "10*3/uL",
    "10*3/ul": "10*3/uL",
    "x10e9/l": "10*9/L",
    "x10^9/l": "10*9/L",
    "10^9/l": "10*9/L",
    "10*9/l": "10*9/L",
    "/ul": "/uL",
    "cells/ul": "/uL",
    "mg/g": "mg/g",
    "ml/min/1.73m2": "mL/min/{1.73_m2}",
}


def to_ucum(spelling: str) -> str:
    """The UCUM code for a unit as printed; unknown spellings are returned unchanged."""
    raw = spelling.strip()
    if raw in EXACT:
        return EXACT[raw]
    return CASELESS.get(raw.casefold(), raw)
