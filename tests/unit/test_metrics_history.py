"""The metrics history (patrd/observe/history.py): rollups into tiers, bounded size."""

from __future__ import annotations

from pathlib import Path

import pytest

from patrd.observe.history import History
from tests.support.observed import sample

# --- history ---------------------------------------------------------------------------------


async def test_history_rolls_up_and_bounds_itself(tmp_path: Path) -> None:
    history = await History.open(tmp_path / "metrics.db")
    try:
        base = 1_700_000_000 // 3600 * 3600
        for i in range(0, 7200, 5):  # two hours of 5 s samples, two instances
            t = base + i
            await history.add(t, [sample(t, "a", 0.5), sample(t, "b", 1.5)])
            await history.maintain(t, {"dep"})
        now = base + 7200
        await history.rollup(now, {"dep"})
        step, hour = await history.series("dep", "hour", now)
        assert step == 0
        assert 700 <= len(hour) <= 721  # raw, last hour only
        assert all(p.instances == 2 and p.cpu_cores == 2.0 for p in hour)
        assert hour[-1].cpu_usage == 1.0 and hour[-1].memory_bytes == 2000
        _, day = await history.series("dep", "day", now)
        assert len(day) == 120  # 1-minute buckets over two hours
        assert all(p.cpu_cores == pytest.approx(2.0) for p in day)
        _, one = await history.series("dep", "day", now, instance="a")
        assert all(p.instances == 1 and p.cpu_cores == pytest.approx(0.5) for p in one)
        _, week = await history.series("dep", "week", now)
        assert len(week) == 8 and week[0].rx_bps == pytest.approx(20.0)
        _, month = await history.series("dep", "month", now)
        assert len(month) == 2
        before = await history.row_count()
        await history.rollup(now + 40 * 24 * 3600, {"dep"})  # everything expired
        assert before > 0 and await history.row_count() == 0
        await history.add(now, [sample(now, "a", 1.0)])
        await history.rollup(now + 60, set())  # the deployment is gone
        assert await history.row_count() == 0
    finally:
        await history.close()


async def test_a_damaged_metrics_db_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    path.write_bytes(b"not a database at all" * 100)
    history = await History.open(path)
    try:
        assert await history.row_count() == 0
    finally:
        await history.close()
    assert any(p.name.startswith("metrics.db.broken-") for p in tmp_path.iterdir())
