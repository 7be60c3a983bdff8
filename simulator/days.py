"""Simulated time: float days since 1970-01-01, and its conversions to dates and pandas datetimes."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pandas as pd

DAYS_PER_YEAR = 365.25
EPOCH = date(1970, 1, 1)  # simulated time is float days since this date


def days_since_epoch(day: date) -> float:
    return float((day - EPOCH).days)


def to_date(t_days: float) -> date:
    """The (UTC) calendar day that contains simulated time t."""
    return EPOCH + timedelta(days=math.floor(t_days))


def year_start(year: int) -> float:
    """Simulated time of 1 January of `year` (the threshold of a before_year guard)."""
    return days_since_epoch(date(year, 1, 1))


def to_datetime(t_days: np.ndarray) -> pd.Series:
    """Float days since 1970-01-01 (UTC) -> timezone-aware timestamps, millisecond precision."""
    ms = np.where(np.isfinite(t_days), np.round(t_days * 86_400_000.0), np.nan)
    return pd.Series(pd.to_datetime(ms, unit="ms", utc=True))
