from datetime import UTC, date, datetime

import pytest

from cds.engine.timeutil import Span, add_months, age_on, span


def test_partial_dates_are_intervals():
    assert span("1970") == Span(date(1970, 1, 1), date(1970, 12, 31))
    assert span("2024-02") == Span(date(2024, 2, 1), date(2024, 2, 29))
    assert span(date(2020, 5, 4)) == Span(date(2020, 5, 4), date(2020, 5, 4))
    assert span(datetime(2020, 5, 4, 23, 30, tzinfo=UTC)).earliest == date(2020, 5, 4)
    assert span("garbage") is None
    assert span(None) is None


def test_iso_round_trip():
    assert span("1970").iso() == "1970"
    assert span("1970-05").iso() == "1970-05"
    assert span("1970-05-04").iso() == "1970-05-04"


@pytest.mark.parametrize(
    ("d", "n", "expected"),
    [
        (date(2026, 5, 31), -3, date(2026, 2, 28)),
        (date(2026, 11, 1), -3, date(2026, 8, 1)),
        (date(2026, 1, 15), -1, date(2025, 12, 15)),
    ],
)
def test_add_months_clamps(d, n, expected):
    assert add_months(d, n) == expected


def test_age_counts_completed_years():
    assert age_on(date(1960, 11, 2), date(2026, 11, 1)) == 65
    assert age_on(date(1960, 11, 1), date(2026, 11, 1)) == 66
