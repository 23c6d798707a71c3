"""Dates as the engine sees them: every FHIR date is an interval [earliest, latest].

A complete date is a one-day interval; "1973-10" is the whole month; "1973" the whole year. A
dateTime keeps its own calendar day (no timezone shifting: a result stamped 23:30+08:00 happened on
that local day). The engine never reads the clock: the as-of date is always a parameter.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta


@dataclass(frozen=True, slots=True)
class Span:
    earliest: date
    latest: date

    @property
    def exact(self) -> bool:
        return self.earliest == self.latest

    def iso(self) -> str:
        if self.exact:
            return self.earliest.isoformat()
        if (
            self.earliest.month == 1
            and self.earliest.day == 1
            and self.latest.month == 12
            and (self.latest.day == 31 and self.latest.year == self.earliest.year)
        ):
            return f"{self.earliest.year:04d}"
        if self.earliest.day == 1 and self.latest == last_day_of_month(self.earliest):
            return f"{self.earliest.year:04d}-{self.earliest.month:02d}"
        return f"{self.earliest.isoformat()}/{self.latest.isoformat()}"


def last_day_of_month(d: date) -> date:
    return date(d.year, d.month, calendar.monthrange(d.year, d.month)[1])


def span(value: object) -> Span | None:
    """Interval of a FHIR date/dateTime value (R4B gives date, datetime or a partial str)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        d = value.date()
        return Span(d, d)
    if isinstance(value, date):
        return Span(value, value)
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 4:
                y = int(text)
                return Span(date(y, 1, 1), date(y, 12, 31))
            if len(text) == 7:
                first = date(int(text[:4]), int(text[5:7]), 1)
                return Span(first, last_day_of_month(first))
            d = date.fromisoformat(text[:10])
            return Span(d, d)
        except ValueError:
            return None
    return None


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
