"""What the API's unit tests share: fake controllers, one API configuration, and
the check of an error answer.

``FakeController`` and ``ScriptedController`` stand where
``patrd.control.executor.Controller`` does in ``build_app``: the first records
wakes and answers canned instances, the second also plays a short script
against the store (for the CLI's end-to-end tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import aiohttp

from patrd.model.deployment import Intent, Status
from patrd.model.views import InstanceView
from patrd.settings.config import ApiConfig, Config, Listen, ProxyConfig
from patrd.state.store import Store

CONFIG = Config(
    api=ApiConfig(max_body_bytes=4096),
    proxy=ProxyConfig(http_listen=(Listen("0.0.0.0", 8080),), base_domain="example.test"),
)
TOKEN = "s3cret-token"
WEB: dict[str, Any] = {
    "name": "web",
    "image": "library/nginx",
    "tag": "1.25",
    "ports": {"80": "http"},
    "env": {"A": "1"},
}


class FakeController:
    """Records wakes; answers canned instances (or raises ``fail_with``)."""

    def __init__(self) -> None:
        self.woken: list[str | None] = []
        self.by_id: dict[str, list[InstanceView]] = {}
        self.fail_with: Exception | None = None

    def wake(self, deployment_id: str | None = None) -> None:
        self.woken.append(deployment_id)

    def instances(self, deployment_id: str) -> list[InstanceView]:
        if self.fail_with is not None:
            raise self.fail_with
        return list(self.by_id.get(deployment_id, []))

    async def volume_usage(self, deployment: str) -> dict[str, tuple[int, int]]:
        return {}


class ScriptedController:
    """Stands in for the reconciler: on wake, plays a short script against the store.

    ``outcome`` decides what starting does: "running", "errored" or "none"
    (nothing happens); stopping and deleting always converge.
    """

    def __init__(self, store: Store, outcome: str = "running") -> None:
        self.store = store
        self.outcome = outcome
        self.woken: list[str | None] = []
        self.live: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    def wake(self, deployment_id: str | None = None) -> None:
        self.woken.append(deployment_id)
        if deployment_id is not None:
            self._spawn(self._react(deployment_id))

    def instances(self, deployment_id: str) -> list[InstanceView]:
        if deployment_id not in self.live:
            return []
        return [InstanceView("web-0", "abc", 1, 0, "running", True, "172.18.0.2", 0)]

    async def volume_usage(self, deployment: str) -> dict[str, tuple[int, int]]:
        return {}

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _react(self, deployment_id: str) -> None:
        await asyncio.sleep(0.05)
        record = await self.store.get_by_id(deployment_id)
        if record is None:
            return
        if record.intent is Intent.DELETE:
            self.live.discard(deployment_id)
            await self.store.purge(deployment_id)
        elif record.intent is Intent.STOP:
            self.live.discard(deployment_id)
        elif record.intent is Intent.RUN and self.outcome != "none":
            await self.store.add_event(deployment_id, "pull", "pulling library/nginx:1.25", 1)
            if self.outcome == "errored":
                await self.store.set_status(deployment_id, Status.ERRORED, "image not found")
            else:
                self.live.add(deployment_id)
                await self.store.set_status(deployment_id, Status.RUNNING)


async def expect_error(
    resp: aiohttp.ClientResponse, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert body.get("field") == field
    return body
