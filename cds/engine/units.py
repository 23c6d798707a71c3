"""UCUM unit conversion through a maintained parser (ucumvert, which builds pint units).

Rules, in order:
1. The unit is read from `Quantity.code` when `Quantity.system` is UCUM, else from `Quantity.unit`.
   Non-UCUM spellings seen in lab feeds ("K/uL", "Thousand/uL", "10^9/L", "mg/dl", "IU/mL", ...) are
   mapped to their UCUM code by the one table in `cds.engine.unit_aliases`; anything else that does
   not parse is unconvertible.
2. Conversion is dimensional (pint). Arbitrary units ([IU], [arb'U], per-field counts) only convert
   to themselves: "U/mL" is never "[IU]/mL", and "[IU]/mL" is never a cell count.
3. Substance <-> mass (umol/L <-> mg/dL, mg/mmol <-> mg/g) needs the analyte's molar mass, passed
   by the caller; without it the conversion fails.
4. Anything that fails returns None: the caller must make the value `unknown`, never guess.
"""

from __future__ import annotations

import functools
import threading
from decimal import Decimal
from typing import Any

from cds.engine import unit_aliases

UCUM_SYSTEM = "http://unitsofmeasure.org"

# The one table of non-UCUM lab spellings lives in `cds.engine.unit_aliases` (documented there).
NON_UCUM_SPELLINGS: dict[str, str] = unit_aliases.EXACT

# pint unit names that are arbitrary (UCUM "arbitrary units" or counts per field): such a unit
# converts only to a unit with the same set of arbitrary units.
_ARBITRARY = frozenset({"international_unit", "arbitrary_unit", "high_power_field", "low_power_field"})

_lock = threading.Lock()
_registry: Any = None


def _ureg() -> Any:
    """The shared pint registry with UCUM definitions (loaded once, ~0.5 s)."""
    global _registry
    if _registry is None:
        with _lock:
            if _registry is None:
                from ucumvert import PintUcumRegistry  # heavy import, done lazily

                _registry = PintUcumRegistry()
    return _registry


def preload() -> None:
    """Load the registry and parse the common units now (service start-up), not on first use."""
    for code in ("mg/dL", "g/L", "10*9/L", "10*3/uL", "[IU]/mL", "U/L", "mg/g", "mg/(24.h)", "mL/min/{1.73_m2}", "mg"):
        _parse(code)


def normalise_code(code: str | None, unit: str | None, system: str | None) -> str | None:
    """The UCUM code to use for a Quantity, or None when there is no usable unit text."""
    if code and (system is None or system == UCUM_SYSTEM):
        raw = code.strip()
    elif unit:
        raw = unit.strip()
    elif code:
        raw = code.strip()
    else:
        return None
    return unit_aliases.to_ucum(raw) if raw else None


@functools.lru_cache(maxsize=512)
def _parse(ucum: str) -> Any:
    """Parse a UCUM code into a pint Quantity (magnitude carries factors such as 24 in /(24.h))."""
    if ucum.startswith("{") and ucum.endswith("}"):
        return None  # a pure annotation ("{tbl}", "{score}") is the unity: handled by the caller
    try:
        q = _ureg().from_ucum(ucum)
    except Exception:  # ucumvert raises several error types for invalid codes
        return None
    if not hasattr(q, "dimensionality"):
        return None
    return q


def _arbitrary_atoms(q: Any) -> frozenset[str]:
    # prefixed arbitrary units ("kilointernational_unit") keep the base name as a suffix
    return frozenset(base for name in q._units for base in _ARBITRARY if name.endswith(base))


def parses(ucum: str) -> bool:
    return _parse(ucum) is not None


def convert(
    value: Decimal | float,
    from_ucum: str,
    to_ucum: str,
    molar_mass_g_per_mol: float | None = None,
) -> float | None:
    """Convert `value` from one UCUM unit to another. None when the units are not convertible."""
    if from_ucum == to_ucum:
        return float(value)
    src = _parse(from_ucum)
    dst = _parse(to_ucum)
    if src is None or dst is None:
        return None
    if _arbitrary_atoms(src) != _arbitrary_atoms(dst):
        return None
    ureg = _ureg()
    v = float(value)
    try:
        # magnitude 1 keeps offset units (Cel, [degF]) exact; /(24.h) carries a factor of 1/24
        q = ureg.Quantity(v, src.units) if src.magnitude == 1 else ureg.Quantity(v * src.magnitude, src.units)
        target = dst.units
        candidates = [q]
        if molar_mass_g_per_mol is not None:
            mw = ureg.Quantity(molar_mass_g_per_mol, "g/mol")
            candidates += [q * mw, q / mw]
        for cand in candidates:
            if cand.dimensionality == dst.dimensionality:
                out = cand.to(target).magnitude / dst.magnitude
                return tidy(float(out))
    except Exception:  # pint raises DimensionalityError/OffsetUnitCalculusError; treat as unconvertible
        return None
    return None


def tidy(x: float) -> float:
    """Round away binary noise (3.5 g/(24.h) must be 3500 mg/(24.h), not 3499.9999999999995)."""
    return float(f"{x:.10g}")
