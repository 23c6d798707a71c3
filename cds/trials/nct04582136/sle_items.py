"""Codes and cut-offs of the SLICC 2012 items and the lab-derived SLEDAI-2K descriptors.

Every code names the public source it was checked against (laboratory test catalogues that print
the LOINC code next to the test, loinc.org, public ICD-10-CM code lists, or the project's
terminology notes `shared/reference/criteria-terminology.md`, marked "ref ✅" where that note
verified it). Findings without a verified code are matched by name (text of the code or its
display), which a reader can check by reading it. Left out as unverified: LOINC 5048-4 (ANA titre
by IF: no source found), anticardiolipin IgM and IgA LOINC codes, urine casts by type per LPF,
SNOMED codes for malar rash, oral ulcer, alopecia, synovitis, pleurisy, seizure and psychosis.

Cut-offs chosen here (each documented where used):
* ANA titre without a laboratory range: positive from 1:80, the HEp-2 IFA screening dilution
  (Mayo Clinic Laboratories NAIFA reference values "<1:80 (Negative)"; Corewell Health "screened at
  1:80 dilution"); such results are flagged ULN_ASSUMED.
* Anti-dsDNA by immunoassay (ELISA-type codes): SLICC asks for > 2x the reference range; a result
  above the range but below 2x is unknown (the method is not in the record). The Farr assay
  (47299-3) and the qualitative / Crithidia tests use the range itself.
* RBC casts counted per HPF without a range: any cast is abnormal (normally none).
"""

from __future__ import annotations

import re

from cds.engine.definition import ICD10CM, LOINC, SNOMED, Analyte, ValueSet
from cds.engine.items import RangeTest
from cds.trials.lupus.sledai import SledaiData
from cds.trials.lupus.slicc import DSDNA_FOLD_NOTE, SliccData


def _loinc(name: str, *codes: str) -> ValueSet:
    return ValueSet.of(name, [(LOINC, c) for c in codes])


_HPF = {"/HPF": "/[HPF]", "/hpf": "/[HPF]", "{cells}/[HPF]": "/[HPF]", "{RBCs}/[HPF]": "/[HPF]"}

# --------------------------------------------------------------------------- laboratory

# ref ✅: 6690-2, 26464-8 (WBC); 777-3, 26515-7 (platelets); 731-0 (lymphocytes, SLICC row).
LEUKOCYTES = Analyte("leukocytes", _loinc("leukocytes", "6690-2", "26464-8"), "10*9/L")
PLATELETS = Analyte("platelets", _loinc("platelets", "777-3", "26515-7"), "10*9/L")
LYMPHOCYTES = Analyte("lymphocytes", _loinc("lymphocytes", "731-0"), "10*9/L")
# ref ✅: 2889-4 (24-h protein), 2890-2 (UPCR; mg/mmol results converted with creatinine 113.12 g/mol).
URINE_PROTEIN_24H = Analyte("urine protein per 24 h", _loinc("urine protein per 24 h", "2889-4"), "mg/(24.h)")
URINE_PCR = Analyte("UPCR", _loinc("UPCR", "2890-2"), "mg/g", molar_mass=113.12)
# ref ✅: 13945-1 urine sediment RBC /HPF; 5821-4 urine sediment WBC /HPF; 51790-4 RBC casts /HPF.
URINE_RBC = Analyte("urine RBC", _loinc("urine RBC /HPF", "13945-1"), "/[HPF]", unit_equivalents=_HPF)
URINE_WBC = Analyte("urine WBC", _loinc("urine WBC /HPF", "5821-4"), "/[HPF]", unit_equivalents=_HPF)
RBC_CASTS = RangeTest("RBC casts", _loinc("RBC casts", "51790-4"), default_limit=0.0)
# ref ✅: 8310-5 body temperature, 8331-1 oral temperature (Synthea units Cel and [degF]).
TEMPERATURE = Analyte("body temperature", _loinc("body temperature", "8310-5", "8331-1"), "Cel")

_ANA_DEFAULT = "HEp-2 IFA screening dilution; Mayo Clinic Laboratories NAIFA: <1:80 negative"
ANA = (
    RangeTest(
        "ANA",
        # 8061-4: NRLS lab catalogue "ANA screen ... IFA" (ref ✅); 42254-3: LabCorp CTD cascade and Lupus
        # Diagnostic Profile "Anti-Nuclear Ab by IFA"; 59069-5 (HEp-2 substrate) and 33253-6 (ANA titer):
        # Mayo Clinic Laboratories NAIFA result LOINC codes.
        _loinc("ANA", "8061-4", "42254-3", "59069-5", "33253-6"),
        default_titre=80,
        default_titre_source=_ANA_DEFAULT,
    ),
)
DSDNA = (
    # ref ✅ (I5): immunoassays 33799-8 (Mayo ELISA/multiplex), 32677-7 (Cleveland Clinic EIA), 5130-0
    # (OSU quantitative): SLICC's ELISA rule, > 2x the range.
    RangeTest(
        "anti-dsDNA",
        _loinc("anti-dsDNA immunoassay", "33799-8", "32677-7", "5130-0"),
        fold=2.0,
        fold_note=DSDNA_FOLD_NOTE,
    ),
    # ref ✅: 47299-3 LabCorp Farr RIA; 53148-3 OSU dsDNA screen; 58466-4 / 69048-7 Crithidia (Mayo).
    RangeTest("anti-dsDNA", _loinc("anti-dsDNA Farr / Crithidia / screen", "47299-3", "53148-3", "58466-4", "69048-7")),
)
ANTI_SM = (
    # 11090-8: LabCorp Lupus Diagnostic Profile "Anti-Sm Ab" (ref ✅); 18323-6: Mayo Clinic Laboratories
    # "Sm Ab, IgG, S" result LOINC; 88882-6: loinc.org "Smith extractable nuclear B Ab [Presence] ... Line blot".
    RangeTest("anti-Sm", _loinc("anti-Sm", "11090-8", "18323-6", "88882-6")),
)
ANTIPHOSPHOLIPID = (
    # 3281-3: Warde Medical Laboratory lupus anticoagulant "Interpretation"; 75514-0: LOINC panel
    # 75515-7 "Lupus anticoagulant two screening tests W Reflex [interpretation]".
    RangeTest("lupus anticoagulant", _loinc("lupus anticoagulant interpretation", "3281-3", "75514-0")),
    # 3181-5: ARUP "Cardiolipin Antibody IgG" component LOINC.
    RangeTest("anticardiolipin IgG", _loinc("anticardiolipin IgG", "3181-5")),
    # 44448-9 (IgG), 44449-7 (IgM): Mayo Clinic Laboratories GB2GP / MB2GP result LOINC; 21108-6 (IgA): ARUP.
    RangeTest("anti-beta2-glycoprotein I", _loinc("anti-beta2-glycoprotein I", "44448-9", "44449-7", "21108-6")),
)
COMPLEMENT = (
    # ref ✅: C3 4485-9, C4 4498-2; CH50 4532-8: Michigan Medicine MLabs and Labcorp Oklahoma catalogues.
    RangeTest("C3", _loinc("C3", "4485-9"), direction="low"),
    RangeTest("C4", _loinc("C4", "4498-2"), direction="low"),
    RangeTest("CH50", _loinc("CH50", "4532-8"), direction="low"),
)
# 1007-4: MercyOne Dubuque catalogue "Direct Antiglobulin Test.Poly Specific Reagent [Presence] On Red Blood
# Cells"; 13946-9: ARUP "Direct Coombs" component LOINC.
COOMBS = (RangeTest("direct Coombs", _loinc("direct Coombs", "1007-4", "13946-9")),)

# --------------------------------------------------------------------------- coded findings

ACUTE_CUTANEOUS = ValueSet.of(
    "acute or subacute cutaneous lupus",
    # SNOMED 239891002 subacute cutaneous LE (ref ✅); ICD-10-CM L93.1 (public ICD-10-CM code lists).
    [(SNOMED, "239891002"), (ICD10CM, "L93.1")],
    text=r"malar rash|butterfly rash|acute cutaneous lupus|subacute cutaneous lupus|bullous lupus",
)
CHRONIC_CUTANEOUS = ValueSet.of(
    "chronic cutaneous lupus",
    # SNOMED 200938002 discoid LE (ref ✅); ICD-10-CM L93.0 (Australian DVA SOP M029: ICD-10 L93.0).
    [(SNOMED, "200938002"), (ICD10CM, "L93.0")],
    text=r"discoid lupus|chronic cutaneous lupus|lupus panniculitis|lupus profundus|chilblain lupus",
)
ORAL_NASAL_ULCERS = ValueSet.of(
    "oral or nasal ulcers",
    text=r"\boral ulcer|\bmouth ulcer|ulcer of (?:the )?(?:mouth|palate|tongue|nose)|nasal (?:septum )?ulcer|"
    r"palatal ulcer|aphthous",
)
ALOPECIA = ValueSet.of(
    "non-scarring alopecia",
    text=r"non-?scarring alopecia|(?<!scarring )(?<!cicatricial )\balopecia\b|\bhair loss\b|hair thinning",
)
SYNOVITIS = ValueSet.of(
    "synovitis",
    text=r"synovitis|inflammatory (?:poly)?arthritis|lupus arthritis|\bpolyarthritis\b",
)
SEROSITIS = ValueSet.of(
    "serositis",
    # SNOMED 309762007 SLE with pericarditis (ref ✅).
    [(SNOMED, "309762007")],
    text=r"pleurisy|pleuritis|pleural effusion|pleural rub|pericarditis|pericardial effusion|pericardial rub|"
    r"serositis",
)
NEUROLOGIC = ValueSet.of(
    "neurologic lupus",
    # SNOMED 95644001 SLE encephalitis, 193178008 polyneuropathy in disseminated LE (ref ✅).
    [(SNOMED, "95644001"), (SNOMED, "193178008")],
    text=r"seizure|epilep|psychosis|psychotic|mononeuritis multiplex|myelitis|peripheral neuropathy|"
    r"cranial neuropathy|acute confusional state",
)
HEMOLYTIC_ANEMIA = ValueSet.of(
    "hemolytic anemia",
    # ICD-10-CM D59.1x other autoimmune hemolytic anemias, D59.9 acquired hemolytic anemia, unspecified
    # (public ICD-10-CM code lists).
    [(ICD10CM, "D59.9")],
    prefixes=[(ICD10CM, "D59.1")],
    text=r"ha?emolytic ana?emia",
)
# ref ✅ (UK SLE code set): SLE glomerulonephritis syndrome 68815009; WHO class I-VI 73286009, 4676006,
# 76521009, 36402006, 52042003, 11013005; renal tubulo-interstitial disorder in SLE 307755009. ICD-10-CM
# M32.14 glomerular disease in SLE, M32.15 tubulo-interstitial nephropathy in SLE (public code lists).
_WHO_CLASS = ("73286009", "4676006", "76521009", "36402006", "52042003", "11013005")
LUPUS_NEPHRITIS = ValueSet.of(
    "lupus nephritis",
    [(SNOMED, c) for c in ("68815009", "307755009", *_WHO_CLASS)] + [(ICD10CM, "M32.14"), (ICD10CM, "M32.15")],
    text=r"lupus nephritis",
)
# A WHO / ISN-RPS class is a biopsy classification: these codes are biopsy-proven lupus nephritis.
LUPUS_NEPHRITIS_BIOPSY = ValueSet.of(
    "biopsy-proven lupus nephritis",
    [(SNOMED, c) for c in _WHO_CLASS],
    text=r"lupus nephritis,? (?:ISN/RPS |WHO )?class [IV]+\b|biopsy[- ]proven lupus nephritis",
)

SLICC = SliccData(
    acute_cutaneous=ACUTE_CUTANEOUS,
    chronic_cutaneous=CHRONIC_CUTANEOUS,
    oral_nasal_ulcers=ORAL_NASAL_ULCERS,
    alopecia=ALOPECIA,
    synovitis=SYNOVITIS,
    serositis=SEROSITIS,
    neurologic=NEUROLOGIC,
    hemolytic_anemia=HEMOLYTIC_ANEMIA,
    lupus_nephritis=LUPUS_NEPHRITIS,
    lupus_nephritis_biopsy=LUPUS_NEPHRITIS_BIOPSY,
    protein_24h=URINE_PROTEIN_24H,
    upcr=URINE_PCR,
    rbc_casts=RBC_CASTS,
    wbc=LEUKOCYTES,
    lymphocytes=LYMPHOCYTES,
    platelets=PLATELETS,
    ana=ANA,
    dsdna=DSDNA,
    anti_sm=ANTI_SM,
    antiphospholipid=ANTIPHOSPHOLIPID,
    complement=COMPLEMENT,
    coombs=COOMBS,
)

# A SLEDAI-2K recorded as a QuestionnaireResponse: its `questionnaire` canonical is this project's
# form, or names SLEDAI-2K.
SLEDAI_QUESTIONNAIRE = ValueSet.of(
    "SLEDAI-2K questionnaire",
    [("canonical", "https://github.com/nct04582136-cds/Questionnaire/sledai-2k")],
    text=r"SLEDAI[-\s]?2K",
)

SLEDAI = SledaiData(
    rbc_casts=RBC_CASTS,
    urine_rbc=URINE_RBC,
    urine_wbc=URINE_WBC,
    protein_24h=URINE_PROTEIN_24H,
    upcr=URINE_PCR,
    platelets=PLATELETS,
    wbc=LEUKOCYTES,
    temperature=TEMPERATURE,
    questionnaire=SLEDAI_QUESTIONNAIRE,
    serology_item=re.compile(r"dna|complement", re.I),
)

ANALYTES = (LEUKOCYTES, PLATELETS, LYMPHOCYTES, URINE_PROTEIN_24H, URINE_PCR, URINE_RBC, URINE_WBC, TEMPERATURE)
_RANGE_TESTS = (RBC_CASTS, *ANA, *DSDNA, *ANTI_SM, *ANTIPHOSPHOLIPID, *COMPLEMENT, *COOMBS)
# Every Observation code the items read (the trial's Observation query and pre-filter).
OBSERVATION_CODES = ValueSet.of(
    "SLICC / SLEDAI item tests",
    [code for a in ANALYTES for code in a.codes.codes] + [code for t in _RANGE_TESTS for code in t.codes.codes],
)
