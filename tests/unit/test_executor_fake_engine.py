"""The per-deployment executor (DeploymentWorker) against a FakeEngine and a real Store."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace

from structlog.testing import capture_logs

from patrd.model.deployment import Status
from patrd.model.instances import ContainerState
from patrd.model.spec import Scale
from tests.support.executor_harness import (
    Harness,
    eventually,
)


async def test_create_runs_the_replicas_on_their_own_network(harness: Harness) -> None:
    record = await harness.create(scale={"min": 2, "max": 2})
    harness.run(record)
    await eventually(lambda: harness.running_with(record, 2, record.revision))
    running = harness.engine.running("web")
    assert [c.spec.slot for c in running] == [0, 1]
    assert len({c.ip for c in running}) == 2
    assert all(c.spec.network == "patrd-web" for c in running)
    assert "patrd-web" in harness.engine.networks


async def test_rollout_replaces_every_instance_with_the_new_revision(harness: Harness) -> None:
    record = await harness.create(scale={"min": 2, "max": 2})
    worker = harness.run(record)
    await eventually(lambda: harness.running_with(record, 2, record.revision))
    old = set(harness.engine.containers)
    updated = await harness.store.update_spec("web", lambda s: replace(s, tag="v2"))
    worker.wake()  # what the API does after a change
    assert updated.revision == record.revision + 1
    await eventually(lambda: harness.running_with(record, 2, updated.revision))
    assert not old & set(harness.engine.containers)
    assert ("ensure_image", "acme/web:v2") in harness.engine.calls


async def test_a_failed_start_is_retried_with_backoff(harness: Harness) -> None:
    harness.engine.fail_start.add("acme/web:v1")
    record = await harness.create()
    with capture_logs() as logs:
        harness.run(record)

        async def three_attempts() -> bool:
            return harness.engine.count("start") >= 3

        await eventually(three_attempts)
    assert await harness.status(record) is not Status.RUNNING
    failed = [e for e in logs if e["event"] == "reconcile_failed"]
    assert [e["retry_in"] for e in failed[:2]] == [1.0, 2.0]
    assert all("exec format error" in e["error"] for e in failed)
    gaps = _gaps(harness.engine.started_at)
    assert gaps[0] >= 0.8 and gaps[1] >= 1.6, gaps  # waited, no busy loop
    assert not harness.engine.running("web")


async def test_a_crashing_instance_restarts_after_growing_delays(harness: Harness) -> None:
    harness.engine.crash.add("acme/web:v1")
    record = await harness.create()
    harness.run(record)

    async def four_starts() -> bool:
        return len(harness.engine.started_at) >= 4

    await eventually(four_starts, timeout=30)
    gaps = _gaps(harness.engine.started_at)
    # The first crash restarts at once, then 1 s, 2 s (patrd.control.reconcile.RESTART_BACKOFF).
    assert gaps[0] < 0.8, gaps
    assert gaps[1] >= 0.8, gaps
    assert gaps[2] >= 1.6, gaps
    assert await harness.status(record) is not Status.RUNNING
    assert all(c.state is not ContainerState.RUNNING for c in harness.engine.containers.values())
    events = await harness.events(record)
    assert any("next attempt after" in e for e in events), events


def _gaps(stamps: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(stamps)]


async def test_scale_down_removes_the_excess_slot_and_its_volumes(harness: Harness) -> None:
    record = await harness.create(
        scale={"min": 2, "max": 2}, volumes={"data": {"path": "/data", "size_gb": 1}}
    )
    worker = harness.run(record)
    await eventually(lambda: harness.running_with(record, 2, record.revision))
    assert sorted(v.slot for v in harness.engine.volumes.values()) == [0, 1]
    updated = await harness.store.update_spec("web", lambda s: replace(s, scale=Scale(1, 1)))
    worker.wake()

    async def one_left() -> bool:
        # A scale change keeps the template: slot 0 stays the same container.
        return await harness.running_with(record, 1, record.revision) and [
            v.slot for v in harness.engine.volumes.values()
        ] == [0]

    await eventually(one_left, timeout=10)  # well before the 15 s resync
    assert harness.engine.running("web")[0].spec.slot == 0
    assert updated.revision == record.revision + 1
    assert harness.engine.count("remove_volume") == 1


async def test_a_new_worker_adopts_running_instances(harness: Harness) -> None:
    record = await harness.create(scale={"min": 2, "max": 2})
    harness.run(record)
    await eventually(lambda: harness.running_with(record, 2, record.revision))
    before = dict(harness.engine.containers)
    created = harness.engine.count("create_instance")
    await harness.stop_workers()  # patrd restarts; the containers keep running
    for cid in before:
        await harness.engine.deafen(cid)  # the re-check takes a while

    with capture_logs() as logs:
        worker = harness.run(record)
        await asyncio.sleep(1.0)  # passes run; the startup checks keep failing
        # Re-checking adopted instances is no reason to say "deploying" about a
        # running deployment (patrd.control.decisions.hide_status).
        assert await harness.status(record) is Status.RUNNING
        assert any(e["event"] == "pass" for e in logs)
        for cid in before:
            await harness.engine.listen(cid)
        await eventually(lambda: harness.running_with(record, 2, record.revision))
        await asyncio.wait_for(worker.settled.wait(), 15)
    assert not [e for e in logs if e["event"] == "status"], logs
    assert harness.engine.count("create_instance") == created
    assert set(harness.engine.containers) == set(before)
    assert harness.engine.count("remove") == 0


async def test_a_pinned_revision_never_falls_back_to_its_tag(harness: Harness) -> None:
    """The image id a revision resolved to is what it runs after a restart; gone
    from the node with no digest to pull it by, the deployment says so (errored)
    rather than running whatever the tag points at now."""
    record = await harness.create()
    harness.run(record)
    await eventually(lambda: harness.running_with(record, 1, record.revision))
    _, image_id, digest_ref = await harness.store.revision_pin(record.id, record.revision)
    assert image_id is not None and digest_ref is None  # built on the node: no digest
    await harness.stop_workers()  # patrd restarts...
    for cid in list(harness.engine.containers):
        await harness.engine.remove(cid, 1)  # ...and the container is gone meanwhile
    harness.engine.missing.add(image_id)  # so is the image (a prune)
    pulls_by_tag = harness.engine.count("ensure_image")
    harness.run(record)

    async def errored() -> bool:
        return await harness.status(record) is Status.ERRORED

    await eventually(errored)
    now = await harness.store.get_by_id(record.id)
    assert now is not None and "no registry digest to pull it by" in now.status_reason
    tried = [ref for name, ref in harness.engine.calls[pulls_by_tag:] if name == "ensure_image"]
    assert tried and set(tried) == {image_id}, tried  # never "acme/web:v1" again
    assert not harness.engine.containers
