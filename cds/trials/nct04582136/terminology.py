"""NCT04582136's ICD-10-CM value sets: the items declared here, expanded from the maintained tabular
list into ``icd10cm.json`` next to this file (`cds.trials.terminology` regenerates and checks it)."""

from __future__ import annotations

from pathlib import Path

from cds.trials.terminology import Icd10cmValueSets

ICD10CM_ITEMS: dict[str, tuple[str, ...]] = {
    # M32.1x SLE with organ involvement, M32.8 other forms, M32.9 unspecified
    "sle": ("M32.1", "M32.8", "M32.9"),
    # M32.0 drug-induced SLE -> review
    "lupus-not-specific": ("M32.0",),
    # L93 cutaneous lupus (discoid, subacute cutaneous, other local) -> not SLE
    "lupus-cutaneous": ("L93",),
    # RA (M05 seropositive, M06 other), dermato-/polymyositis M33, systemic sclerosis M34,
    # Sjogren M35.0, other overlap syndromes (incl. MCTD) M35.1
    "other-ctd": ("M05", "M06", "M33", "M34", "M35.0", "M35.1"),
    # the pregnancy chapter O00-O9A; Z33.1 pregnant state incidental; Z33.3 pregnant state,
    # gestational carrier; Z34 supervision of normal pregnancy; Z3A weeks of gestation
    "pregnancy": ("O00-O9A", "Z33.1", "Z33.3", "Z34", "Z3A"),
    # Z39.1 care and examination of lactating mother
    "breastfeeding": ("Z39.1",),
    # tuberculosis A15-A19 (ICD-10-CM has no A16), viral hepatitis B16-B19 (acute B, acute C,
    # chronic, unspecified), sepsis A40/A41, severe sepsis R65.2
    "infection-active": ("A15-A19", "B16-B19", "A40", "A41", "R65.2"),
    # HIV disease B20 / asymptomatic HIV Z21; latent TB Z22.7 and a positive TST/IGRA without
    # active TB R76.11/R76.12 -> review
    "infection-review": ("B20", "Z21", "Z22.7", "R76.11", "R76.12"),
    # emphysema J43, other COPD J44, asthma J45
    "steroid-requiring": ("J43", "J44", "J45"),
    # malignant neoplasms C00-C96 (includes C4A, C7A, C7B) and carcinoma in situ D00-D09
    "malignant": ("C00-C96", "D00-D09"),
    # lymphoid malignancies: Hodgkin C81, non-Hodgkin C82-C86 and C88, myeloma and plasma cell
    # neoplasms C90, lymphoid leukaemia C91; post-transplant lymphoproliferative disorder D47.Z1
    "lymphoproliferative": ("C81-C86", "C88", "C90", "C91", "D47.Z1"),
    # allowed if treated/cured: basal and squamous cell carcinoma of skin, carcinoma in situ of
    # skin D04, carcinoma in situ of the cervix D06
    "malignancy-exceptions": ("C44~basal cell carcinoma", "C44~squamous cell carcinoma", "D04", "D06"),
    # Z85 personal history of malignant neoplasm (dates usually not coded) -> review
    "malignancy-history": ("Z85",),
    # Z94.81 bone marrow transplant status, Z94.84 stem cells transplant status
    "stem-cell-transplant": ("Z94.81", "Z94.84"),
    # Z90.81 acquired absence of spleen
    "splenectomy-history": ("Z90.81",),
}

VALUE_SETS = Icd10cmValueSets(ICD10CM_ITEMS, Path(__file__).with_name("icd10cm.json"))
icd10cm_codes = VALUE_SETS.codes
