"""Starts that fail because of the engine, not the app (patrd/control/start_faults.py):
the per-deployment executor against a FakeEngine and a real Store."""

from __future__ import annotations

from patrd.model.deployment import Status
from tests.support.executor_harness import Harness, eventually


async def test_a_stale_containerd_task_is_replaced_not_counted_as_a_crash(
    harness: Harness,
) -> None:
    """What CI saw after a dockerd restart: every start of the exited container
    failed with "task …: already exists". A new container replaces it."""
    record = await harness.create()
    worker = harness.run(record)
    await eventually(lambda: harness.running_with(record, 1, record.revision))
    (old,) = list(harness.engine.containers)
    harness.engine.stale_task.add(old)
    mark = len(harness.engine.calls)
    await harness.engine.kill(old, exit_code=143)  # dockerd stopped it
    worker.wake()  # the controller's event watch does this

    async def replaced() -> bool:
        return old not in harness.engine.containers and await harness.running_with(
            record, 1, record.revision
        )

    await eventually(replaced, timeout=20)
    tries = [c for name, c in harness.engine.calls[mark:] if name == "start" and c == old]
    assert len(tries) == 2, tries  # STALE_REPEATS_BEFORE_REPLACE
    events = await harness.events(record)
    assert any(e.startswith("engine_stale:") and "replacing the container" in e for e in events)
    assert not any(e.startswith("vanished:") for e in events), events
    # The one exit counted once; the failed tries did not add to it.
    assert any("failure #1" in e for e in events), events
    assert not any("failure #2" in e for e in events), events


async def test_starts_refused_while_docker_is_away_never_make_a_crash_loop(
    harness: Harness,
) -> None:
    record = await harness.create()
    worker = harness.run(record)
    await eventually(lambda: harness.running_with(record, 1, record.revision))
    (cid,) = list(harness.engine.containers)
    harness.engine.away.add(cid)
    await harness.engine.kill(cid, exit_code=143)
    worker.wake()

    async def five_tries() -> bool:
        return sum(1 for n, c in harness.engine.calls if n == "start" and c == cid) >= 5

    await eventually(five_tries, timeout=40)
    assert await harness.status(record) is not Status.ERRORED
    assert all(v.restarts <= 1 for v in worker.views()), worker.views()
    harness.engine.away.clear()  # Docker answers again
    worker.wake()
    await eventually(lambda: harness.running_with(record, 1, record.revision))
    assert list(harness.engine.containers) == [cid]  # the same container, started again
