"""NCT04582136 — Efficacy and Safety of Sirolimus in Active Systemic Lupus Erythematosus.

Everything trial-specific lives here: value sets (system + code), analytes and their units,
drug tables (RxNorm ingredient and clinical-drug codes with strengths), thresholds and windows.

Terminology comes from maintained public sources, named next to the codes:

* ICD-10-CM: expanded from the CMS/NCHS tabular list through the PyPI package `simple-icd-10-cm`
  (`cds.trials.terminology` declares the items, e.g. the pregnancy chapter O00-O9A; a test checks
  every item and the committed expansion against the package).
* SNOMED CT, LOINC and RxNorm: each value set names where its codes were checked (a published value
  set or implementation guide, the FHIR specification's own examples, a public code set), starting
  from shared/reference/criteria-terminology.md. Codes that reference marked ⚠️ were verified and
  are used; `UNVERIFIED_LEFT_OUT` lists only what no public source consulted confirmed, and
  `VERIFIED_NOT_READ` what was confirmed but is not a code this trial's rules can read. Where a drug
  or finding has no verified code, a name pattern is used instead.
"""

from __future__ import annotations

from cds.engine.definition import (
    ICD10CM,
    LOINC,
    RXNORM,
    SNOMED,
    SYSTEMIC_ROUTES,
    Analyte,
    Drug,
    Product,
    RouteClass,
    ValueSet,
)
from cds.engine.model import Kind
from cds.engine.rules import (
    AgeRange,
    AlwaysReview,
    AntiInfectiveTreatment,
    AnyOf,
    CodedDiagnosis,
    ConditionPresent,
    DiagnosisAge,
    DoseCap,
    DrugExposure,
    LabTest,
    Malignancy,
    PositiveTestReview,
    Pregnancy,
    RecentSurgery,
    StableRegimen,
    SteroidDoseAbove,
    SteroidRequiringCondition,
)
from cds.engine.trial import Criterion, Trial
from cds.trials.lupus import (
    NOT_SUFFICIENT_ONLY,
    REVIEW_ONLY,
    ClinicalSledai,
    DerivedClinicalSledai,
    RenalSeverity,
    Serology,
    SliccDiagnosis,
)
from cds.trials.nct04582136 import sle_items
from cds.trials.nct04582136.terminology import icd10cm_codes

LOCAL_ACTIVITY_SYSTEM = "https://github.com/nct04582136-cds/CodeSystem/disease-activity"

# No public source consulted (search of public code, implementation guides and value sets) confirmed
# these codes; the name patterns of the drugs cover them meanwhile.
UNVERIFIED_LEFT_OUT = {
    "SNOMED": "sirolimus substance; SLEDAI item findings",
    "RxNorm": "IVIG ingredient; belimumab ingredient; quinacrine 9061; voclosporin; "
    "valsartan/irbesartan/telmisartan/olmesartan/candesartan ingredients; meloxicam; rifampin",
    "LOINC": "IGRA, CH50",
    "timing": "GTSAbbreviation WK and MO",
}

# Verified, but not something the rules read as codes today.
VERIFIED_NOT_READ = {
    # Breastfeeding (mother) is an observable entity (the question of a breastfeeding-status
    # Observation, e.g. ISiK Stillstatus, WHO HIV IG): its answer is in the value, not the code.
    "SNOMED 413712001": "breastfeeding status question (needs a value reading, not a condition code)",
}


def _sct(*codes: str) -> list[tuple[str, str]]:
    return [(SNOMED, c) for c in codes]


def _loinc(*codes: str) -> ValueSet:
    return ValueSet.of("LOINC " + ",".join(codes), [(LOINC, c) for c in codes])


# --------------------------------------------------------------------------- conditions


def _icd(name: str) -> list[tuple[str, str]]:
    """The ICD-10-CM codes of a value set declared in `cds.trials.terminology` (expanded from the
    tabular list)."""
    return [(ICD10CM, c) for c in sorted(icd10cm_codes(name))]


# SNOMED: 55464009 and the SLE descendants from the published GM LH004 SLE code set (UoM-Data-
# Science-Platforms/gm-sde clinical code sets), checked against the SNOMED CT browser hierarchy.
SLE = ValueSet.of(
    "systemic lupus erythematosus",
    _sct(
        "55464009",
        "239887007",
        "239890001",
        "68815009",
        "73286009",
        "4676006",
        "76521009",
        "36402006",
        "52042003",
        "11013005",
        "307755009",
        "309762007",
        "196138005",
        "193178008",
        "193248005",
        "95644001",
        "239889005",
    )
    + _icd("sle"),
)
LUPUS_NOT_SPECIFIC = ValueSet.of(
    "lupus, SLE not confirmed (generic or drug-induced)",
    _sct("200936003", "201436003") + _icd("lupus-not-specific"),
)
LUPUS_CUTANEOUS_ONLY = ValueSet.of(
    "cutaneous or neonatal lupus only",
    _sct("7119001", "200938002", "239891002", "95609003") + _icd("lupus-cutaneous"),
)
OTHER_CTD = ValueSet.of(
    "other connective tissue or inflammatory disease",
    _sct("89155008", "69896004", "396230008", "31384009", "83901003", "31996006") + _icd("other-ctd"),
)
NPSLE = ValueSet.of("neuropsychiatric SLE", _sct("95644001", "193178008"))
# SNOMED 72892002 / 47200007 as Synthea emits them; 77386006 "Pregnant" (also the 82810-3 answer).
PREGNANCY = ValueSet.of("pregnancy", _sct("72892002", "77386006", "47200007") + _icd("pregnancy"))
BREASTFEEDING = ValueSet.of("breastfeeding", _sct("169750002") + _icd("breastfeeding"))
INFECTION_ACTIVE = ValueSet.of(
    "infection needing treatment (TB, hepatitis B/C, sepsis)",
    _sct("56717001", "61977001", "128302006", "91302008") + _icd("infection-active"),
)
INFECTION_REVIEW = ValueSet.of(
    "chronic viral infection or latent tuberculosis (review)", _sct("86406008") + _icd("infection-review")
)
# COPD 13645005 "Chronic obstructive lung disease": OHDSI Covid-19 "Chronic lung disease" concept
# set (OHDSI/Covid-19, Vocabulary/sql/phenotypes). 195967001 / 233678006 / 185086009 / 87433001 as
# Synthea emits them.
STEROID_REQUIRING = ValueSet.of(
    "asthma or COPD",
    _sct("195967001", "233678006", "185086009", "87433001", "13645005") + _icd("steroid-requiring"),
)
# 363346000 "Malignant neoplastic disease": the FHIR R4 specification's Condition example f202.
# The other codes as Synthea emits them (criteria-terminology.md §3 E16).
MALIGNANT = ValueSet.of(
    "malignant neoplasm",
    _sct(
        "363346000",
        "254837009",
        "363406005",
        "93761005",
        "109838007",
        "94260004",
        "254632001",
        "424132000",
        "425048006",
        "422968005",
        "423121009",
        "67811000119102",
        "126906006",
        "92691004",
        "94503003",
        "91861009",
        "93143009",
        "109989006",
    )
    + _icd("malignant"),
)
LYMPHOPROLIFERATIVE = ValueSet.of(
    "lymphoproliferative disease",
    _sct("109989006") + _icd("lymphoproliferative"),
)
# 254701007 "Basal cell carcinoma of skin" and 254651007 "Squamous cell carcinoma of skin": public
# dermatology/oncology SNOMED picklists (disorder FSNs) agree; 92564006 cervical CIS / CIN3.
MALIGNANCY_EXCEPTIONS = ValueSet.of(
    "allowed exception (treated BCC/SCC of skin, cervical carcinoma in situ)",
    _sct("254701007", "254651007", "92564006") + _icd("malignancy-exceptions"),
)
MALIGNANCY_HISTORY = ValueSet.of("personal history of malignant neoplasm", _icd("malignancy-history"))
STEM_CELL_TRANSPLANT = ValueSet.of(
    "stem cell transplantation",
    _sct("234336002", "58776007", "58390007", "152621000119105", "108631000119101", "153351000119102")
    + _icd("stem-cell-transplant"),
    text=r"mesenchymal stem cell",
)
SPLENECTOMY = ValueSet.of("splenectomy", _sct("234319005", "67097003", "174776001"))
SPLENECTOMY_HISTORY = ValueSet.of("acquired absence of spleen", _icd("splenectomy-history"))
SURGICAL = ValueSet.of("surgical procedure", _sct("387713003"))
CHEMOTHERAPY = ValueSet.of("chemotherapy", _sct("367336001"))

# --------------------------------------------------------------------------- laboratory

# Panels whose components may carry an analyte (LOINC panel terms, loinc.org/<code>): the service
# fetches them by these codes, the engine reads the matching components.
CBC_PANELS = ValueSet.of(
    "CBC panels",
    [(LOINC, "58410-2"), (LOINC, "57021-8"), (LOINC, "24318-8")],  # CBC auto; CBC w auto diff; manual differential
)
CHEMISTRY_PANELS = ValueSet.of(
    "chemistry panels",
    [(LOINC, "24323-8"), (LOINC, "24321-2"), (LOINC, "24325-3")],  # comprehensive, basic metabolic, hepatic function
)
LIPID_PANELS = ValueSet.of("lipid panels", [(LOINC, "57698-3"), (LOINC, "24331-1")])  # lipid w direct LDL; lipid 1996

DSDNA = Analyte("anti-dsDNA", _loinc("33799-8", "32677-7", "5130-0", "47299-3"), "[IU]/mL")
C3 = Analyte("C3", _loinc("4485-9"), "g/L")
C4 = Analyte("C4", _loinc("4498-2"), "mg/dL")
WBC = Analyte("WBC", _loinc("6690-2", "26464-8"), "10*9/L", panels=CBC_PANELS)
_ENZYME_EQ = {"[iU]/L": "U/L", "[IU]/L": "U/L"}
# ALT/AST with pyridoxal phosphate 1743-4 / 30239-8: the eCQM value sets for ALT and AST (eCQM
# update 2025-05-08, as published in the canvas-sdk value sets) list them with 1742-6 / 1920-8.
ALT = Analyte(
    "ALT", _loinc("1742-6", "1743-4"), "U/L", unit_equivalents=_ENZYME_EQ, default_uln=40, panels=CHEMISTRY_PANELS
)
AST = Analyte(
    "AST", _loinc("1920-8", "30239-8"), "U/L", unit_equivalents=_ENZYME_EQ, default_uln=40, panels=CHEMISTRY_PANELS
)
BILIRUBIN = Analyte(
    "total bilirubin",
    _loinc("1975-2", "42719-5", "14631-6"),
    "mg/dL",
    molar_mass=584.66,
    default_uln=1.2,
    panels=CHEMISTRY_PANELS,
)
CHOLESTEROL = Analyte(
    "total cholesterol",
    _loinc("2093-3", "14647-2", "35200-5"),
    "mg/dL",
    molar_mass=386.65,
    default_uln=200,
    panels=LIPID_PANELS,
)
# Triglyceride [Moles/volume] 14927-8 (mmol/L): the German CDE catalogue's triglyceride profile.
TRIGLYCERIDES = Analyte(
    "triglycerides",
    _loinc("2571-8", "3043-7", "14927-8"),
    "mg/dL",
    molar_mass=885.7,
    default_uln=150,
    panels=LIPID_PANELS,
)
LDL = Analyte(
    "LDL cholesterol",
    _loinc("18262-6", "13457-7", "2089-1", "69419-0", "39469-2", "96258-9"),
    "mg/dL",
    molar_mass=386.65,
    default_uln=130,
    panels=LIPID_PANELS,
)
PROTEIN_24H = Analyte("24-h urine protein", _loinc("2889-4"), "mg/(24.h)")
# 34366-5 Protein/Creatinine [Ratio] in Urine is reported per mmol of creatinine (public LOINC
# mappings: g/mmol{creat}); converted to mg/g with creatinine's molar mass.
UPCR = Analyte("urine protein/creatinine ratio", _loinc("2890-2", "34366-5"), "mg/g", molar_mass=113.12)
EGFR = Analyte(
    "eGFR",
    _loinc(
        "98979-8",
        "62238-1",
        "33914-3",
        "48642-3",
        "48643-1",
        "88293-6",
        "88294-4",
        "50044-7",
        "70969-1",
        "77147-7",
        "69405-9",
        "50210-4",
        "98980-6",
    ),
    "mL/min/{1.73_m2}",
    # eGFR is reported in mL/min/1.73 m2 everywhere; Epic sends ">60" as a valueString with no unit.
    implied_unit="mL/min/{1.73_m2}",
)
CREATININE = Analyte("creatinine", _loinc("2160-0", "38483-4"), "mg/dL", molar_mass=113.12, panels=CHEMISTRY_PANELS)
# Hepatitis screens, read as qualitative results (`PositiveTestReview`): a positive one sends
# exc-infection to review. 5196-1 "Hepatitis B virus surface Ag [Presence] in Serum" (a public
# ValueSet expansion; the Taiwan NHI->LOINC map); 13955-0 "Hepatitis C virus Ab [Presence] in Serum
# or Plasma by Immunoassay" (Taiwan Core IG).
HBSAG = Analyte("HBsAg", _loinc("5196-1"), "1")
HCV_AB = Analyte("HCV antibody", _loinc("13955-0"), "1")
PREGNANCY_TEST = Analyte("pregnancy test / status", _loinc("2106-3", "82810-3"), "1")
SLEDAI_TOTAL = ValueSet.of("SLEDAI-2K total", [(LOCAL_ACTIVITY_SYSTEM, "SLEDAI-2K")], text=r"\bSLEDAI[-\s]?2K\b")

ANALYTES = (
    DSDNA,
    C3,
    C4,
    WBC,
    ALT,
    AST,
    BILIRUBIN,
    CHOLESTEROL,
    TRIGLYCERIDES,
    LDL,
    PROTEIN_24H,
    UPCR,
    EGFR,
    CREATININE,
    PREGNANCY_TEST,
    HBSAG,
    HCV_AB,
)

# --------------------------------------------------------------------------- drugs

O, IV, TOP = RouteClass.ORAL, RouteClass.INTRAVENOUS, RouteClass.TOPICAL


def _p(rxcui: str, name: str, mg: float | None, route: RouteClass, per_ml: bool = False) -> Product:
    return Product(rxcui, name, mg, route, per_ml)


PREDNISONE = Drug(
    "prednisone",
    "8640",
    (
        _p("312615", "predniSONE 20 MG Oral Tablet", 20, O),
        _p("312617", "predniSONE 5 MG Oral Tablet", 5, O),
        _p("198145", "predniSONE 10 MG Oral Tablet", 10, O),
        _p("198146", "predniSONE 2.5 MG Oral Tablet", 2.5, O),
        _p("198148", "predniSONE 50 MG Oral Tablet", 50, O),
        _p("198144", "predniSONE 1 MG Oral Tablet", 1, O),
        _p("205301", "predniSONE 5 MG/ML Oral Solution", 5, O, per_ml=True),
        _p("567645", "predniSONE 2.5 MG Oral Tablet [Deltasone]", 2.5, O),
    ),
    extra_codes=((RXNORM, "1303125"), (RXNORM, "1303132"), (RXNORM, "1303135")),
    name_pattern=r"\bprednisone\b",
    prednisone_factor=1.0,
)
PREDNISOLONE = Drug(
    "prednisolone",
    "8638",
    (_p("198142", "prednisoLONE 5 MG Oral Tablet", 5, O),),
    extra_codes=((RXNORM, "429199"), (RXNORM, "312614"), (RXNORM, "249066"), (RXNORM, "702306")),
    name_pattern=r"\bprednisolone\b",
    prednisone_factor=1.0,
)
METHYLPREDNISOLONE = Drug(
    "methylprednisolone",
    "6902",
    (
        _p("259966", "methylPREDNISolone 4 MG Oral Tablet", 4, O),
        _p("197969", "methylPREDNISolone 2 MG Oral Tablet", 2, O),
        _p("197973", "methylPREDNISolone 8 MG Oral Tablet", 8, O),
        _p("328161", "methylPREDNISolone 16 MG Oral Tablet", 16, O),
        _p("197971", "methylPREDNISolone 32 MG Oral Tablet", 32, O),
    ),
    extra_codes=((RXNORM, "203189"), (RXNORM, "155323"), (RXNORM, "203856"), (RXNORM, "202702")),
    name_pattern=r"methyl\s*prednisolone|solu-?medrol|\bmedrol\b",
    prednisone_factor=1.25,
)
TRIAMCINOLONE = Drug("triamcinolone", "10759", name_pattern=r"triamcinolone", prednisone_factor=1.25)
HYDROCORTISONE = Drug(
    "hydrocortisone",
    "5492",
    (
        _p("197783", "hydrocortisone 20 MG Oral Tablet", 20, O),
        _p("197787", "hydrocortisone 5 MG Oral Tablet", 5, O),
        _p("106258", "hydrocortisone 10 MG/ML Topical Cream", None, TOP),
    ),
    name_pattern=r"hydrocortisone",
    prednisone_factor=0.25,
)
CORTISONE = Drug("cortisone", "2878", name_pattern=r"\bcortisone\b", prednisone_factor=0.2)
DEXAMETHASONE = Drug(
    "dexamethasone",
    "3264",
    (_p("2261802", "dexamethasone 20 MG Oral Tablet", 20, O),),
    extra_codes=tuple((RXNORM, c) for c in ("197577", "197579", "197580", "197581", "197582", "197583")),
    name_pattern=r"dexamethasone",
    prednisone_factor=5 / 0.75,
)
# Betamethasone: 0.75 mg (FDA prednisolone label) vs 0.6 mg (other tables) = 5 mg prednisone; the
# label value is used. Deflazacort: 6 mg = 5 mg prednisone (SmPC).
BETAMETHASONE = Drug("betamethasone", "1514", name_pattern=r"betamethasone", prednisone_factor=5 / 0.75)
DEFLAZACORT = Drug(
    "deflazacort",
    "22396",
    (
        _p("153098", "deflazacort 6 MG Oral Tablet", 6, O),
        _p("153880", "deflazacort 30 MG Oral Tablet", 30, O),
        _p("1870954", "deflazacort 18 MG Oral Tablet", 18, O),
    ),
    name_pattern=r"deflazacort",
    prednisone_factor=5 / 6,
)
GLUCOCORTICOIDS = (
    PREDNISONE,
    PREDNISOLONE,
    METHYLPREDNISOLONE,
    TRIAMCINOLONE,
    HYDROCORTISONE,
    CORTISONE,
    DEXAMETHASONE,
    BETAMETHASONE,
    DEFLAZACORT,
)

HYDROXYCHLOROQUINE = Drug(
    "hydroxychloroquine",
    "5521",
    (_p("979092", "Hydroxychloroquine Sulfate 200 MG Oral Tablet", 200, O),),
    extra_codes=((RXNORM, "153972"), (RXNORM, "202462")),
    name_pattern=r"hydroxychloroquine|plaquenil",
)
CHLOROQUINE = Drug(
    "chloroquine",
    "2393",
    (_p("1116758", "chloroquine phosphate 500 MG Oral Tablet", 500, O),),
    name_pattern=r"(?<!hydroxy)chloroquine",
)
QUINACRINE = Drug("quinacrine", None, name_pattern=r"quinacrine|mepacrine")
MMF = Drug(
    "mycophenolate mofetil",
    "68149",
    (
        _p("200060", "mycophenolate mofetil 500 MG Oral Tablet", 500, O),
        _p("199058", "mycophenolate mofetil 250 MG Oral Capsule", 250, O),
        _p("311880", "mycophenolate mofetil 200 MG/ML Oral Suspension", 200, O, per_ml=True),
        _p("1726176", "mycophenolate mofetil Injection", None, IV),
    ),
    extra_codes=((RXNORM, "152633"),),
    name_pattern=r"mycophenolate\s+mofetil|cellcept",
)
MPA = Drug(
    "mycophenolic acid",
    "7145",
    (
        _p("485020", "mycophenolic acid 180 MG Delayed Release Oral Tablet", 180, O),
        _p("485023", "mycophenolic acid 360 MG Delayed Release Oral Tablet", 360, O),
    ),
    name_pattern=r"mycophenolic\s+acid|mycophenolate\s+sodium|myfortic",
)
METHOTREXATE = Drug(
    "methotrexate",
    "6851",
    (
        _p("105585", "methotrexate 2.5 MG Oral Tablet", 2.5, O),
        _p("105586", "methotrexate 10 MG Oral Tablet", 10, O),
        _p("1921592", "methotrexate 2.5 MG/ML Oral Solution", 2.5, O, per_ml=True),
    ),
    name_pattern=r"methotrexate",
)
AZATHIOPRINE = Drug(
    "azathioprine",
    "1256",
    (
        _p("197388", "azathioprine 50 MG Oral Tablet", 50, O),
        _p("199310", "azathioprine 25 MG Oral Tablet", 25, O),
        _p("239983", "azathioprine Injection", None, IV),
    ),
    extra_codes=((RXNORM, "359228"), (RXNORM, "359229")),
    name_pattern=r"azathioprine",
)
# leflunomide IN 27169: NIH RxNav ingredient (public RxNav-derived ingredient table).
LEFLUNOMIDE = Drug(
    "leflunomide",
    "27169",
    extra_codes=tuple((RXNORM, c) for c in ("205284", "205285", "205286")),
    name_pattern=r"leflunomide",
)
ANTIMALARIALS_IMMUNOSUPPRESSANTS = (
    HYDROXYCHLOROQUINE,
    CHLOROQUINE,
    QUINACRINE,
    MMF,
    MPA,
    METHOTREXATE,
    AZATHIOPRINE,
    LEFLUNOMIDE,
)

OTHER_STABLE_MEDS = (
    Drug(
        "lisinopril",
        "29046",
        (
            _p("314076", "lisinopril 10 MG Oral Tablet", 10, O),
            _p("314077", "lisinopril 20 MG Oral Tablet", 20, O),
        ),
        name_pattern=r"lisinopril",
    ),
    Drug("enalapril", "3827", name_pattern=r"enalapril"),
    Drug("captopril", "1998", name_pattern=r"captopril"),
    Drug("ramipril", "35296", name_pattern=r"ramipril"),
    Drug("benazepril", "18867", name_pattern=r"benazepril"),
    Drug("quinapril", "35208", name_pattern=r"quinapril"),
    Drug(
        "losartan",
        "52175",
        (_p("979492", "losartan potassium 50 MG Oral Tablet", 50, O),),
        name_pattern=r"losartan",
    ),
    Drug(
        "other ARB",
        None,
        extra_codes=tuple((RXNORM, c) for c in ("200094", "200095", "200096")),
        name_pattern=r"valsartan|irbesartan|telmisartan|olmesartan|candesartan",
    ),
    Drug("ibuprofen", "5640", name_pattern=r"ibuprofen"),
    Drug(
        "naproxen",
        "7258",
        (
            _p("849574", "Naproxen sodium 220 MG Oral Tablet", 220, O),
            _p("198014", "naproxen 500 MG Oral Tablet", 500, O),
        ),
        name_pattern=r"naproxen",
    ),
    Drug("celecoxib", "140587", name_pattern=r"celecoxib"),
    Drug("diclofenac", "3355", name_pattern=r"diclofenac"),
    Drug("aspirin", "1191", name_pattern=r"\baspirin\b|acetylsalicylic"),
    Drug("meloxicam", None, name_pattern=r"meloxicam"),
    Drug(
        "acetaminophen",
        "161",
        (_p("198440", "acetaminophen 500 MG Oral Tablet", 500, O),),
        name_pattern=r"acetaminophen|paracetamol",
    ),
    Drug("tramadol", "10689", name_pattern=r"tramadol"),
    Drug(
        "opioid analgesic",
        None,
        name_pattern=r"oxycodone|hydrocodone|morphine|codeine|hydromorphone|tapentadol",
    ),
)

SIROLIMUS = Drug(
    "sirolimus",
    "35302",
    (
        _p("360110", "sirolimus 2 MG Oral Tablet", 2, O),
        _p("349208", "sirolimus 1 MG Oral Tablet", 1, O),
        _p("905158", "sirolimus 0.5 MG Oral Tablet", 0.5, O),
        _p("314230", "sirolimus 1 MG/ML Oral Solution", 1, O, per_ml=True),
    ),
    extra_codes=((RXNORM, "258355"),),
    name_pattern=r"sirolimus|rapamycin|rapamune",
)
CYCLOPHOSPHAMIDE = Drug(
    "cyclophosphamide",
    "3002",
    (
        _p("1734917", "cyclophosphamide 500 MG Injection", 500, IV),
        _p("1734919", "cyclophosphamide 1000 MG Injection", 1000, IV),
        _p("1734921", "cyclophosphamide 2000 MG Injection", 2000, IV),
        _p("1734916", "cyclophosphamide Injection", None, IV),
        _p("197549", "cyclophosphamide 25 MG Oral Tablet", 25, O),
        _p("197550", "cyclophosphamide 50 MG Oral Tablet", 50, O),
        _p("1437968", "cyclophosphamide 25 MG Oral Capsule", 25, O),
        _p("1437969", "cyclophosphamide 50 MG Oral Capsule", 50, O),
    ),
    name_pattern=r"cyclophosphamide",
)
TACROLIMUS = Drug(
    "tacrolimus",
    "42316",
    (
        _p("198377", "tacrolimus 1 MG Oral Capsule", 1, O),
        _p("198378", "tacrolimus 5 MG Oral Capsule", 5, O),
        _p("1431987", "tacrolimus Extended Release Oral", None, O),
        _p("1664463", "tacrolimus Extended Release Oral", None, O),
        _p("108515", "tacrolimus Injection", None, IV),
        _p("284520", "tacrolimus Topical Ointment", None, TOP),
    ),
    extra_codes=((RXNORM, "196463"),),
    name_pattern=r"tacrolimus|prograf",
)
CYCLOSPORINE = Drug(
    "cyclosporine",
    "3008",
    (
        _p("241834", "cycloSPORINE, modified 100 MG Oral Capsule", 100, O),
        _p("835900", "cycloSPORINE, modified 100 MG Oral Capsule [Neoral]", 100, O),
    ),
    extra_codes=tuple(
        (RXNORM, c) for c in ("236077", "835894", "835925", "835886", "328160", "197553", "202817", "202816")
    ),
    name_pattern=r"cyclosporin|ciclosporin|neoral|sandimmune",
)
VOCLOSPORIN = Drug("voclosporin", None, name_pattern=r"voclosporin")
IVIG = Drug(
    "intravenous immunoglobulin",
    None,
    name_pattern=r"immune\s+globulin|immunoglobulin\s*G|\bIVIG\b|gamunex|privigen|octagam|gammagard|flebogamma",
)
TRIPTERYGIUM = Drug(
    "Tripterygium wilfordii", None, name_pattern=r"tripterygium|\bTwHF\b|雷公藤|lei\s*gong\s*teng|triptolide"
)
ANTI_INFECTIVES = (
    Drug("isoniazid", "6038", name_pattern=r"isoniazid"),
    Drug(
        "antibiotic or antiviral (by name)",
        None,
        name_pattern=(
            r"rifamp|rifabutin|pyrazinamide|ethambutol|amoxicillin|ampicillin|penicillin|cef|ceph|azithromycin|"
            r"clarithromycin|erythromycin|doxycycline|minocycline|ciprofloxacin|levofloxacin|moxifloxacin|"
            r"trimethoprim|sulfamethoxazole|nitrofurantoin|metronidazole|clindamycin|vancomycin|linezolid|"
            r"meropenem|imipenem|piperacillin|gentamicin|tobramycin|amikacin|tenofovir|entecavir|lamivudine|"
            r"sofosbuvir|ledipasvir|velpatasvir|glecaprevir|ribavirin|oseltamivir|acyclovir|valacyclovir|"
            r"ganciclovir|valganciclovir|remdesivir|nirmatrelvir"
        ),
    ),
)

SYSTEMIC_OR_UNKNOWN = SYSTEMIC_ROUTES | {RouteClass.UNKNOWN}
IV_ROUTE = frozenset({RouteClass.INTRAVENOUS, RouteClass.UNKNOWN})

# An allergy may name the ingredient, a clinical drug or the brand (Rapamune): the drug's own codes
# and name pattern (ingredient, products, brand) are the allergy value set.
SIROLIMUS_ALLERGY = ValueSet.of("sirolimus allergy", SIROLIMUS.value_set.codes, text=SIROLIMUS.name_pattern)

# --------------------------------------------------------------------------- criteria

# Windows (days before the as-of date, both ends included): each rule takes its own; the service's
# Observation look-back, prefetch and queries are derived from them (`cds.engine.reads`).
SAFETY_LAB_DAYS = 30  # safety labs: WBC, liver enzymes, bilirubin and lipids, renal function
SEROLOGY_DAYS = 30  # anti-dsDNA and C3 for "serologically active"
SLEDAI_DAYS = 30  # a recorded SLEDAI-2K total, and the labs behind its serology or derived items
PREGNANCY_TEST_DAYS = 7  # a pregnancy test or status at screening

I, E = Kind.INCLUSION, Kind.EXCLUSION

CRITERIA = (
    Criterion(
        "inc-age",
        I,
        "Age 18-65 (living patient)",
        "Age between 18~65 years",
        "18 <= completed years <= 65 on the as-of date; a deceased patient is not a candidate",
        "Patient.birthDate, Patient.deceased[x]",
        "no birth date; a partial birth date whose possible ages straddle a limit",
        AgeRange(18, 65),
    ),
    Criterion(
        "inc-sle-diagnosis",
        I,
        "SLE diagnosis (SLICC 2012 proxy)",
        "Fulfilling the 2012 SLICC criteria for SLE",
        "a coded SLE diagnosis (SNOMED 55464009 and SLE descendants; ICD-10-CM M32.1x, M32.8, M32.9) as proxy "
        "for SLICC; only generic/drug-induced lupus (SNOMED 200936003, 201436003; M32.0) -> met (derived) when "
        "SLICC 2012 computed from the chart holds (>= 4 of 17 items, >= 1 clinical and >= 1 immunologic, items "
        "cumulative over the record; or biopsy-proven lupus nephritis with ANA or anti-dsDNA), else unknown; "
        "no lupus code or cutaneous lupus only -> not met",
        "Condition (not refuted / entered-in-error); for SLICC: coded findings, ANA, anti-dsDNA, anti-Sm, "
        "antiphospholipid tests, C3/C4/CH50, direct Coombs, WBC, lymphocytes, platelets, urine protein, RBC casts",
        "conditions not available; only a generic or drug-induced lupus code and SLICC not established",
        SliccDiagnosis(
            CodedDiagnosis(
                SLE,
                LUPUS_NOT_SPECIFIC,
                LUPUS_CUTANEOUS_ONLY,
                "SLE",
                review_counts_when=lambda p: p.generic_lupus_counts_as_sle,
                review_only=REVIEW_ONLY,
                not_sufficient_only=NOT_SUFFICIENT_ONLY,
            ),
            sle_items.SLICC,
        ),
    ),
    Criterion(
        "inc-sle-duration",
        I,
        "SLE diagnosed >= 3 months ago",
        "time from SLE diagnosis >= 3 months",
        "earliest SLE onset (or recordedDate, an upper bound) at least 3 calendar months before the as-of date",
        "Condition.onset[x], Condition.recordedDate",
        "no SLE diagnosis; no onset or recorded date; a partial date straddling the cutoff",
        DiagnosisAge(SLE, LUPUS_NOT_SPECIFIC, 3, "SLE"),
    ),
    Criterion(
        "inc-sledai",
        I,
        "Clinical SLEDAI-2K >= 4",
        "SLEDAI-2K score of >=4 (not including scores for anti-dsDNA antibody and hypocomplementemia)",
        "latest recorded SLEDAI-2K total in 30 days: >= 8 met (serology adds at most 4); < 4 not met; 4-7: "
        "subtract the serology points (dsDNA above the lab ULN: 2; C3 or C4 below the lab LLN: 2); a SLEDAI-2K "
        "QuestionnaireResponse: item scores without the serology items, or its total; no recorded total: "
        "lab-derived lower bound in 30 days (casts, hematuria > 5 RBC/HPF, proteinuria > 0.5 g/24 h or UPCR "
        "> 500 mg/g, pyuria > 5 WBC/HPF: 4 each; platelets < 100, WBC < 3 x10^9/L, fever > 38 Cel: 1 each) "
        ">= 4 -> met (derived; exclude infection or stone to verify)",
        "Observation: SLEDAI-2K total (local code or code text naming SLEDAI-2K), anti-dsDNA, C3, C4, urine "
        "sediment, urine protein, platelets, WBC, body temperature; QuestionnaireResponse (SLEDAI-2K form)",
        "no SLEDAI-2K total in 30 days and a lab-derived lower bound < 4; total 4-7 with serology points "
        "undeterminable",
        DerivedClinicalSledai(ClinicalSledai(SLEDAI_TOTAL, 4, 4, (DSDNA,), (C3, C4), SLEDAI_DAYS), sle_items.SLEDAI),
    ),
    Criterion(
        "inc-serology",
        I,
        "Serologically active",
        "positive anti-dsDNA antibody (>10IU/ml) or hypocomplementemia (C3<0.90g/L)",
        "latest anti-dsDNA in 30 days > 10 [IU]/mL, or latest C3 < 0.90 g/L; both negative -> not met",
        "Observation: anti-dsDNA (LOINC 33799-8, 32677-7, 5130-0, 47299-3), C3 (4485-9)",
        "a missing analyte when the other is negative; dsDNA in non-IU units (U/mL); comparator values",
        Serology(DSDNA, 10.0, C3, 0.90, SEROLOGY_DAYS),
    ),
    Criterion(
        "inc-steroid-stable",
        I,
        "Oral corticosteroid 0-20 mg/day stable >= 4 weeks",
        "a stable regimen of oral corticoids (0-20 mg/day, prednisone or equivalent) >=4 weeks",
        "oral glucocorticoids over the last 28 days: none (med list current) or an unchanged dose started "
        "before the window, total prednisone-equivalent <= 20 mg/day",
        "MedicationStatement/Request/Administration, Dosage (doseQuantity x strength, timing)",
        "dose not computable; as-needed; stop date unrecorded; medication list not current",
        StableRegimen(GLUCOCORTICOIDS, "oral corticosteroid", 28, frozenset({RouteClass.ORAL}), total_cap=20.0),
    ),
    Criterion(
        "inc-immunosuppressant-stable",
        I,
        "Antimalarial / immunosuppressant stable >= 12 weeks",
        "doses of antimalarials, or immunosuppressive agents (MMF/MPA <=1.5g/day, or MTX <=15mg/week) stable for at least 12 weeks",
        "antimalarials and immunosuppressants over the last 84 days: none (med list current) or unchanged "
        "doses started before the window; MMF and MPA <= 1500 mg/day; MTX <= 15 mg/week",
        "MedicationStatement/Request/Administration, Dosage",
        "dose not computable; stop date unrecorded; medication list not current",
        StableRegimen(
            ANTIMALARIALS_IMMUNOSUPPRESSANTS,
            "antimalarial/immunosuppressant",
            84,
            SYSTEMIC_OR_UNKNOWN,
            caps=(
                DoseCap((MMF,), 1500, "day", "MMF"),
                DoseCap((MPA,), 1500, "day", "MPA"),
                DoseCap((METHOTREXATE,), 15, "week", "MTX"),
            ),
        ),
    ),
    Criterion(
        "inc-other-meds-stable",
        I,
        "ACEi/ARB, NSAIDs, analgesics stable >= 2 weeks",
        "ACE inhibitors or ARBs, NSAIDs or other analgesics should be stable for at least 2 weeks",
        "ACEi/ARB/NSAID/analgesic regimens unchanged over the last 14 days (none counts as stable)",
        "MedicationStatement/Request/Administration, Dosage",
        "as-needed analgesics; dose not computable; medication list not current",
        StableRegimen(OTHER_STABLE_MEDS, "ACEi/ARB/NSAID/analgesic", 14, SYSTEMIC_OR_UNKNOWN),
    ),
    Criterion(
        "exc-other-ctd",
        E,
        "Other connective tissue / inflammatory disease",
        "Concomitant connective tissue disease or inflammatory disease (systemic sclerosis, RA, DM/PM, etc.)",
        "a concomitant (clinically active) systemic sclerosis, RA, dermatomyositis, polymyositis, Sjogren or "
        "vasculitis code; in remission or only unconfirmed -> review; resolved / inactive only -> not met",
        "Condition (clinicalStatus, verificationStatus)",
        "conditions not available; in remission; unconfirmed / provisional / differential",
        ConditionPresent(OTHER_CTD, "other connective tissue disease", mode="concomitant"),
    ),
    Criterion(
        "exc-npsle",
        E,
        "Neuropsychiatric SLE",
        "Neuropsychiatric SLE",
        "any non-refuted NPSLE code (SNOMED 95644001 SLE encephalitis, 193178008 polyneuropathy in LE)",
        "Condition",
        "conditions not available",
        ConditionPresent(NPSLE, "neuropsychiatric SLE"),
    ),
    Criterion(
        "exc-severe-nephritis",
        E,
        "Severe active lupus nephritis",
        "urinary protein >=3.5g/24h or urine protein/creatinine ratio >3500mg/g or eGFR <60ml/1.73m2/min",
        "latest in 30 days: 24-h protein >= 3500 mg/24 h, or UPCR > 3500 mg/g, or eGFR < 60 (CKD-EPI 2021 from "
        "creatinine when no eGFR, flagged DERIVED); not met needs eGFR and a proteinuria measure",
        "Observation: 2889-4, 2890-2, eGFR codes, creatinine 2160-0/38483-4",
        "no eGFR or no proteinuria measure in 30 days; unconvertible units",
        RenalSeverity(PROTEIN_24H, UPCR, EGFR, CREATININE, 3500, 3500, 60, SAFETY_LAB_DAYS),
    ),
    Criterion(
        "exc-pregnancy",
        E,
        "Pregnant or breast-feeding",
        "Pregnant or breast-feeding women",
        "active pregnancy/breastfeeding condition, or positive hCG/pregnancy status in 7 days -> met; male -> not "
        "met; negative test in 7 days -> not met",
        "Patient.gender, Condition (incl. ICD-10-CM O00-O9A, Z33.1, Z33.3, Z34, Z3A, Z39.1), Observation 2106-3 / "
        "82810-3",
        "female (or unknown sex) without a pregnancy test or status in the last 7 days",
        Pregnancy(
            PREGNANCY,
            BREASTFEEDING,
            PREGNANCY_TEST,
            frozenset({"77386006", "10828004", "POS"}),
            frozenset({"260385009", "60001007", "NEG"}),
            PREGNANCY_TEST_DAYS,
        ),
    ),
    Criterion(
        "exc-sirolimus",
        E,
        "Prior sirolimus or sirolimus allergy",
        "Previous treatment with sirolimus or allergic to sirolimus",
        "any systemic sirolimus exposure ever, or a non-refuted sirolimus allergy",
        "MedicationStatement/Request/Administration, AllergyIntolerance",
        "undated course; medication list not current",
        DrugExposure((SIROLIMUS,), "sirolimus", None, SYSTEMIC_OR_UNKNOWN, allergy=SIROLIMUS_ALLERGY),
    ),
    Criterion(
        "exc-iv-cyclophosphamide",
        E,
        "IV cyclophosphamide within 6 months",
        "Intravenous CTX within 6 months of enrollment",
        "cyclophosphamide by IV (or injectable product with no route) within 183 days; oral forms do not count",
        "MedicationAdministration/Request/Statement, Procedure (chemotherapy -> review)",
        "undated course; chemotherapy procedure without the agent; medication list not current",
        DrugExposure((CYCLOPHOSPHAMIDE,), "IV cyclophosphamide", 183, IV_ROUTE, review_procedures=CHEMOTHERAPY),
    ),
    Criterion(
        "exc-ivig-high-dose-steroid",
        E,
        "IVIG or prednisone > 100 mg/day within 3 months",
        "Intravenous immunoglobulin or prednisone dose >100mg/day within 3 months",
        "intravenous immunoglobulin within 91 days (immunoglobulin by another route does not count; no route -> "
        "review), or any systemic glucocorticoid dose > 100 mg/day prednisone-equivalent within 91 days",
        "Medication resources (IVIG by name, route), Dosage",
        "immunoglobulin without a route; parenteral steroid without a computable dose; medication list not current",
        AnyOf(
            (
                DrugExposure(
                    (IVIG,),
                    "IVIG",
                    91,
                    frozenset({RouteClass.INTRAVENOUS}),
                    review_routes=frozenset({RouteClass.UNKNOWN}),
                ),
                SteroidDoseAbove(GLUCOCORTICOIDS, 100.0, 91),
            )
        ),
    ),
    Criterion(
        "exc-calcineurin",
        E,
        "Calcineurin inhibitor within 1 month",
        "Calcineurin inhibitors (e.g., tacrolimus or cyclosporin A) within 1 month",
        "systemic tacrolimus, cyclosporine or voclosporin within 30 days (topical/ophthalmic forms excluded)",
        "Medication resources",
        "undated course; medication list not current",
        DrugExposure((TACROLIMUS, CYCLOSPORINE, VOCLOSPORIN), "calcineurin inhibitor", 30, SYSTEMIC_OR_UNKNOWN),
    ),
    Criterion(
        "exc-tripterygium",
        E,
        "Tripterygium / traditional Chinese herb within 1 month",
        "Traditional Chinese Herb (such as Tripterygium wilfordii Hook F) within 1 month",
        "a medication named Tripterygium / TwHF / lei gong teng / triptolide within 30 days (no RxNorm code exists)",
        "Medication resources (text)",
        "medication list not current (herbal products are often unrecorded)",
        DrugExposure((TRIPTERYGIUM,), "Tripterygium wilfordii", 30, frozenset(RouteClass)),
    ),
    Criterion(
        "exc-infection",
        E,
        "Active or uncontrolled infection",
        "Concurrent active or uncontrolled infection (such as tuberculosis and hepatitis) requiring antibiotics or antivirus",
        "active TB / hepatitis B or C / sepsis with onset in 90 days, or an antibiotic/antiviral TREATING an infection "
        "in 14 days -> met; prophylaxis (reason, or an intermittent or 90+ day regimen with no infection recorded), "
        "older active chronic infection, HIV, latent TB, or a latest HBsAg / HCV antibody result (any date) "
        "that is positive -> review",
        "Condition, Medication resources (reasonCode / reasonReference, timing), Observation 5196-1, 13955-0",
        "conditions or medications not available; chronic infection (review); prophylactic anti-infective (review); "
        "positive hepatitis screen (review)",
        AnyOf(
            (
                ConditionPresent(
                    INFECTION_ACTIVE,
                    "active infection",
                    mode="active-recent",
                    recent_days=90,
                    review=INFECTION_REVIEW,
                    review_reason="chronic infection: needs investigator review",
                ),
                AntiInfectiveTreatment(
                    ANTI_INFECTIVES,
                    "antibiotic/antiviral treatment",
                    14,
                    SYSTEMIC_OR_UNKNOWN,
                    infections=INFECTION_ACTIVE | INFECTION_REVIEW,
                ),
                PositiveTestReview(
                    (HBSAG, HCV_AB),
                    "hepatitis B surface antigen / hepatitis C antibody",
                    "positive hepatitis B surface antigen or hepatitis C antibody: active infection to be reviewed",
                ),
            )
        ),
    ),
    Criterion(
        "exc-leukopenia",
        E,
        "WBC < 3 x10^9/L",
        "WBC count <3×10^9/L",
        "latest WBC in 30 days < 3.0 10*9/L",
        "Observation 6690-2, 26464-8",
        "no WBC in 30 days; unconvertible unit",
        LabTest(WBC, "<", 3.0, SAFETY_LAB_DAYS),
    ),
    Criterion(
        "exc-liver-enzymes",
        E,
        "ALT or AST > 1.5 x ULN",
        "ALT or AST >1.5 times upper limit of laboratory reference range",
        "latest ALT or AST in 30 days > 1.5 x ULN (referenceRange.high; else site default 40 U/L, ULN_ASSUMED)",
        "Observation 1742-6, 1920-8",
        "either analyte missing while the other is normal",
        AnyOf(
            (
                LabTest(ALT, ">", 1.5, SAFETY_LAB_DAYS, relative_to="uln"),
                LabTest(AST, ">", 1.5, SAFETY_LAB_DAYS, relative_to="uln"),
            )
        ),
    ),
    Criterion(
        "exc-bilirubin-lipids",
        E,
        "Bilirubin or lipids > 2 x ULN",
        "total bilirubin or blood lipid (total cholesterol, triglycerides, LDL) >2 times upper limit",
        "latest total bilirubin, total cholesterol, triglycerides or LDL in 30 days > 2 x ULN (defaults 1.2, 200, 150, "
        "130 mg/dL, ULN_ASSUMED)",
        "Observation (bilirubin, cholesterol, triglycerides, LDL; mg/dL or mmol/L / umol/L)",
        "any of the four missing while none is high",
        AnyOf(
            tuple(
                LabTest(a, ">", 2.0, SAFETY_LAB_DAYS, relative_to="uln")
                for a in (BILIRUBIN, CHOLESTEROL, TRIGLYCERIDES, LDL)
            )
        ),
    ),
    Criterion(
        "exc-steroid-requiring-condition",
        E,
        "Condition needing repeated systemic steroids",
        "Any condition that may require multiple courses of systemic corticosteroids (e.g., uncontrolled asthma, COPD)",
        "active asthma or COPD with >= 2 systemic steroid courses for it in 12 months -> met; asthma/COPD alone -> "
        "review (control is not coded); none -> not met",
        "Condition",
        "active asthma/COPD (needs review); conditions not available",
        SteroidRequiringCondition(STEROID_REQUIRING, GLUCOCORTICOIDS, min_courses=2, days=365),
    ),
    Criterion(
        "exc-major-surgery",
        E,
        "Major surgery within 1 month",
        "Major surgery within the past month",
        "splenectomy within 30 days -> met; other surgical procedure (SNOMED 387713003 code or category) within "
        "30 days -> review",
        "Procedure",
        "surgery in the window (major vs minor); procedures not available",
        RecentSurgery(SPLENECTOMY, SURGICAL, 30),
    ),
    Criterion(
        "exc-malignancy",
        E,
        "Malignancy within 5 years or lymphoproliferative disease",
        "malignant tumors within 5 years, or lymphoproliferative diseases (treated cutaneous SCC/BCC, cured cervical CIS allowed)",
        "malignancy (SNOMED 363346000 and listed descendants; ICD-10-CM C00-C96, D00-D09) active or with "
        "onset/abatement within 5 years, or lymphoproliferative disease ever; treated BCC/SCC of skin / cervical "
        "CIS do not count; a personal history code (ICD-10-CM Z85) -> review",
        "Condition",
        "undated malignancy; untreated allowed exception; personal history of malignancy (Z85)",
        AnyOf(
            (
                Malignancy(MALIGNANT, LYMPHOPROLIFERATIVE, MALIGNANCY_EXCEPTIONS, 5),
                ConditionPresent(
                    ValueSet.of("no code: malignancy history is reviewed"),
                    "personal history of malignancy",
                    review=MALIGNANCY_HISTORY,
                    review_reason="personal history of malignancy (Z85): dates need review",
                ),
            )
        ),
    ),
    Criterion(
        "exc-stem-cell-transplant",
        E,
        "Previous stem cell transplantation",
        "Previous stem cell transplantation (haematopoietic or mesenchymal)",
        "any HSCT/BMT procedure or history condition (incl. ICD-10-CM Z94.81, Z94.84), or text naming "
        "mesenchymal stem cells",
        "Procedure, Condition",
        "procedures or conditions not available",
        ConditionPresent(STEM_CELL_TRANSPLANT, "stem cell transplantation", also_procedures=STEM_CELL_TRANSPLANT),
    ),
    Criterion(
        "exc-splenectomy",
        E,
        "History of splenectomy",
        "Have a history of splenectomy",
        "any splenectomy procedure (total or partial), or acquired absence of spleen (ICD-10-CM Z90.81)",
        "Procedure, Condition",
        "procedures or conditions not available",
        ConditionPresent(SPLENECTOMY_HISTORY, "splenectomy", also_procedures=SPLENECTOMY),
    ),
    Criterion(
        "exc-investigator-judgment",
        E,
        "Investigator judgment",
        "conditions that may lead to dropping out or bring risk, judged by experienced clinicians",
        "always left to the investigator",
        "-",
        "always",
        AlwaysReview("requires investigator judgment"),
        settleable=False,
    ),
)

TRIAL = Trial(
    id="NCT04582136",
    title="Sirolimus in active SLE (NCT04582136)",
    url="https://clinicaltrials.gov/study/NCT04582136",
    criteria=CRITERIA,
    analytes=ANALYTES + sle_items.ANALYTES,
    applicability=SLE | LUPUS_NOT_SPECIFIC | LUPUS_CUTANEOUS_ONLY,
)
