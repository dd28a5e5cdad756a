"""Supervisor: restart backoff resets after a stable run; staged stop with timeouts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from patrd.daemon.supervisor import Stage, Supervisor
from patrd.kit.backoff import Backoff


async def crashes(policy: Backoff, runs_for: Callable[[int], float], stop_at: int) -> list[Any]:
    """Supervise a task whose n-th run (from 1) crashes after ``runs_for(n)`` seconds of
    a fake clock, until run ``stop_at`` returns; the ``task_crashed`` log entries."""
    now = [0.0]
    runs = 0
    finished = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == stop_at:
            finished.set()
            return
        now[0] += runs_for(runs)
        raise RuntimeError(f"crash {runs}")

    sup = Supervisor(backoff=policy, clock=lambda: now[0])
    with capture_logs() as logs:
        sup.start("flaky", flaky)
        await asyncio.wait_for(finished.wait(), 10.0)
        await sup.stop()
    return [e for e in logs if e["event"] == "task_crashed"]


async def test_backoff_resets_after_a_stable_run() -> None:
    policy = Backoff(initial_s=0.01, cap_s=1.0, reset_after_s=60.0)
    # The 4th run was healthy for two (fake) minutes; the others crash at once.
    crashed = await crashes(policy, lambda n: 120.001 if n == 4 else 0.001, stop_at=6)
    assert [e["restart_in"] for e in crashed] == pytest.approx([0.01, 0.02, 0.04, 0.01, 0.02])
    assert [e["failures"] for e in crashed] == [1, 2, 3, 1, 2]
    assert all(e["task"] == "flaky" for e in crashed)


async def test_without_a_stable_run_the_delay_keeps_growing() -> None:
    policy = Backoff(initial_s=0.01, cap_s=0.03, reset_after_s=60.0)
    # Each run lasts 59 s: long, but under reset_after_s.
    crashed = await crashes(policy, lambda n: 59.0, stop_at=5)
    assert [e["restart_in"] for e in crashed] == pytest.approx([0.01, 0.02, 0.03, 0.03])


async def test_staged_stop_orders_stages_and_names_a_task_that_ignores_cancel() -> None:
    order: list[str] = []
    stubborn_released = asyncio.Event()

    async def polite(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            order.append(name)

    async def stubborn() -> None:
        # Ignores cancellation for a while (1.5 s), then gives up.
        deadline = time.monotonic() + 1.5
        while True:
            try:
                await asyncio.sleep(max(0.0, deadline - time.monotonic()))
                if time.monotonic() >= deadline:
                    break
            except asyncio.CancelledError:
                continue
        order.append("stubborn")
        stubborn_released.set()

    sup = Supervisor(stages=(Stage("intake", 0.1), Stage("core", 2.0), Stage("last", 2.0)))
    sup.start("poller", lambda: polite("poller"))
    sup.start("stubborn", stubborn)
    sup.start("controller", lambda: polite("controller"), stage="core")
    sup.start("outbox", lambda: polite("outbox"), stage="last")
    await asyncio.sleep(0.05)
    started = time.monotonic()
    with capture_logs() as logs:
        await sup.stop()
    took = time.monotonic() - started
    timed_out = [e for e in logs if e["event"] == "stage_timed_out"]
    assert len(timed_out) == 1
    assert timed_out[0]["stage"] == "intake"
    assert timed_out[0]["still_running"] == ["stubborn"]
    stopped = [e["stage"] for e in logs if e["event"] == "stage_stopped"]
    assert stopped == ["core", "last"]
    # The intake stage gave up after its own 0.1 s; later stages stopped in order.
    assert order.index("poller") < order.index("controller") < order.index("outbox")
    assert took < 2.0
    # The stubborn task is still running after the stop gave up on it (logged, not awaited).
    assert not stubborn_released.is_set()
    assert any(
        e["event"] == "tasks_would_not_stop" and e["still_running"] == ["stubborn"] for e in logs
    )
    await asyncio.wait_for(stubborn_released.wait(), 5.0)


async def test_second_stop_is_ignored() -> None:
    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)
            raise

    sup = Supervisor(stages=(Stage("only", 5.0),))
    sup.start("slow", slow_to_stop)
    await asyncio.sleep(0.01)
    with capture_logs() as logs:
        first = asyncio.create_task(sup.stop())
        await asyncio.sleep(0.01)
        await asyncio.wait_for(sup.stop(), 0.1)  # returns at once
        assert not first.done()
        await first
    assert [e["event"] for e in logs].count("stop_already_requested") == 1
    assert [e["event"] for e in logs].count("stage_stopped") == 1


async def test_a_crashed_task_is_not_restarted_once_stopping() -> None:
    runs = 0

    async def crash() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("boom")

    sup = Supervisor(backoff=Backoff(initial_s=0.05, cap_s=0.05))
    sup.start("crash", crash)
    await asyncio.sleep(0.01)
    await sup.stop()
    await asyncio.sleep(0.1)
    assert runs == 1


def test_unknown_stage_and_bad_stages_are_refused() -> None:
    with pytest.raises(ValueError):
        Supervisor(stages=())
    with pytest.raises(ValueError):
        Supervisor(stages=(Stage("a", 1.0), Stage("a", 2.0)))


async def test_start_in_an_unknown_stage_is_refused() -> None:
    sup = Supervisor(stages=(Stage("a", 1.0),))

    async def noop() -> None:
        return None

    with pytest.raises(ValueError, match="unknown stage 'b'"):
        sup.start("x", noop, stage="b")
    await sup.stop()
