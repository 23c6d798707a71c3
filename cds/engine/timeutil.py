"""Dates as the engine sees them: every FHIR date is an interval [earliest, latest].

A complete date is a one-day interval; "1973-10" is the whole month; "1973" the whole year. A
dateTime keeps its own calendar day (no timezone shifting: a result stamped 23:30+08:00 happened on
that local day). The engine never reads the clock: the as-of date is always a parameter.
"""

from __future__ import annotations

import calendar
from datetime import date, timedelta

from cds.fhirjson import Span, last_day_of_month, span  # the FHIR date rules live there

__all__ = ["Span", "add_months", "add_years", "age_on", "days_before", "last_day_of_month", "span"]


def add_months(d: date, months: int) -> date:
    """Calendar-month arithmetic, clamping the day (2026-05-31 - 3 months = 2026-02-28)."""
    total = d.year * 12 + (d.month - 1) + months
    y, m = divmod(total, 12)
    last = calendar.monthrange(y, m + 1)[1]
    return date(y, m + 1, min(d.day, last))


def add_years(d: date, years: int) -> date:
    return add_months(d, years * 12)


def age_on(birth: date, on: date) -> int:
    """Completed years of age on `on` (a patient is 65 until the day before their 66th birthday)."""
    years = on.year - birth.year
    if (on.month, on.day) < (birth.month, birth.day):
        years -= 1
    return years


def days_before(d: date, n: int) -> date:
    return d - timedelta(days=n)
