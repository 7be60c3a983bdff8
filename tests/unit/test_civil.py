"""The compiled calendar (simulator/engine/civil.py) agrees with Python's dates on every day from 1800 to 2200,
and the month guard holds in its months and is re-checked on the first of the next month."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from simulator.days import days_since_epoch, to_date
from simulator.engine.civil import completed_years_between, month_start, next_month_flip, year_month
from simulator.engine.guards import GUARD_KINDS
from simulator.model.schema import MonthGuard


def test_year_month_and_month_starts_agree_with_python_dates() -> None:
    day, last = date(1800, 1, 1), date(2200, 12, 31)
    while day <= last:
        t = days_since_epoch(day)
        for offset in (0.0, 0.5, 0.999999):  # any time of the day
            assert year_month(t + offset) == (day.year, day.month), day
        following = date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)
        assert next_month_flip(t + 0.25, 1 << (day.month - 1)) == days_since_epoch(following), day
        if day.day == 1:
            assert month_start(day.year, day.month) == t
        day += timedelta(days=1)


def test_to_date_is_the_day_that_contains_a_time() -> None:
    assert to_date(-0.25) == date(1969, 12, 31) and to_date(0.0) == date(1970, 1, 1)
    assert to_date(days_since_epoch(date(2024, 2, 29)) + 0.99) == date(2024, 2, 29)


def test_the_month_guard_holds_in_its_months_and_is_rechecked_when_it_flips() -> None:
    """Re-checked on the first day of the next month whose membership differs (kernel and reference agree):
    a winter guard flips on 1 March and 1 December, a guard of every month never."""
    kind = GUARD_KINDS[MonthGuard]
    winter = MonthGuard(month=[12, 1, 2])
    ((op, mask, _, _),) = kind.instructions(winter, None, "m")  # type: ignore[arg-type]
    assert mask == (1 << 11) | 1 | 2
    cases = (
        (date(2023, 12, 31), True, date(2024, 3, 1)),
        (date(2024, 2, 29), True, date(2024, 3, 1)),
        (date(2024, 3, 1), False, date(2024, 12, 1)),
        (date(2024, 11, 30), False, date(2024, 12, 1)),
    )
    for day, holds, flips in cases:
        t = days_since_epoch(day) + 0.5
        assert kind.holds(winter, None, "m", t) is holds  # type: ignore[arg-type]
        assert kind.threshold(winter, None, "m", t) == days_since_epoch(flips) == next_month_flip(t, mask)  # type: ignore[arg-type, misc]
    always = MonthGuard(month=list(range(1, 13)))
    assert kind.threshold(always, None, "m", 0.0) == np.inf == next_month_flip(0.0, (1 << 12) - 1)  # type: ignore[arg-type, misc]


def test_completed_years_count_birthdays_passed() -> None:
    born = days_since_epoch(date(1960, 2, 29))
    assert completed_years_between(born, days_since_epoch(date(2000, 2, 28)) + 0.9) == 39.0
    assert completed_years_between(born, days_since_epoch(date(2000, 2, 29))) == 40.0
    assert completed_years_between(born, days_since_epoch(date(2001, 2, 28))) == 40.0
    assert completed_years_between(born, days_since_epoch(date(2001, 3, 1))) == 41.0
