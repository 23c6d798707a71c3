"""NCT06155604 — quiescent lupus nephritis with chronic kidney disease (registry text:
shared/seeds/NCT06155604-eligibility.txt).

Everything trial-specific lives in this folder: this definition (criteria, value sets, thresholds,
windows), the ICD-10-CM items (`terminology.py`, expanded into `icd10cm.json`) and the rules the
generic engine lacks (`rules.py`). Terminology sources, named next to the codes:

* ICD-10-CM: expanded from the CMS/NCHS tabular list through the PyPI package `simple-icd-10-cm`.
* Codes this trial shares with NCT04582136 (eGFR and creatinine LOINC, the SLEDAI-2K items, the
  prednisone / prednisolone / MMF / azathioprine RxNorm tables and the other immunosuppressants) are
  imported from that trial's definition, where each names its source.
* SNOMED CT kidney codes: the UK Renal Registry data schema (rixg.org.uk, "CfEdtaPrdCode": the
  ERA-EDTA primary renal diagnoses with their SNOMED CT concepts and descriptions) for IgA
  nephropathy, membranous, FSGS, MCGN, anti-GBM, fibrillary GN, polycystic kidney disease,
  hereditary nephritis, nephronophthisis, GPA, microscopic polyangiitis, HSP, minimal change disease.
  The other SNOMED CT codes were checked against their fully specified names as printed in several
  independent public code lists and FHIR example data (a public code search): type 1 diabetes
  46635009, "Diabetic ketoacidosis (disorder)" 420422005, "Chronic kidney disease stage 5 (disorder)"
  433146000, "End-stage renal disease (disorder)" 46177005, "Renal dialysis (procedure)" 265764009,
  "Hemodialysis (procedure)" 302497006, "Transplant of kidney (procedure)" 70536003, "Urinary tract
  infection (disorder)" 68566005, "Acute infective cystitis (disorder)" 307426000,
  "Pyelonephritis (disorder)" 45816000; "Fine needle biopsy of kidney (procedure)" 48426002
  from the SNOMED CT editorial guide's biopsy examples. The SLE glomerulonephritis WHO class I-VI
  codes are the ones shared/reference/criteria-terminology.md verified (UK SLE code set).

`UNVERIFIED_LEFT_OUT` lists what no public source consulted confirmed; name patterns cover it.
"""

from __future__ import annotations

from cds.engine.definition import ICD10CM, SNOMED, Drug, ValueSet
from cds.engine.model import Kind
from cds.engine.rules import AgeRange, ConditionPresent, DoseCap
from cds.engine.trial import Criterion, Trial
from cds.trials.lupus.sledai import ClinicalSledai
from cds.trials.nct04582136 import (
    AZATHIOPRINE,
    BETAMETHASONE,
    CORTISONE,
    CREATININE,
    CYCLOPHOSPHAMIDE,
    CYCLOSPORINE,
    DEFLAZACORT,
    DEXAMETHASONE,
    EGFR,
    HYDROCORTISONE,
    LEFLUNOMIDE,
    METHOTREXATE,
    METHYLPREDNISOLONE,
    MMF,
    MPA,
    PREDNISOLONE,
    PREDNISONE,
    SIROLIMUS,
    SLEDAI_TOTAL,
    TACROLIMUS,
    TRIAMCINOLONE,
    TRIPTERYGIUM,
    VOCLOSPORIN,
    sle_items,
)
from cds.trials.nct06155604.rules import (
    BiopsyProvenLupusNephritis,
    LabInRange,
    MaintenanceRegimen,
    QuiescentSledai,
    RecurrentInfection,
    RenalReplacement,
)
from cds.trials.nct06155604.terminology import icd10cm_codes

# No public source consulted confirmed these codes; name patterns (matched against CodeableConcept
# text and coding display) cover the concepts meanwhile.
UNVERIFIED_LEFT_OUT = {
    "SNOMED": "kidney biopsy procedures other than 48426002 (e.g. percutaneous / open biopsy of kidney); "
    "peritoneal dialysis; Alport syndrome; recurrent urinary tract infection; anti-GBM antibody disease",
    "CPT": "50200 renal biopsy; 90935/90937 hemodialysis; 50360/50365 kidney transplantation",
    "RxNorm": "rituximab, belimumab, anifrolumab, obinutuzumab ingredients; antibiotic ingredients for UTI "
    "courses (matched by name)",
    "LOINC": "kidney pathology report codes (reports are matched by name)",
}


def _sct(*codes: str) -> list[tuple[str, str]]:
    return [(SNOMED, c) for c in codes]


def _icd(name: str) -> list[tuple[str, str]]:
    return [(ICD10CM, c) for c in sorted(icd10cm_codes(name))]


# --------------------------------------------------------------------------- lupus nephritis


def _class_text(classes: str) -> str:
    """An ISN/RPS class named next to lupus nephritis (never "class III" alone: NYHA, obesity...)."""
    ln = r"(?:lupus nephritis|lupus glomerulonephritis|\bLN\b)"
    return rf"{ln}[^.;]{{0,40}}\bclass\s+{classes}\b|\bclass\s+{classes}\b[^.;]{{0,20}}{ln}"


# SLE glomerulonephritis WHO class I-VI (ref ✅, UK SLE code set): 73286009 I, 4676006 II,
# 76521009 III, 36402006 IV, 52042003 V, 11013005 VI.
LN_CLASS_III_IV_V = ValueSet.of(
    "lupus nephritis ISN/RPS class III, IV or V",
    _sct("76521009", "36402006", "52042003"),
    text=_class_text(r"(?:III|IV|V)"),
)
LN_CLASS_OTHER = ValueSet.of(
    "lupus nephritis ISN/RPS class I, II or VI",
    _sct("73286009", "4676006", "11013005"),
    text=_class_text(r"(?:I|II|VI)(?!\s*\+)"),
)
# 68815009 SLE glomerulonephritis syndrome, 307755009 renal tubulo-interstitial disorder in SLE (ref
# ✅); ICD-10-CM M32.14 / M32.15.
LUPUS_NEPHRITIS = ValueSet.of(
    "lupus nephritis",
    _sct("68815009", "307755009") + _icd("lupus-nephritis"),
    text=r"lupus nephritis|lupus glomerulonephritis",
)
KIDNEY_BIOPSY = ValueSet.of(
    "kidney biopsy",
    _sct("48426002"),
    text=r"(?:kidney|renal)\s+biops|biopsy\s+of\s+(?:the\s+)?(?:right\s+|left\s+)?kidney|nephropathology|"
    r"kidney\s+pathology|renal\s+pathology",
)

# --------------------------------------------------------------------------- other kidney disease

OTHER_GN = ValueSet.of(
    "glomerulonephritis other than lupus nephritis, or hereditary kidney disease",
    _sct(
        "236407003",  # Immunoglobulin A nephropathy
        "445404003",  # Familial immunoglobulin A nephropathy
        "722119002",  # Idiopathic membranous glomerulonephritis
        "236403004",  # Focal segmental glomerulosclerosis
        "445388002",  # Autosomal recessive FSGS
        "444977005",  # Autosomal dominant FSGS
        "75888001",  # Mesangiocapillary glomerulonephritis, type I
        "59479006",  # Mesangiocapillary glomerulonephritis, type II
        "236409000",  # Mesangiocapillary glomerulonephritis type III
        "236506009",  # Goodpasture's disease
        "50581000",  # Goodpasture's syndrome
        "73305009",  # Fibrillary glomerulonephritis
        "28728008",  # Polycystic kidney disease, adult type
        "253878003",  # Adult type polycystic kidney disease type 1
        "253879006",  # Adult type polycystic kidney disease type 2
        "28770003",  # Polycystic kidney disease, infantile type
        "399340005",  # Hereditary nephritis
        "236419006",  # Progressive hereditary glomerulonephritis without deafness
        "204958008",  # Nephronophthisis
        "236418003",  # Thin basement membrane disease
    )
    + _icd("other-gn")
    + _icd("hereditary-kidney"),
    text=r"\bIgA nephropathy|Berger'?s disease|primary membranous|idiopathic membranous|focal segmental "
    r"glomerulosclerosis|\bFSGS\b|ANCA[- ]associated glomerulonephritis|pauci-?immune glomerulonephritis|"
    r"anti-?GBM|Goodpasture|Alport|polycystic kidney|\bADPKD\b|hereditary nephritis|C3 glomerulo",
)
# Disorders that may or may not be a glomerulonephritis of their own (systemic vasculitis, minimal
# change disease, which can also be a lupus podocytopathy) -> review.
GN_REVIEW = ValueSet.of(
    "vasculitis or glomerular disease that may involve the kidney",
    _sct(
        "195353004",  # Wegener's granulomatosis
        "239928004",  # Microscopic polyarteritis nodosa
        "191306005",  # Henoch-Schonlein purpura
        "44785005",  # Minimal change disease
    )
    + _icd("gn-review"),
)
T1DM = ValueSet.of(
    "type 1 diabetes mellitus",
    _sct("46635009") + _icd("t1dm"),
    text=r"type\s*(?:1|I)\s+diabetes|diabetes mellitus,?\s+type\s*(?:1|I)\b|\bT1DM\b|insulin[- ]dependent diabetes",
)
KETOACIDOSIS = ValueSet.of(
    "ketoacidosis",
    _sct("420422005") + _icd("ketoacidosis"),
    text=r"ketoacidosis|\bDKA\b",
)
CKD5 = ValueSet.of("stage 5 CKD or ESKD", _sct("433146000", "46177005") + _icd("ckd5"))
DIALYSIS_STATUS = ValueSet.of("dialysis status", _icd("dialysis-status"))
TRANSPLANT_STATUS = ValueSet.of("kidney transplant status", _icd("kidney-transplant-status"))
DIALYSIS = ValueSet.of(
    "dialysis",
    _sct("265764009", "302497006"),
    text=r"dialysis|h(?:a)?emodialysis|h(?:a)?emofiltration",
)
KIDNEY_TRANSPLANT = ValueSet.of(
    "kidney transplant",
    _sct("70536003"),
    text=r"(?:kidney|renal)\s+transplant|transplant(?:ation)?\s+of\s+kidney",
)
UTI = ValueSet.of(
    "urinary tract infection",
    _sct("68566005", "307426000", "45816000") + _icd("uti"),
    text=r"urinary tract infection|\bUTI\b|cystitis|pyelonephritis",
)
RECURRENT_UTI = ValueSet.of("recurrent urinary tract infection", text=r"recurrent (?:urinary tract infection|UTI)")
UTI_HISTORY = ValueSet.of("personal history of urinary tract infections", _icd("uti-history"))
ANTIBIOTICS = (
    Drug(
        "antibiotic (by name)",
        None,
        name_pattern=(
            r"nitrofurantoin|fosfomycin|trimethoprim|sulfamethoxazole|cefalexin|cephalexin|cefuroxime|cefixime|"
            r"cefpodoxime|ceftriaxone|amoxicillin|ampicillin|pivmecillinam|ciprofloxacin|levofloxacin|"
            r"ofloxacin|norfloxacin|gentamicin|ertapenem|meropenem|piperacillin"
        ),
    ),
)

# --------------------------------------------------------------------------- drugs

BIOLOGICS = Drug(
    "B-cell or interferon biologic (by name)",
    None,
    name_pattern=r"rituximab|belimumab|anifrolumab|obinutuzumab|ocrelizumab|\bbenlysta\b|\brituxan\b",
)
# The SLEDAI-2K describes the last 30 days: a recorded total, and the renal-domain labs behind its items.
SLEDAI_DAYS = 30

# Any other immunosuppressant in the window fails the criterion (the listed regimens are the only ones).
OTHER_IMMUNOSUPPRESSANTS = (
    TACROLIMUS,
    CYCLOSPORINE,
    VOCLOSPORIN,
    CYCLOPHOSPHAMIDE,
    METHOTREXATE,
    LEFLUNOMIDE,
    SIROLIMUS,
    TRIPTERYGIUM,
    BIOLOGICS,
)
# The protocol names prednisolone, MMF and AZA: an equivalent it may accept goes to review.
REVIEW_DRUGS = (MPA, METHYLPREDNISOLONE, TRIAMCINOLONE, HYDROCORTISONE, CORTISONE, DEXAMETHASONE, BETAMETHASONE,
                DEFLAZACORT)  # fmt: skip

# --------------------------------------------------------------------------- windows

EGFR_WINDOW_DAYS = 90
REGIMEN_DAYS = 91
RRT_RECENT_DAYS = 90

I, E = Kind.INCLUSION, Kind.EXCLUSION

CRITERIA = (
    Criterion(
        "inc-age",
        I,
        "Age >= 18",
        "Minimum age: 18 Years (no maximum)",
        "completed years on the as-of date >= 18 (no upper limit); partial birth dates give an age range; "
        "deceased -> not met",
        "Patient.birthDate, Patient.deceased[x]",
        "birth date missing; partial birth date straddling 18",
        AgeRange(18, 150),
    ),
    Criterion(
        "inc-ln-biopsy",
        I,
        "Biopsy-proven ISN/RPS class III, IV or V lupus nephritis",
        "Patients with biopsy-proven Class III or IV or V LN according to the ISN/RPS 2003 classification",
        "a confirmed SLE glomerulonephritis class III/IV/V code (SNOMED 76521009, 36402006, 52042003), or a kidney "
        "biopsy report concluding class III/IV/V -> met; only class I/II/VI (73286009, 4676006, 11013005) -> not "
        "met; a lupus nephritis diagnosis (68815009, 307755009, ICD-10-CM M32.14/M32.15) with a kidney biopsy "
        "Procedure or report and no class code saying otherwise -> met (class to confirm); LN without biopsy "
        "evidence -> unknown; no LN -> not met",
        "Condition, Procedure, DiagnosticReport (code, conclusionCode, conclusion)",
        "LN coded without biopsy evidence; unconfirmed class or LN code; conditions not available",
        BiopsyProvenLupusNephritis(
            LN_CLASS_III_IV_V,
            LN_CLASS_OTHER,
            LUPUS_NEPHRITIS,
            KIDNEY_BIOPSY,
            "ISN/RPS class III, IV or V lupus nephritis",
        ),
    ),
    Criterion(
        "inc-ckd",
        I,
        "CKD with eGFR 15-60 mL/min/1.73 m2",
        "Patients with CKD (eGFR 15-60mL/min)",
        f"latest eGFR within {EGFR_WINDOW_DAYS} days, 15 <= eGFR <= 60 mL/min/1.73 m2 (both ends included); "
        "without an eGFR, CKD-EPI 2021 from the latest serum creatinine (flagged DERIVED). 90 days: CKD is "
        "kidney dysfunction persisting > 3 months (KDIGO) and stable CKD is monitored every 3 months",
        "Observation: eGFR (LOINC 98979-8, 62238-1, 33914-3, ...), creatinine 2160-0 / 38483-4; Patient",
        f"no eGFR or creatinine in {EGFR_WINDOW_DAYS} days; comparator values straddling a limit (e.g. '>60')",
        LabInRange(EGFR, 15.0, 60.0, EGFR_WINDOW_DAYS, derived_from=CREATININE),
    ),
    Criterion(
        "inc-quiescent",
        I,
        "Quiescent disease: SLEDAI-2K < 4, no renal-domain points",
        "Patients in quiescent disease (defined as SLEDAI score <4 with no points in the renal domain)",
        "latest SLEDAI-2K total in 30 days < 4 and every renal-domain item evaluated and absent in 30 days "
        "(urinary RBC casts 51790-4, hematuria > 5 RBC/HPF 13945-1, proteinuria > 0.5 g/24 h 2889-4 or UPCR > "
        "500 mg/g 2890-2, pyuria > 5 WBC/HPF 5821-4) -> met; total >= 4 or proteinuria -> not met; casts, "
        "hematuria or pyuria (may be infection or stone) -> unknown",
        "Observation (SLEDAI-2K total, urinalysis, urine protein), QuestionnaireResponse (SLEDAI-2K form)",
        "no SLEDAI-2K total in 30 days; a renal item not tested in 30 days; casts, hematuria or pyuria present",
        QuiescentSledai(ClinicalSledai(SLEDAI_TOTAL, 4, 0, (), (), SLEDAI_DAYS), sle_items.SLEDAI, 4),
    ),
    Criterion(
        "inc-stable-regimen",
        I,
        "Stable prednis(ol)one 5-7.5 mg/day, alone or with MMF or AZA, for 3 months",
        "Patients on a stable dose of prednisolone (PRED 5-7.5 mg/D) alone or in combination with MMF "
        "(<=1.5 g/D) or AZA (<=150 mg/D) in the past 3 months",
        f"oral prednisone or prednisolone totalling 5-7.5 mg/day (both ends included), alone or with MMF <= 1500 "
        f"mg/day or azathioprine <= 150 mg/day (not both), every dose unchanged and started before the last "
        f"{REGIMEN_DAYS} days; no steroid -> not met (medication list current) else unknown; any other "
        "immunosuppressant (calcineurin inhibitor, cyclophosphamide, methotrexate, leflunomide, sirolimus, "
        "B-cell biologic) -> not met; mycophenolic acid or another glucocorticoid -> unknown; hydroxychloroquine "
        "is allowed",
        "MedicationStatement/Request/Administration/Dispense, Dosage",
        "dose not computable; stop date unrecorded; medication list not current; equivalent drug (review)",
        MaintenanceRegimen(
            (PREDNISONE, PREDNISOLONE),
            5.0,
            7.5,
            (DoseCap((MMF,), 1500, "day", "MMF"), DoseCap((AZATHIOPRINE,), 150, "day", "AZA")),
            OTHER_IMMUNOSUPPRESSANTS,
            REVIEW_DRUGS,
            REGIMEN_DAYS,
            "stable prednis(ol)one regimen",
        ),
    ),
    Criterion(
        "exc-other-gn",
        E,
        "Other biopsy-proven glomerulonephritis or hereditary kidney disease",
        "Patients with biopsy-proven glomerulonephritis other than LN or hereditary kidney diseases",
        "any non-refuted code of another glomerulonephritis named as a disease (IgA nephropathy, primary "
        "membranous, FSGS, MCGN, C3 GN / dense deposit disease, anti-GBM, fibrillary) or a hereditary kidney "
        "disease (polycystic kidney, Alport, hereditary nephritis, nephronophthisis, thin basement membrane; "
        "ICD-10-CM N02.B, N04.21, N06.21, N0x.6, N0x.A, N07, Q61.1-Q61.5, Q87.81) -> met (the coded diagnosis "
        "stands for the biopsy); systemic vasculitis (GPA, MPA, Goodpasture M31.0, HSP) or minimal change "
        "disease -> review. Morphology-only codes (N00-N06 .0-.5, .7-.9) are the lupus nephritis' own lesions "
        "and are not read as another disease",
        "Condition",
        "vasculitis or minimal change disease (review); unconfirmed codes; conditions not available",
        ConditionPresent(
            OTHER_GN,
            "glomerulonephritis other than lupus nephritis or hereditary kidney disease",
            review=GN_REVIEW,
            review_reason="vasculitis or glomerular disease that may or may not be a second kidney disease: "
            "needs review",
        ),
    ),
    Criterion(
        "exc-t1dm",
        E,
        "Type 1 diabetes mellitus",
        "Patients with type 1 diabetes mellitus (DM)",
        "any non-refuted type 1 diabetes code (SNOMED 46635009; ICD-10-CM E10, O24.0), history included",
        "Condition",
        "conditions not available; unconfirmed code",
        ConditionPresent(T1DM, "type 1 diabetes mellitus"),
    ),
    Criterion(
        "exc-ckd5-rrt",
        E,
        "Stage 5 CKD / ESKD on renal replacement therapy",
        "Patients with stage 5 CKD or ESKD on renal replacement therapy",
        f"kidney transplant (Z94.0, T86.1, SNOMED 70536003 procedure) ever, an active dialysis status code "
        f"(Z99.2, Z49, Z91.15) or a dialysis procedure (265764009, 302497006) within {RRT_RECENT_DAYS} days -> met; "
        "stage 5 CKD / ESKD code (N18.5, N18.6, 433146000, 46177005) without RRT on record -> review (stage 5 "
        f"is settled by the eGFR inclusion); dialysis only more than {RRT_RECENT_DAYS} days ago -> review",
        "Condition, Procedure",
        "stage 5 code alone; past dialysis; conditions or procedures not available",
        RenalReplacement(CKD5, DIALYSIS_STATUS, TRANSPLANT_STATUS, DIALYSIS, KIDNEY_TRANSPLANT, RRT_RECENT_DAYS),
    ),
    Criterion(
        "exc-frequent-uti",
        E,
        "Frequent urinary tract infections",
        "Patients with frequent urinary tract infections",
        "'frequent' read as the standard recurrent-UTI definition: >= 2 UTI episodes within 6 months (183 days) "
        "or >= 3 within 12 months (365 days); episodes = distinct UTI Condition onsets (SNOMED 68566005, "
        "307426000, 45816000; ICD-10-CM N10, N30.0, N30.9, N39.0) and antibiotic courses whose reason is a UTI, "
        "events within 14 days being one episode; a 'recurrent UTI' diagnosis -> met; unconfirmed or undated "
        "UTIs that could reach the threshold, or personal history of UTI (Z87.440) -> review",
        "Condition, Medication resources (reasonCode / reasonReference)",
        "undated or unconfirmed UTI records; personal history code; conditions or medications not available",
        RecurrentInfection(
            UTI,
            ANTIBIOTICS,
            ((2, 183), (3, 365)),
            "urinary tract infection",
            recurrent=RECURRENT_UTI,
            history=UTI_HISTORY,
        ),
    ),
    Criterion(
        "exc-ketoacidosis",
        E,
        "History of ketoacidosis",
        "Patients with history of ketoacidosis",
        "any non-refuted ketoacidosis code, ever (SNOMED 420422005; ICD-10-CM E08.1, E09.1, E10.1, E11.1, "
        "E13.1), or a diagnosis named ketoacidosis / DKA",
        "Condition",
        "conditions not available; unconfirmed code",
        ConditionPresent(KETOACIDOSIS, "ketoacidosis"),
    ),
)

ANALYTES = (EGFR, CREATININE, *sle_items.ANALYTES)

TRIAL = Trial(
    id="NCT06155604",
    title="Quiescent lupus nephritis with CKD (NCT06155604)",
    url="https://clinicaltrials.gov/study/NCT06155604",
    criteria=CRITERIA,
    analytes=ANALYTES,
    # No applicability fast path: a kidney biopsy report can prove lupus nephritis without any
    # coded Condition, so no Condition list alone makes the patient certainly excluded.
    applicability=None,
)
