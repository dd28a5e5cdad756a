"""Job schedules: cron expressions and ``@every <n><unit>``; pure, the clock is an input.

* Five fields ``minute hour day-of-month month day-of-week`` with ``*``,
  ``a-b``, ``a,b``, ``*/n``, ``a-b/n``, month and day names (``jan``,
  ``mon``), day-of-week 0-7 (0 and 7 are Sunday). As in Vixie cron, when both
  day fields are restricted a day matches either of them.
* ``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly``,
  ``@yearly`` (``@annually``).
* ``@every 15m``: a fixed interval (``s``, ``m``, ``h``, ``d``; combinations
  such as ``1h30m``), counted from the previous run's start.

Cron times are wall-clock times in the node's time zone (``tz``). A time that
does not exist (the hour skipped when clocks go forward) runs one hour later
(02:30 → 03:30, once); a time that happens twice (clocks go back) runs once.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MIN_EVERY_S = 1
MAX_EVERY_S = 366 * 86400
SEARCH_DAYS = 366 * 5  # a valid expression matches within 5 years (Feb 29 on a Monday: 28)

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_EVERY_RE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


class ScheduleError(ValueError):
    """The message says what is wrong (the caller adds the field path)."""


@dataclass(frozen=True, slots=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]  # of the month, 1-31
    months: frozenset[int]  # 1-12
    weekdays: frozenset[int]  # 0-6, Sunday 0
    days_any: bool  # day-of-month was "*"
    weekdays_any: bool

    def day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.days_any or self.weekdays_any:
            return dom and dow
        return dom or dow


@dataclass(frozen=True, slots=True)
class Every:
    seconds: int


Schedule = Cron | Every


def parse(text: str) -> Schedule:
    source = text.strip()
    if source.startswith("@every"):
        return _every(source[len("@every") :].strip())
    if source.startswith("@"):
        expanded = _MACROS.get(source.lower())
        if expanded is None:
            raise ScheduleError(
                f"unknown macro {source!r}; use @every <n>s|m|h|d, "
                + ", ".join(sorted(_MACROS))
                + " or five cron fields"
            )
        source = expanded
    fields = source.split()
    if len(fields) != 5:
        raise ScheduleError(
            "must be five cron fields (minute hour day-of-month month day-of-week), "
            "a macro such as @daily, or @every 15m"
        )
    minute, hour, dom, month, dow = fields
    weekdays = _field(dow, 0, 7, _DAYS, "day-of-week")
    return Cron(
        minutes=_field(minute, 0, 59, None, "minute"),
        hours=_field(hour, 0, 23, None, "hour"),
        days=_field(dom, 1, 31, None, "day-of-month"),
        months=_field(month, 1, 12, _MONTHS, "month"),
        weekdays=frozenset(d % 7 for d in weekdays),
        days_any=dom == "*",
        weekdays_any=dow == "*",
    )


def _every(text: str) -> Every:
    match = _EVERY_RE.fullmatch(text)
    if not text or match is None:
        raise ScheduleError(f"@every needs an interval such as 30s, 15m, 1h30m or 1d, not {text!r}")
    d, h, m, s = (int(g) if g else 0 for g in match.groups())
    seconds = d * 86400 + h * 3600 + m * 60 + s
    if not MIN_EVERY_S <= seconds <= MAX_EVERY_S:
        raise ScheduleError(f"@every must be from {MIN_EVERY_S}s to {MAX_EVERY_S // 86400}d")
    return Every(seconds)


def _field(text: str, lo: int, hi: int, names: list[str] | None, what: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ScheduleError(f"{what}: bad step in {part!r}")
            step = int(step_text)
        if base == "*":
            start, end = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _value(a, names, what, lo, hi), _value(b, names, what, lo, hi)
            if start > end:
                raise ScheduleError(f"{what}: range {base!r} runs backwards")
        else:
            start = _value(base, names, what, lo, hi)
            end = hi if slash else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _value(text: str, names: list[str] | None, what: str, lo: int, hi: int) -> int:
    if names is not None and text.lower() in names:
        return names.index(text.lower()) + (1 if names is _MONTHS else 0)
    if not text.isdigit():
        raise ScheduleError(f"{what}: {text!r} is not a number from {lo} to {hi}")
    value = int(text)
    if not lo <= value <= hi:
        raise ScheduleError(f"{what}: {value} is not from {lo} to {hi}")
    return value


def next_after(schedule: Schedule, after: datetime, tz: tzinfo) -> datetime:
    """The first run time strictly after ``after`` (aware); cron times come back in UTC."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    if isinstance(schedule, Every):
        return after + timedelta(seconds=schedule.seconds)
    after = after.astimezone(UTC)  # compare instants, never wall times of one zone
    local = after.astimezone(tz)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    hours = sorted(schedule.hours)
    minutes = sorted(schedule.minutes)
    for _ in range(SEARCH_DAYS):
        if schedule.day_matches(day):
            for hour in hours:
                for minute in minutes:
                    candidate = _instant(day.replace(hour=hour, minute=minute), tz)
                    if candidate > after:
                        return candidate
        day += timedelta(days=1)
    raise ScheduleError("the schedule never matches a date")


def _instant(wall: datetime, tz: tzinfo) -> datetime:
    """A wall-clock time in ``tz`` as a UTC instant (fold 0: the first of a repeated
    time; a skipped time is read with the offset before the change, 02:30 → 03:30)."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def node_timezone() -> tzinfo:
    """The node's zone: ``TZ``, else /etc/timezone, else /etc/localtime's target, else UTC."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    try:
        target = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        if not name:
            continue
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return ZoneInfo("UTC")
