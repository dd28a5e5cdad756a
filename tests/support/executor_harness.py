"""A per-deployment executor over a FakeEngine and a real Store, for unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from patrd.control.options import ControllerOptions
from patrd.control.worker import DeploymentWorker
from patrd.model.deployment import DeploymentRecord, Status
from patrd.model.spec import parse_create
from patrd.proxy.router import RoutingTable
from patrd.state.store import Store
from tests.support.fake_engine import FakeEngine
from tests.support.waits import until

PORT = 18080
OPTIONS = ControllerOptions(base_domain="fake.test", stop_timeout_s=1, ready_timeout_s=5.0)


class Sink:
    def set_table(self, table: RoutingTable) -> None:
        pass

    def outstanding(self, host: str, port: int) -> int:
        return 0


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    await until(check, timeout, "the worker's condition", interval=0.05)


class Harness:
    def __init__(self, store: Store, engine: FakeEngine) -> None:
        self.store = store
        self.engine = engine
        self.tasks: list[asyncio.Task[None]] = []

    async def create(self, **body: Any) -> DeploymentRecord:
        spec = parse_create(
            {"name": "web", "image": "acme/web", "tag": "v1", "ports": {str(PORT): "http"}, **body},
            region="local",
        )
        return await self.store.create_deployment(spec)

    def run(self, record: DeploymentRecord) -> DeploymentWorker:
        worker = DeploymentWorker(record.id, self.store, self.engine, Sink(), OPTIONS, lambda: None)
        self.tasks.append(asyncio.create_task(worker.run()))
        return worker

    async def stop_workers(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()

    async def status(self, record: DeploymentRecord) -> Status:
        now = await self.store.get_by_id(record.id)
        assert now is not None
        return now.status

    async def events(self, record: DeploymentRecord) -> list[str]:
        return [f"{e.kind}: {e.message}" for e in await self.store.list_events(record.id)]

    async def running_with(self, record: DeploymentRecord, count: int, revision: int) -> bool:
        running = self.engine.running(record.name)
        return (
            await self.status(record) is Status.RUNNING
            and len(running) == count
            and all(c.spec.revision == revision for c in running)
            and len(self.engine.containers) == count
        )


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    store = await Store.open(tmp_path / "patrd.db")
    engine = FakeEngine(port=PORT)
    h = Harness(store, engine)
    yield h
    await h.stop_workers()
    await engine.close()
    await store.close()
