"""NCT04582136 — Efficacy and Safety of Sirolimus in Active Systemic Lupus Erythematosus.

Everything trial-specific lives here: value sets (system + code), analytes and their units,
drug tables (RxNorm ingredient and clinical-drug codes with strengths), thresholds and windows.

Terminology source: shared/reference/criteria-terminology.md. Only codes marked verified (✅) or
seen in a secondary source (☑️) there are used. Codes it marks unverified (⚠️) are LEFT OUT and
listed in `UNVERIFIED_LEFT_OUT` below; where a drug or finding has no verified code, a name pattern
is used instead (names are verifiable by reading them). Exceptions, each stated where used:
ICD-10-CM M32.8 (named by the issue itself) and block-level ICD-10-CM prefixes (M05/M06 RA,
M33 dermato-/polymyositis, M34 systemic sclerosis, M35.0 Sjögren, A15-A19 tuberculosis, C malignant
neoplasms, D06 cervical carcinoma in situ) whose chapter structure is standard; individual
sub-codes are not enumerated.
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
    AnyOf,
    ClinicalSledai,
    CodedDiagnosis,
    ConditionPresent,
    DiagnosisAge,
    DoseCap,
    DrugExposure,
    LabTest,
    Malignancy,
    Pregnancy,
    RecentSurgery,
    RenalSeverity,
    Serology,
    StableRegimen,
    SteroidDoseAbove,
    SteroidRequiringCondition,
)
from cds.engine.sledai import DerivedClinicalSledai
from cds.engine.slicc import SliccDiagnosis
from cds.engine.trial import Criterion, Trial
from cds.trials import nct04582136_sle_items as sle_items

LOCAL_ACTIVITY_SYSTEM = "https://github.com/nct04582136-cds/CodeSystem/disease-activity"

UNVERIFIED_LEFT_OUT = {
    "SNOMED": "COPD 13645005; malignant neoplastic disease 363346000; SCC of skin 254651007; sirolimus "
    "substance; oral/IV route qualifiers (26643006, 47625008); SLEDAI item findings; breastfeeding 413712001",
    "ICD-10-CM": "M35.1 MCTD; Z22.7/R76.1x latent TB; B16-B19 hepatitis; Z33.1/Z34/O00-O9A pregnancy; "
    "Z39.1; J44/J43/J45; Z85; Z94.8x; Z90.81; D00-D09 other than D06; C44.x2 SCC",
    "RxNorm": "IVIG ingredient; belimumab ingredient; quinacrine 9061; leflunomide 27169; voclosporin; "
    "valsartan/irbesartan/telmisartan/olmesartan/candesartan ingredients; meloxicam; rifampin",
    "LOINC": "HBsAg, HCV Ab, IGRA, CH50, UPCR in mg/mmol, triglycerides 14927-8, ALT/AST P5P variants",
    "timing": "GTSAbbreviation WK and MO",
}


def _sct(*codes: str) -> list[tuple[str, str]]:
    return [(SNOMED, c) for c in codes]


def _loinc(*codes: str) -> ValueSet:
    return ValueSet.of("LOINC " + ",".join(codes), [(LOINC, c) for c in codes])


# --------------------------------------------------------------------------- conditions

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
    + [(ICD10CM, "M32.8"), (ICD10CM, "M32.9")],
    prefixes=[(ICD10CM, "M32.1")],
)
LUPUS_NOT_SPECIFIC = ValueSet.of(
    "lupus, SLE not confirmed (generic or drug-induced)",
    _sct("200936003", "201436003") + [(ICD10CM, "M32.0")],
)
LUPUS_CUTANEOUS_ONLY = ValueSet.of(
    "cutaneous or neonatal lupus only",
    _sct("7119001", "200938002", "239891002", "95609003"),
    prefixes=[(ICD10CM, "L93")],
)
OTHER_CTD = ValueSet.of(
    "other connective tissue or inflammatory disease",
    _sct("89155008", "69896004", "396230008", "31384009", "83901003", "31996006"),
    prefixes=[(ICD10CM, "M34"), (ICD10CM, "M05"), (ICD10CM, "M06"), (ICD10CM, "M33"), (ICD10CM, "M35.0")],
)
NPSLE = ValueSet.of("neuropsychiatric SLE", _sct("95644001", "193178008"))
PREGNANCY = ValueSet.of("pregnancy", _sct("72892002", "77386006", "47200007"))
BREASTFEEDING = ValueSet.of("breastfeeding", _sct("169750002"))
INFECTION_ACTIVE = ValueSet.of(
    "infection needing treatment (TB, hepatitis B/C, sepsis)",
    _sct("56717001", "61977001", "128302006", "91302008"),
    prefixes=[(ICD10CM, p) for p in ("A15", "A16", "A17", "A18", "A19")],
)
INFECTION_REVIEW = ValueSet.of("chronic viral infection (review)", _sct("86406008"))
STEROID_REQUIRING = ValueSet.of("asthma or COPD", _sct("195967001", "233678006", "185086009", "87433001"))
MALIGNANT = ValueSet.of(
    "malignant neoplasm",
    _sct(
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
    ),
    prefixes=[(ICD10CM, "C")],
)
LYMPHOPROLIFERATIVE = ValueSet.of(
    "lymphoproliferative disease",
    _sct("109989006"),
    prefixes=[(ICD10CM, p) for p in ("C81", "C82", "C83", "C84", "C85", "C86", "C88", "C90", "C91")],
)
MALIGNANCY_EXCEPTIONS = ValueSet.of(
    "allowed exception (treated BCC of skin, cervical carcinoma in situ)",
    _sct("254701007", "92564006") + [(ICD10CM, "C44.91"), (ICD10CM, "C44.311")],
    prefixes=[(ICD10CM, "D06")],
)
STEM_CELL_TRANSPLANT = ValueSet.of(
    "stem cell transplantation",
    _sct("234336002", "58776007", "58390007", "152621000119105", "108631000119101", "153351000119102"),
    text=r"mesenchymal stem cell",
)
SPLENECTOMY = ValueSet.of("splenectomy", _sct("234319005", "67097003", "174776001"))
SURGICAL = ValueSet.of("surgical procedure", _sct("387713003"))
CHEMOTHERAPY = ValueSet.of("chemotherapy", _sct("367336001"))

# --------------------------------------------------------------------------- laboratory

DSDNA = Analyte("anti-dsDNA", _loinc("33799-8", "32677-7", "5130-0", "47299-3"), "[IU]/mL")
C3 = Analyte("C3", _loinc("4485-9"), "g/L")
C4 = Analyte("C4", _loinc("4498-2"), "mg/dL")
WBC = Analyte("WBC", _loinc("6690-2", "26464-8"), "10*9/L")
_ENZYME_EQ = {"[iU]/L": "U/L", "[IU]/L": "U/L"}
ALT = Analyte("ALT", _loinc("1742-6"), "U/L", unit_equivalents=_ENZYME_EQ, default_uln=40)
AST = Analyte("AST", _loinc("1920-8"), "U/L", unit_equivalents=_ENZYME_EQ, default_uln=40)
BILIRUBIN = Analyte(
    "total bilirubin", _loinc("1975-2", "42719-5", "14631-6"), "mg/dL", molar_mass=584.66, default_uln=1.2
)
CHOLESTEROL = Analyte(
    "total cholesterol", _loinc("2093-3", "14647-2", "35200-5"), "mg/dL", molar_mass=386.65, default_uln=200
)
TRIGLYCERIDES = Analyte("triglycerides", _loinc("2571-8", "3043-7"), "mg/dL", molar_mass=885.7, default_uln=150)
LDL = Analyte(
    "LDL cholesterol",
    _loinc("18262-6", "13457-7", "2089-1", "69419-0", "39469-2", "96258-9"),
    "mg/dL",
    molar_mass=386.65,
    default_uln=130,
)
PROTEIN_24H = Analyte("24-h urine protein", _loinc("2889-4"), "mg/(24.h)")
UPCR = Analyte("urine protein/creatinine ratio", _loinc("2890-2"), "mg/g", molar_mass=113.12)
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
)
CREATININE = Analyte("creatinine", _loinc("2160-0", "38483-4"), "mg/dL", molar_mass=113.12)
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
LEFLUNOMIDE = Drug(
    "leflunomide",
    None,
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

SIROLIMUS_ALLERGY = ValueSet.of(
    "sirolimus allergy", [(RXNORM, "35302"), (RXNORM, "258355")], text=r"sirolimus|rapamycin"
)

# --------------------------------------------------------------------------- criteria

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
        DerivedClinicalSledai(ClinicalSledai(SLEDAI_TOTAL, 4, 4, (DSDNA,), (C3, C4)), sle_items.SLEDAI),
    ),
    Criterion(
        "inc-serology",
        I,
        "Serologically active",
        "positive anti-dsDNA antibody (>10IU/ml) or hypocomplementemia (C3<0.90g/L)",
        "latest anti-dsDNA in 30 days > 10 [IU]/mL, or latest C3 < 0.90 g/L; both negative -> not met",
        "Observation: anti-dsDNA (LOINC 33799-8, 32677-7, 5130-0, 47299-3), C3 (4485-9)",
        "a missing analyte when the other is negative; dsDNA in non-IU units (U/mL); comparator values",
        Serology(DSDNA, 10.0, C3, 0.90),
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
        "any non-refuted systemic sclerosis, RA, dermatomyositis, polymyositis, Sjogren or vasculitis code",
        "Condition",
        "conditions not available",
        ConditionPresent(OTHER_CTD, "other connective tissue disease"),
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
        RenalSeverity(PROTEIN_24H, UPCR, EGFR, CREATININE, 3500, 3500, 60),
    ),
    Criterion(
        "exc-pregnancy",
        E,
        "Pregnant or breast-feeding",
        "Pregnant or breast-feeding women",
        "active pregnancy/breastfeeding condition, or positive hCG/pregnancy status in 7 days -> met; male -> not "
        "met; negative test in 7 days -> not met",
        "Patient.gender, Condition, Observation 2106-3 / 82810-3",
        "female (or unknown sex) without a pregnancy test or status in the last 7 days",
        Pregnancy(
            PREGNANCY,
            BREASTFEEDING,
            PREGNANCY_TEST,
            frozenset({"77386006", "10828004", "POS"}),
            frozenset({"260385009", "60001007", "NEG"}),
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
        "IVIG within 91 days, or any systemic glucocorticoid dose > 100 mg/day prednisone-equivalent within 91 days",
        "Medication resources (IVIG by name), Dosage",
        "parenteral steroid without a computable dose; medication list not current",
        AnyOf(
            (
                DrugExposure((IVIG,), "IVIG", 91, SYSTEMIC_OR_UNKNOWN),
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
        "active TB / hepatitis B or C / sepsis with onset in 90 days, or an antibiotic/antiviral in 14 days -> met; "
        "older active chronic infection or HIV -> review",
        "Condition, Medication resources",
        "conditions or medications not available; chronic infection (review)",
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
                DrugExposure(ANTI_INFECTIVES, "antibiotic/antiviral treatment", 14, SYSTEMIC_OR_UNKNOWN),
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
        LabTest(WBC, "<", 3.0),
    ),
    Criterion(
        "exc-liver-enzymes",
        E,
        "ALT or AST > 1.5 x ULN",
        "ALT or AST >1.5 times upper limit of laboratory reference range",
        "latest ALT or AST in 30 days > 1.5 x ULN (referenceRange.high; else site default 40 U/L, ULN_ASSUMED)",
        "Observation 1742-6, 1920-8",
        "either analyte missing while the other is normal",
        AnyOf((LabTest(ALT, ">", 1.5, relative_to="uln"), LabTest(AST, ">", 1.5, relative_to="uln"))),
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
        AnyOf(tuple(LabTest(a, ">", 2.0, relative_to="uln") for a in (BILIRUBIN, CHOLESTEROL, TRIGLYCERIDES, LDL))),
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
        "malignancy active or with onset/abatement within 5 years, or lymphoproliferative disease ever; treated "
        "BCC / cervical CIS do not count",
        "Condition",
        "undated malignancy; untreated allowed exception",
        Malignancy(MALIGNANT, LYMPHOPROLIFERATIVE, MALIGNANCY_EXCEPTIONS, 5),
    ),
    Criterion(
        "exc-stem-cell-transplant",
        E,
        "Previous stem cell transplantation",
        "Previous stem cell transplantation (haematopoietic or mesenchymal)",
        "any HSCT/BMT procedure or history condition, or text naming mesenchymal stem cells",
        "Procedure, Condition",
        "procedures or conditions not available",
        ConditionPresent(STEM_CELL_TRANSPLANT, "stem cell transplantation", also_procedures=STEM_CELL_TRANSPLANT),
    ),
    Criterion(
        "exc-splenectomy",
        E,
        "History of splenectomy",
        "Have a history of splenectomy",
        "any splenectomy procedure (total or partial)",
        "Procedure",
        "procedures not available",
        ConditionPresent(ValueSet.of("none"), "splenectomy", also_procedures=SPLENECTOMY),
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
    analytes=ANALYTES,
    extra_observation_codes=SLEDAI_TOTAL,
    # the SLICC / SLEDAI item tests are read whenever the record holds them (any date); the service's
    # Observation query is not widened to them here
    cumulative_observation_codes=sle_items.OBSERVATION_CODES,
    applicability=SLE | LUPUS_NOT_SPECIFIC | LUPUS_CUTANEOUS_ONLY,
)
