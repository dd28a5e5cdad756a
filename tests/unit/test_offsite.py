"""Off-site backups: the pure parts (schedule, config, hooks, snapshot choice, redaction)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from patrd.api.backups import runs_json
from patrd.model import spec
from patrd.model.errors import ConfigError, NotFound, SpecError
from patrd.state.backup_config import Retention, parse_backup, read_env_file
from patrd.state.backup_schedule import next_run, parse_duration, parse_schedule, seconds_until
from patrd.state.offsite_restore import RestoreRequest, choose, choose_state
from patrd.state.restic import Repository, Restic, Snapshot, _parse_time, redact


def t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# --- schedule ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "every", "daily"),
    [
        ("@every 1h", 3600.0, None),
        ("@every 1h30m", 5400.0, None),
        ("@every 90s", 90.0, None),
        ("@every 2d", 172800.0, None),
        ("02:30", None, 9000),
        ("2:05", None, 7500),
        ("@daily", None, 0),
        ("23:59", None, 86340),
    ],
)
def test_parse_schedule(text: str, every: float | None, daily: int | None) -> None:
    schedule = parse_schedule(text)
    assert (schedule.every_s, schedule.daily_s) == (every, daily)
    assert str(schedule) == text


@pytest.mark.parametrize(
    "text", ["", "@every", "@every 0s", "@every 1x", "@every h", "24:00", "12:60", "1h", "daily"]
)
def test_parse_schedule_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(text)


def test_parse_duration() -> None:
    assert parse_duration("1d2h3m4s") == 86400 + 7200 + 180 + 4
    with pytest.raises(ValueError):
        parse_duration("1h 2m")


@pytest.mark.parametrize(
    ("schedule", "last", "now", "expected"),
    [
        # @every: at once without a run on record, else last + interval.
        ("@every 1h", None, "2026-12-06T10:00:00", "2026-12-06T10:00:00"),
        ("@every 1h", "2026-12-06T09:30:00", "2026-12-06T10:00:00", "2026-12-06T10:30:00"),
        # Down for a day: one catch-up run now-ish (the next time is in the past).
        ("@every 1h", "2026-12-05T09:30:00", "2026-12-06T10:00:00", "2026-12-05T10:30:00"),
        # Daily: the next HH:MM at or after now when nothing ran yet.
        ("02:30", None, "2026-12-06T01:00:00", "2026-12-06T02:30:00"),
        ("02:30", None, "2026-12-06T03:00:00", "2026-12-07T02:30:00"),
        ("02:30", None, "2026-12-06T02:30:00", "2026-12-06T02:30:00"),
        # Ran today: tomorrow. Missed today's (last run yesterday): due (in the past).
        ("02:30", "2026-12-06T02:30:04", "2026-12-06T03:00:00", "2026-12-07T02:30:00"),
        ("02:30", "2026-12-05T02:30:04", "2026-12-06T05:00:00", "2026-12-06T02:30:00"),
        ("@daily", "2026-12-05T00:00:02", "2026-12-05T12:00:00", "2026-12-06T00:00:00"),
    ],
)
def test_next_run(schedule: str, last: str | None, now: str, expected: str) -> None:
    last_s = t(last) if last else None
    assert next_run(parse_schedule(schedule), last_s, t(now)) == t(expected)


def test_seconds_until_is_never_negative_and_a_run_is_due_once() -> None:
    daily = parse_schedule("02:30")
    now = t("2026-12-06T05:00:00")
    assert seconds_until(daily, t("2026-12-05T02:30:00"), now) == 0
    # Having run now (the catch-up), the next is tomorrow: never a burst of runs.
    assert seconds_until(daily, now, now) == t("2026-12-07T02:30:00") - now
    every = parse_schedule("@every 6h")
    for step in range(0, 3 * 86400, 3607):
        last = t("2026-12-06T00:00:00") + step
        wait = seconds_until(every, last, last)
        assert wait == 6 * 3600


# --- config --------------------------------------------------------------------


def test_backup_config(tmp_path: Path) -> None:
    config = parse_backup(
        {
            "backup": {
                "repository": "s3:http://127.0.0.1:9000/bucket/patrd",
                "schedule": "@every 6h",
                "keep_daily": 7,
                "keep_weekly": 4,
                "password_file": "pw",
                "env_file": "/etc/patrd/backup.env",
            }
        },
        tmp_path,
    )
    assert config.enabled and config.schedule is not None
    assert config.schedule.every_s == 6 * 3600
    assert config.password_file == tmp_path / "pw"
    assert config.retention.flags() == ["--keep-daily", "7", "--keep-weekly", "4"]
    assert parse_backup({}, tmp_path).enabled is False
    assert Retention().any is False


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"schedule": "@every 1h"}, "backup.repository"),
        ({"repository": "/r", "schedule": "hourly"}, "backup.schedule"),
        ({"repository": "/r", "keep_daily": -1}, "backup.keep_daily"),
        ({"repository": "/r", "keep_daily": True}, "backup.keep_daily"),
        ({"repository": "/r", "hook_timeout_s": 0}, "backup.hook_timeout_s"),
        ({"repository": "/r", "state": "yes"}, "backup.state"),
        ({"repository": "/r", "keep": 3}, "backup.keep"),
        ({"repository": 3}, "backup.repository"),
    ],
)
def test_backup_config_names_the_bad_key(table: dict[str, Any], key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_backup({"backup": table}, tmp_path)
    assert err.value.key == key


def test_config_loads_the_backup_section(tmp_path: Path) -> None:
    from patrd.settings.config import parse

    raw = {"backup": {"repository": "/srv/restic", "schedule": "03:15"}}
    config = parse(raw, base_dir=tmp_path)
    assert config.backup.repository == "/srv/restic"
    assert config.backup.schedule is not None and config.backup.schedule.daily_s == 3 * 3600 + 900


def test_env_file(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text('# creds\nAWS_ACCESS_KEY_ID=abc\nexport AWS_SECRET_ACCESS_KEY="s e"\n\n')
    assert read_env_file(path) == {"AWS_ACCESS_KEY_ID": "abc", "AWS_SECRET_ACCESS_KEY": "s e"}
    path.write_text("not a pair\n")
    with pytest.raises(ConfigError) as err:
        read_env_file(path)
    assert err.value.key == "backup.env_file" and "line 1" in str(err.value)


# --- the deployment's hooks -------------------------------------------------------

BASE = {"name": "db", "image": "library/postgres", "ports": {"80": "http"}}


def test_backup_hooks_in_spec() -> None:
    parsed = spec.parse_create(
        {**BASE, "backup": {"hooks": {"pre": "pg_dump > /data/d.sql", "post": ["rm", "x"]}}},
        region="local",
    )
    assert parsed.backup.pre == ("/bin/sh", "-c", "pg_dump > /data/d.sql")
    assert parsed.backup.post == ("rm", "x")
    again = spec.spec_from_json(parsed.to_json())
    assert again == parsed
    assert spec.parse_create(BASE, region="local").backup == spec.BackupSpec()
    updated = spec.parse_update(parsed, {"backup": {"hooks": {}}})
    assert updated.backup == spec.BackupSpec()
    # Hooks change no container: no rollout.
    assert updated.instance_template() == parsed.instance_template()


def test_old_stored_specs_have_no_hooks() -> None:
    stored = spec.parse_create(BASE, region="local").to_json()
    del stored["backup"]
    assert spec.spec_from_json(stored).backup == spec.BackupSpec()


@pytest.mark.parametrize(
    ("backup", "field"),
    [
        ({"hooks": {"pre": 3}}, "backup.hooks.pre"),
        ({"hooks": {"post": ["ok", 1]}}, "backup.hooks.post"),
        ({"hooks": {"pre": [""]}}, "backup.hooks.pre"),
        ({"hooks": {"during": "x"}}, "backup.hooks.during"),
        ({"exclude": []}, "backup.exclude"),
        ({"hooks": {"pre": ["a"] * 100}}, "backup.hooks.pre"),
        ("yes", "backup"),
    ],
)
def test_backup_hooks_refused(backup: Any, field: str) -> None:
    with pytest.raises(SpecError) as err:
        spec.parse_create({**BASE, "backup": backup}, region="local")
    assert err.value.field == field


# --- which snapshots a restore takes -------------------------------------------------


def snap(sid: str, when: float, **tags: str) -> Snapshot:
    return Snapshot(id=sid, short_id=sid[:8], time=when, tags=tags, paths=("/x",), hostname="h")


SNAPSHOTS = [
    snap("aaaa0001", 100, kind="state", run="r1"),
    snap("aaaa0002", 101, kind="volume", run="r1", deployment="db", volume="data", instance="0"),
    snap("aaaa0003", 102, kind="volume", run="r1", deployment="web", volume="data", instance="0"),
    snap("bbbb0001", 200, kind="state", run="r2"),
    snap("bbbb0002", 201, kind="volume", run="r2", deployment="db", volume="data", instance="0"),
    snap("bbbb0003", 202, kind="volume", run="r2", deployment="db", volume="logs", instance="0"),
    snap("bbbb0004", 203, kind="volume", run="r2", deployment="db", volume="data", instance="1"),
    snap("cccc0001", 300, kind="state", run="r3"),
]


@pytest.mark.parametrize(
    ("ref", "deployment", "volume", "expected"),
    [
        ("latest", "db", None, ["bbbb0002", "bbbb0004", "bbbb0003"]),
        ("latest", "db", "logs", ["bbbb0003"]),
        ("latest", "web", None, ["aaaa0003"]),
        ("r1", "db", None, ["aaaa0002"]),
        ("bbbb0001", "db", "data", ["bbbb0002", "bbbb0004"]),  # the state snapshot's run
        ("bbbb0004", "db", None, ["bbbb0004"]),  # one volume snapshot
    ],
)
def test_choose(ref: str, deployment: str, volume: str | None, expected: list[str]) -> None:
    chosen = choose(SNAPSHOTS, RestoreRequest(ref, deployment, volume))
    assert [s.id for s in chosen] == expected


@pytest.mark.parametrize(
    ("ref", "deployment", "message"),
    [
        ("latest", "nope", "no backup holds volumes of nope"),
        ("r3", "db", "holds no volumes of db"),
        ("zzzz", "db", "no backup run or snapshot"),
        ("aaaa", "db", "ambiguous"),
        ("aa", "db", "no backup run or snapshot"),
        ("bbbb0002", "web", "holds no volumes of web"),
    ],
)
def test_choose_says_why_not(ref: str, deployment: str, message: str) -> None:
    with pytest.raises(NotFound, match=message):
        choose(SNAPSHOTS, RestoreRequest(ref, deployment))


def test_choose_state() -> None:
    assert choose_state(SNAPSHOTS, "latest").id == "cccc0001"
    assert choose_state(SNAPSHOTS, "r1").id == "aaaa0001"
    assert choose_state(SNAPSHOTS, "bbbb0003").id == "bbbb0001"
    with pytest.raises(NotFound):
        choose_state([s for s in SNAPSHOTS if s.kind != "state"], "latest")


def test_runs_json_groups_by_run_newest_first() -> None:
    runs = runs_json(SNAPSHOTS)
    assert [r["id"] for r in runs] == ["r3", "r2", "r1"]
    assert runs[1]["deployments"] == ["db"] and runs[1]["state"] is True
    assert runs[2]["deployments"] == ["db", "web"]
    assert runs[1]["snapshots"][3]["instance"] == 1


# --- restic: times, credentials ------------------------------------------------------


def test_parse_time() -> None:
    assert _parse_time("2026-12-06T03:19:20.767854568Z") == pytest.approx(
        t("2026-12-06T03:19:20") + 0.767854568
    )
    assert _parse_time("2026-12-06T04:19:20+01:00") == t("2026-12-06T03:19:20")


def test_credentials_are_masked(tmp_path: Path) -> None:
    assert redact("rest:https://user:pa55@host:8000/repo") == "rest:https://***@host:8000/repo"
    assert redact("/srv/restic") == "/srv/restic"
    repo = Repository(
        location="rest:https://user:pa55@host/r",
        password_file=tmp_path / "pw",
        cache_dir=tmp_path,
        env={"AWS_SECRET_ACCESS_KEY": "very-secret"},
    )
    assert "pa55" not in repr(repo) and "very-secret" not in repr(repo)
    masked = Restic(repo)._mask("Fatal: rest:https://user:pa55@host/r: key very-secret bad")
    assert "pa55" not in masked and "very-secret" not in masked


# --- /metrics ----------------------------------------------------------------------


async def test_backup_metrics() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from patrd.observe.prometheus import Exposition, Sources
    from patrd.state.offsite import BackupStats

    class NoEvents:
        async def list_deployments(self) -> list[Any]:
            return []

        async def events_since(self, after_id: int, limit: int = 1000) -> list[Any]:
            return []

        async def last_event_id(self) -> int:
            return 0

    stats = BackupStats(runs_ok=3, runs_failed=1, deployment_failures=2, last_run_at=1000.0)

    async def scrape() -> dict[str, float]:
        text = (await Exposition(Sources(store=NoEvents(), backups=stats)).render()).decode()
        return {
            s.name + str(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }

    samples = await scrape()
    assert samples["patrd_backup_runs_total[('result', 'ok')]"] == 3
    assert samples["patrd_backup_runs_total[('result', 'failed')]"] == 1
    assert samples["patrd_backup_deployment_failures_total[]"] == 2
    assert samples["patrd_backup_last_run_timestamp_seconds[]"] == 1000
    # Never a success: no timestamp at all (an alert on its age fires), not a zero.
    assert not any(k.startswith("patrd_backup_last_success") for k in samples)
    stats.last_success_at, stats.last_duration_s = 990.0, 12.5
    samples = await scrape()
    assert samples["patrd_backup_last_success_timestamp_seconds[]"] == 990
    assert samples["patrd_backup_last_duration_seconds[]"] == 12.5
