"""Schedules (patrd/model/cron.py) and the scheduler's decision (patrd/run/jobs.py ``decide``)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from patrd.model import cron
from patrd.model.errors import SpecError
from patrd.model.spec import parse_create, parse_update
from patrd.run.jobs import LogBuffer, decide

PARIS = ZoneInfo("Europe/Paris")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(text: str, tz: ZoneInfo = PARIS, fold: int = 0) -> datetime:
    """A wall time in ``tz`` as a UTC instant (Python never finds an ambiguous local time
    equal to a time of another zone)."""
    return datetime.fromisoformat(text).replace(tzinfo=tz, fold=fold).astimezone(UTC)


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("0 3 * * *", "2026-03-10 02:59", "2026-03-10 03:00"),
        ("0 3 * * *", "2026-03-10 03:00", "2026-03-11 03:00"),
        ("*/15 * * * *", "2026-03-10 10:07", "2026-03-10 10:15"),
        ("*/15 * * * *", "2026-03-10 23:59", "2026-03-11 00:00"),
        ("30 8 * * mon-fri", "2026-03-13 09:00", "2026-03-16 08:30"),  # Fri → Mon
        ("0 0 1 * *", "2026-01-31 12:00", "2026-02-01 00:00"),
        ("0 0 31 * *", "2026-02-01 00:00", "2026-03-31 00:00"),  # skips short months
        ("0 0 29 2 *", "2026-03-01 00:00", "2028-02-29 00:00"),  # leap day
        ("0 12 13 * 5", "2026-03-01 00:00", "2026-03-06 12:00"),  # dom OR dow: Fri the 6th
        ("0 0 * * 7", "2026-03-10 00:00", "2026-03-15 00:00"),  # 7 is Sunday
        ("5,10-12 4 * jan,mar *", "2026-03-10 04:11", "2026-03-10 04:12"),
        ("@hourly", "2026-03-10 04:11", "2026-03-10 05:00"),
        ("@daily", "2026-03-10 04:11", "2026-03-11 00:00"),
        ("@weekly", "2026-03-10 04:11", "2026-03-15 00:00"),
        ("@monthly", "2026-03-10 04:11", "2026-04-01 00:00"),
        ("@yearly", "2026-03-10 04:11", "2027-01-01 00:00"),
    ],
)
def test_next_after_in_utc(schedule: str, after: str, expected: str) -> None:
    assert cron.next_after(cron.parse(schedule), utc(after), UTC) == utc(expected)


def test_cron_times_are_wall_clock_in_the_node_zone() -> None:
    # 03:00 in Paris is 02:00 UTC in winter and 01:00 UTC in summer.
    schedule = cron.parse("0 3 * * *")
    assert cron.next_after(schedule, utc("2026-01-10 00:00"), PARIS) == utc("2026-01-10 02:00")
    assert cron.next_after(schedule, utc("2026-07-10 00:00"), PARIS) == utc("2026-07-10 01:00")


def test_skipped_hour_runs_once_an_hour_later() -> None:
    # 2026-03-29: Paris goes from 02:00 to 03:00; 02:30 does not exist.
    schedule = cron.parse("30 2 * * *")
    first = cron.next_after(schedule, local("2026-03-29 00:00"), PARIS)
    assert first == local("2026-03-29 03:30") == utc("2026-03-29 01:30")
    assert cron.next_after(schedule, first, PARIS) == local("2026-03-30 02:30")


def test_repeated_hour_runs_once() -> None:
    # 2026-10-25: Paris goes back from 03:00 to 02:00; 02:30 happens twice.
    schedule = cron.parse("30 2 * * *")
    first = cron.next_after(schedule, local("2026-10-25 00:00"), PARIS)
    assert first == local("2026-10-25 02:30", fold=0) == utc("2026-10-25 00:30")
    assert cron.next_after(schedule, first, PARIS) == local("2026-10-26 02:30")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("@every 5s", 5), ("@every 15m", 900), ("@every 1h30m", 5400), ("@every 2d", 172800)],
)
def test_every(text: str, seconds: int) -> None:
    schedule = cron.parse(text)
    assert schedule == cron.Every(seconds)
    start = utc("2026-03-10 10:00")
    assert cron.next_after(schedule, start, PARIS) == start + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("61 * * * *", "minute: 61 is not from 0 to 59"),
        ("* 24 * * *", "hour: 24"),
        ("* * 0 * *", "day-of-month: 0"),
        ("* * * 13 *", "month: 13"),
        ("* * * * 8", "day-of-week: 8"),
        ("* * * *", "five cron fields"),
        ("*/0 * * * *", "bad step"),
        ("5-1 * * * *", "backwards"),
        ("x * * * *", "not a number"),
        ("@sometimes", "unknown macro"),
        ("@every", "@every needs an interval"),
        ("@every 0s", "@every must be from"),
        ("@every 5 minutes", "@every needs an interval"),
        ("0 0 31 2 *", "never matches"),
    ],
)
def test_bad_schedules(text: str, message: str) -> None:
    with pytest.raises(cron.ScheduleError, match=message):
        schedule = cron.parse(text)
        cron.next_after(schedule, utc("2026-01-01 00:00"), UTC)


# --- the scheduler's decision -------------------------------------------------------

T0 = utc("2026-03-10 10:00:00")
EVERY_5S = cron.Every(5)
HOURLY = cron.parse("0 * * * *")
H11, H15_20, H16 = utc("2026-03-10 11:00"), utc("2026-03-10 15:20"), utc("2026-03-10 16:00")


def sec(n: int) -> timedelta:
    return timedelta(seconds=n)


@pytest.mark.parametrize(
    ("schedule", "now", "next_at", "last_start", "running", "fire", "skipped", "next_expected"),
    [
        # first look: compute, never fire at once
        (EVERY_5S, T0, None, None, False, False, False, T0 + sec(5)),
        (HOURLY, T0 + sec(60), None, None, False, False, False, H11),
        # @every after a restart: counted from the last run's start
        (EVERY_5S, T0, None, T0 - sec(2), False, False, False, T0 + sec(3)),
        # ... long ago: due now, one run, then the interval from now
        (EVERY_5S, T0, None, T0 - sec(18000), False, True, False, T0 + sec(5)),
        # not due yet
        (EVERY_5S, T0, T0 + sec(1), None, False, False, False, T0 + sec(1)),
        # due: fire; next from now
        (EVERY_5S, T0, T0, None, False, True, False, T0 + sec(5)),
        # due while the last run is going: skipped, never a second one
        (EVERY_5S, T0, T0, None, True, False, True, T0 + sec(5)),
        # missed hours (daemon down): one run, no catch-up
        (HOURLY, H15_20, H11, None, False, True, False, H16),
    ],
)  # fmt: skip
def test_decide(
    schedule: cron.Schedule,
    now: datetime,
    next_at: datetime | None,
    last_start: datetime | None,
    running: bool,
    fire: bool,
    skipped: bool,
    next_expected: datetime,
) -> None:
    tick = decide(schedule, UTC, now=now, next_at=next_at, last_start=last_start, running=running)
    assert (tick.fire, tick.skipped, tick.next_at) == (fire, skipped, next_expected)


def test_decide_never_fires_while_running() -> None:
    """Safety property over a simulated hour of half-second ticks."""
    now, next_at, running_until, starts = T0, None, None, []
    while now < T0 + timedelta(hours=1):
        running = running_until is not None and now < running_until
        tick = decide(EVERY_5S, UTC, now=now, next_at=next_at, last_start=None, running=running)
        assert not (tick.fire and running)
        if tick.fire:
            starts.append(now)
            running_until = now + timedelta(seconds=7)  # each run outlasts the interval
        next_at = tick.next_at
        now += timedelta(milliseconds=500)
    assert len(starts) > 300
    assert all(b - a >= timedelta(seconds=7) for a, b in itertools.pairwise(starts))


def test_log_buffer_keeps_the_newest_bytes() -> None:
    buffer = LogBuffer(limit=200)

    async def fill() -> None:
        for i in range(50):
            await buffer.add("stdout", 1_700_000_000_000_000_000 + i, f"line {i}\n".encode())

    asyncio.run(fill())
    text = buffer.text()
    assert len(text.encode()) <= 200 and text.endswith('"line": "line 49"}')
    assert buffer.dropped > 40 and '"line 0"' not in text


# --- the jobs field of a spec ------------------------------------------------------

BASE = {"name": "web", "image": "library/nginx", "ports": {"80": "http"}}


def test_jobs_parse_and_round_trip() -> None:
    job = {"schedule": "0 3 * * *", "command": ["report", "--all"], "timeout_s": 600}
    parsed = parse_create({**BASE, "jobs": {"nightly-report": job}}, region="")
    [spec_job] = parsed.jobs
    assert (spec_job.name, spec_job.command, spec_job.timeout_s) == (
        "nightly-report",
        ("report", "--all"),
        600,
    )
    assert parsed.to_json()["jobs"] == {"nightly-report": job}
    # a jobs change is a new revision but no rollout (not in the instance template)
    changed = parse_update(parsed, {"jobs": {}})
    assert changed.jobs == () and changed.instance_template() == parsed.instance_template()


@pytest.mark.parametrize(
    ("jobs", "field"),
    [
        ({"Bad_Name": {"schedule": "@daily", "command": ["x"]}}, "jobs.Bad_Name"),
        ({"a": {"schedule": "0 25 * * *", "command": ["x"]}}, "jobs.a.schedule"),
        ({"a": {"schedule": 5, "command": ["x"]}}, "jobs.a.schedule"),
        ({"a": {"command": ["x"]}}, "jobs.a.schedule"),
        ({"a": {"schedule": "@daily", "command": "x"}}, "jobs.a.command"),
        ({"a": {"schedule": "@daily", "command": []}}, "jobs.a.command"),
        ({"a": {"schedule": "@daily", "command": ["x", 1]}}, "jobs.a.command.1"),
        ({"a": {"schedule": "@daily", "command": ["x"], "timeout_s": 0}}, "jobs.a.timeout_s"),
        ({"a": {"schedule": "@daily", "command": ["x"], "retries": 1}}, "jobs.a.retries"),
        ([], "jobs"),
    ],
)
def test_jobs_errors_name_the_field(jobs: object, field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_create({**BASE, "jobs": jobs}, region="")
    assert err.value.field == field
