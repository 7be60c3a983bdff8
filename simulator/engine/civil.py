"""Calendar dates of simulated times in compiled code: the date of a time, the start of the next month (for
guards that read the calendar month, seasons) and ages in completed years (as laboratories record them).
Proleptic Gregorian, UTC, days since 1970-01-01; the integer arithmetic of H. Hinnant's days_from_civil /
civil_from_days algorithms (public domain description, http://howardhinnant.github.io/date_algorithms.html),
written here for Numba."""

from __future__ import annotations

import math

from numba import njit

EPOCH_SHIFT = 719_468  # days from 0000-03-01 to 1970-01-01
DAYS_PER_ERA = 146_097  # days in 400 Gregorian years


@njit(cache=True, _nrt=False)
def civil(t_days: float) -> tuple[int, int, int]:
    """(year, month 1-12, day 1-31) of the day that contains time t."""
    z = int(math.floor(t_days)) + EPOCH_SHIFT
    era = z // DAYS_PER_ERA
    doe = z - era * DAYS_PER_ERA
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if month <= 2 else 0), month, day


@njit(cache=True, _nrt=False)
def year_month(t_days: float) -> tuple[int, int]:
    """(year, month 1-12) of the day that contains time t."""
    year, month, _ = civil(t_days)
    return year, month


@njit(cache=True, _nrt=False)
def completed_years_between(birth_t: float, t: float) -> float:
    """Age in whole years at t of someone born at birth_t, by the calendar (the last birthday passed)."""
    born_year, born_month, born_day = civil(birth_t)
    year, month, day = civil(t)
    before_birthday = month < born_month or (month == born_month and day < born_day)
    return float(year - born_year - (1 if before_birthday else 0))


@njit(cache=True, _nrt=False)
def month_start(year: int, month: int) -> float:
    """Time of the first day of `month` (1-12) of `year`, in days since 1970-01-01."""
    y = year - 1 if month <= 2 else year
    era = y // 400
    yoe = y - era * 400
    mp = month - 3 if month > 2 else month + 9
    doy = (153 * mp + 2) // 5
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return float(era * DAYS_PER_ERA + doe - EPOCH_SHIFT)


@njit(cache=True, _nrt=False)
def next_month_flip(t_days: float, months: int) -> float:
    """Time of the first day of the first month after t whose membership in `months` (bit m - 1 for month m)
    differs from that of t's month: when a month guard next changes its value (inf: never, all or no months)."""
    year, month = year_month(t_days)
    inside = (months >> (month - 1)) & 1
    for _ in range(12):
        month += 1
        if month == 13:
            year, month = year + 1, 1
        if (months >> (month - 1)) & 1 != inside:
            return month_start(year, month)
    return math.inf
