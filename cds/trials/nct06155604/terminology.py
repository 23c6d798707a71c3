"""NCT06155604's ICD-10-CM value sets: the items declared here, expanded from the maintained tabular
list into ``icd10cm.json`` next to this file (`cds.trials.terminology` regenerates and checks it)."""

from __future__ import annotations

from pathlib import Path

from cds.trials.terminology import Icd10cmValueSets

ICD10CM_ITEMS: dict[str, tuple[str, ...]] = {
    # M32.14 glomerular disease in SLE, M32.15 tubulo-interstitial nephropathy in SLE (ICD-10-CM has
    # no ISN/RPS class: the class comes from SNOMED CT or the biopsy report)
    "lupus-nephritis": ("M32.14", "M32.15"),
    # another glomerular disease, named as a disease (not a morphology LN shares): IgA nephropathy
    # N02.B; primary membranous nephropathy N04.21 / N06.21 (secondary membranous is LN class V);
    # C3 glomerulonephritis N0x.A and dense deposit disease N0x.6
    "other-gn": (
        "N02.B",
        "N04.21",
        "N06.21",
        *(f"N0{i}.A" for i in range(7)),
        *(f"N0{i}.6" for i in range(7)),
    ),
    # hereditary kidney disease: hereditary nephropathy NEC N07, polycystic kidney (infantile Q61.1,
    # adult Q61.2, unspecified Q61.3), medullary cystic kidney Q61.5, Alport syndrome Q87.81
    "hereditary-kidney": ("N07", "Q61.1", "Q61.2", "Q61.3", "Q61.5", "Q87.81"),
    # vasculitis that may or may not involve the kidney -> review: hypersensitivity angiitis incl.
    # Goodpasture's syndrome M31.0, granulomatosis with polyangiitis with renal involvement M31.31,
    # microscopic polyangiitis M31.7
    "gn-review": ("M31.0", "M31.31", "M31.7"),
    # type 1 diabetes E10; pre-existing type 1 diabetes in pregnancy O24.0
    "t1dm": ("E10", "O24.0"),
    # diabetes with ketoacidosis, every type: E08.1, E09.1, E10.1, E11.1, E13.1
    "ketoacidosis": ("E08.1", "E09.1", "E10.1", "E11.1", "E13.1"),
    # CKD stage 5 N18.5, end stage renal disease N18.6
    "ckd5": ("N18.5", "N18.6"),
    # renal replacement therapy: dependence on renal dialysis Z99.2, encounter for dialysis Z49,
    # noncompliance with renal dialysis Z91.15 (a dialysis patient)
    "dialysis-status": ("Z99.2", "Z49", "Z91.15"),
    # kidney transplant status Z94.0, complications of kidney transplant T86.1
    "kidney-transplant-status": ("Z94.0", "T86.1"),
    # UTI episodes: acute pyelonephritis N10, acute cystitis N30.0, cystitis unspecified N30.9,
    # urinary tract infection site not specified N39.0
    "uti": ("N10", "N30.0", "N30.9", "N39.0"),
    # personal history of urinary tract infections (undated, uncounted) -> review
    "uti-history": ("Z87.440",),
}

VALUE_SETS = Icd10cmValueSets(ICD10CM_ITEMS, Path(__file__).with_name("icd10cm.json"))
icd10cm_codes = VALUE_SETS.codes
