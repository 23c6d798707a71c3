"""UCUM conversion: the conversions the criteria rely on, and the ones that must be refused."""

import pytest

from cds.engine import units


@pytest.mark.parametrize(
    ("value", "src", "dst", "mw", "expected"),
    [
        (89, "mg/dL", "g/L", None, 0.89),
        (0.9, "g/L", "mg/dL", None, 90.0),
        (900, "mg/L", "g/L", None, 0.9),
        (2900, "/uL", "10*9/L", None, 2.9),
        (5.2, "10*3/uL", "10*9/L", None, 5.2),
        (3000, "/mm3", "10*9/L", None, 3.0),
        (3.5, "mg/mg", "mg/g", None, 3500.0),
        (3.501, "g/g", "mg/g", None, 3501.0),
        (3.5, "g/(24.h)", "mg/(24.h)", None, 3500.0),  # must not become 3499.9999...
        (20, "umol/L", "mg/dL", 584.66, 1.16932),
        (5.0, "mmol/L", "mg/dL", 386.65, 193.325),
        (100.4, "[degF]", "Cel", None, 38.0),
        (1, "ukat/L", "U/L", None, 60.0),
        (1, "k[IU]/L", "[IU]/mL", None, 1.0),
        (95, "mL/min", "mL/min/{1.73_m2}", None, 95.0),
    ],
)
def test_convertible(value, src, dst, mw, expected):
    assert units.convert(value, src, dst, mw) == pytest.approx(expected, rel=1e-6)


def test_threshold_boundary_conversion_is_exact():
    # regression: binary noise would turn 3.5 g/24h into 3499.9999999999995 mg/24h (< 3500)
    assert units.convert(3.5, "g/(24.h)", "mg/(24.h)") >= 3500


@pytest.mark.parametrize(
    ("src", "dst", "mw"),
    [
        ("U/mL", "[IU]/mL", None),  # U is not IU for anti-dsDNA
        ("[IU]/mL", "10*9/L", None),  # arbitrary units never become counts
        ("%", "10*9/L", None),
        ("umol/L", "mg/dL", None),  # substance -> mass needs a molar mass
        ("mg/mmol", "mg/g", None),
        ("{tbl}", "mg", None),
        ("K/uL", "10*9/L", None),  # raw "K/uL" as UCUM would be kelvin: only the alias table maps it
        ("not a unit", "mg/dL", None),
    ],
)
def test_not_convertible(src, dst, mw):
    assert units.convert(1, src, dst, mw) is None


def test_non_ucum_spellings_are_normalised_only_from_unit_text():
    assert units.normalise_code(None, "K/uL", None) == "10*3/uL"
    assert units.normalise_code("10*3/uL", "K/uL", units.UCUM_SYSTEM) == "10*3/uL"
    assert units.normalise_code(None, "IU/mL", None) == "[IU]/mL"
    assert units.normalise_code(None, None, None) is None


def test_creatinine_ratio_in_mg_per_mmol_needs_molar_mass():
    assert units.convert(396, "mg/mmol", "mg/g", 113.12) == pytest.approx(3500.7, rel=1e-4)


@pytest.mark.parametrize(
    ("spelling", "ucum"),
    [
        ("K/uL", "10*3/uL"),
        ("Thousand/uL", "10*3/uL"),
        ("x10E3/uL", "10*3/uL"),
        ("10^9/L", "10*9/L"),
        ("×10⁹/L", "10*9/L"),
        ("mg/dl", "mg/dL"),
        ("MG/DL", "mg/dL"),
        ("g/l", "g/L"),
        ("IU/mL", "[IU]/mL"),
        ("umol/L", "umol/L"),
        ("µmol/L", "umol/L"),
        ("mmol/L", "mmol/L"),
        ("10*3/uL", "10*3/uL"),
        ("/uL", "/uL"),
        ("mcg/dL", "ug/dL"),
    ],
)
def test_lab_unit_alias_table_maps_spellings_to_ucum(spelling: str, ucum: str) -> None:
    code = units.normalise_code(None, spelling, None)
    assert code == ucum
    assert units.parses(code)


def test_case_sensitive_prefixes_are_not_folded() -> None:
    # mU/L (milli) and MU/L (mega) differ only by case: neither is in the caseless table
    assert units.normalise_code(None, "MU/L", None) == "MU/L"
    assert units.normalise_code(None, "mU/L", None) == "mU/L"


def test_unmappable_unit_does_not_convert() -> None:
    code = units.normalise_code(None, "bananas/uL", None)
    assert code is not None
    assert units.convert(2.5, code, "10*9/L") is None
