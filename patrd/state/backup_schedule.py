"""When the next off-site backup is due: pure, the clock is an input.

Two forms (``[backup] schedule``), in UTC:

* ``@every 6h`` (also ``30m``, ``90s``, ``1d``, ``1h30m``): a run every
  interval, counted from the start of the last run;
* ``HH:MM`` (also ``@daily`` = ``00:00``): once a day at that time.

A run missed while the daemon was down is made up once, as soon as it starts
(the next run is already in the past); several missed runs are one run. With
no run on record, ``@every`` runs at once and ``HH:MM`` waits for its time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DAY_S = 86400.0
MIN_INTERVAL_S = 1.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"(\d+)([smhd])")
_FULL_DURATION_RE = re.compile(r"(?:\d+[smhd])+")
_DAILY_RE = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


@dataclass(frozen=True, slots=True)
class Schedule:
    text: str
    every_s: float | None = None  # "@every <duration>"
    daily_s: int | None = None  # "HH:MM": seconds after 00:00 UTC

    def __str__(self) -> str:
        return self.text


def parse_schedule(text: str) -> Schedule:
    """``ValueError`` with a message for the user on anything else."""
    value = text.strip()
    if value == "@daily":
        return Schedule(text=value, daily_s=0)
    if value.startswith("@every"):
        duration = value.removeprefix("@every").strip()
        seconds = parse_duration(duration)
        if seconds < MIN_INTERVAL_S:
            raise ValueError("the interval of @every must be at least 1s")
        return Schedule(text=value, every_s=seconds)
    match = _DAILY_RE.fullmatch(value)
    if match:
        return Schedule(text=value, daily_s=int(match.group(1)) * 3600 + int(match.group(2)) * 60)
    raise ValueError('must be "@every <duration>" (e.g. "@every 6h") or a daily "HH:MM" (UTC)')


def parse_duration(text: str) -> float:
    """``1h30m`` → 5400.0; ``ValueError`` otherwise."""
    if not _FULL_DURATION_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration such as 90s, 30m, 6h, 1d or 1h30m")
    return float(sum(int(n) * _UNITS[u] for n, u in _DURATION_RE.findall(text)))


def next_run(schedule: Schedule, last_run: float | None, now: float) -> float:
    """The unix time of the next run (at or before ``now``: run now)."""
    if schedule.every_s is not None:
        return now if last_run is None else last_run + schedule.every_s
    assert schedule.daily_s is not None
    if last_run is None:
        return _daily_at_or_after(schedule.daily_s, now)
    # The first daily time strictly after the last run: if it is past, it was missed.
    return _daily_at_or_after(schedule.daily_s, last_run + 1.0)


def _daily_at_or_after(daily_s: int, t: float) -> float:
    day = t - (t % DAY_S)
    candidate = day + daily_s
    return candidate if candidate >= t else candidate + DAY_S


def seconds_until(schedule: Schedule, last_run: float | None, now: float) -> float:
    """How long to sleep before the next run (0: due now)."""
    return max(0.0, next_run(schedule, last_run, now) - now)
