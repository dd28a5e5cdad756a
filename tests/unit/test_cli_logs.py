"""``patrctl logs``: --since 10m, -n, unknown --instance, and an empty state that says why."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from patrd.api.app import build_app, serve_api
from patrd.api.observe import Observability
from patrd.cli.main import main
from patrd.cli.observe import duration_s
from patrd.model.deployment import Status
from patrd.model.instances import ContainerState, Instance
from patrd.model.spec import parse_create
from patrd.model.views import InstanceView
from patrd.observe.logs import format_ts
from patrd.settings.config import Config
from patrd.state.store import Store


class Engine:
    """Answers Docker-style log frames for the instances it is given; records the asks."""

    def __init__(self) -> None:
        self.instances: list[Instance] = []
        self.asked: list[dict[str, Any]] = []

    async def logs(self, container_id: str, **kwargs: Any) -> AsyncIterator[tuple[str, bytes]]:
        self.asked.append(kwargs)
        now = time.time_ns()
        for n in range(3):
            yield "stdout", f"{format_ts(now - (3 - n) * 1000)} line {n}\n".encode()

    async def stop(self, container_id: str, stop_timeout_s: int) -> None:
        pass

    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]:
        return list(self.instances)


class Controller:
    def __init__(self) -> None:
        self.live: dict[str, list[InstanceView]] = {}

    def wake(self, deployment_id: str | None = None) -> None:
        pass

    def instances(self, deployment_id: str) -> list[InstanceView]:
        return self.live.get(deployment_id, [])

    async def volume_usage(self, deployment: str) -> dict[str, tuple[int, int]]:
        return {}


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[list[str], Store, Engine, Controller]]:
    store = await Store.open(tmp_path / "patrd.db")
    engine, controller = Engine(), Controller()
    app = build_app(store, controller, Config(), token=None, observe=Observability(engine=engine))
    sock = tmp_path / "api.sock"
    runner = await serve_api(app, socket_path=sock, socket_mode=0o600, tcp=None)
    try:
        yield ["--socket", str(sock)], store, engine, controller
    finally:
        await runner.cleanup()
        await store.close()


async def run(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)


async def deploy(store: Store, engine: Engine, controller: Controller) -> str:
    spec = parse_create({"name": "web", "image": "x", "ports": {"80": "http"}}, region="local")
    record = await store.create_deployment(spec)
    engine.instances = [
        Instance(
            "c0ffee" * 4, "web-1-0", record.id, "web", 1, 0, ContainerState.RUNNING, None, None
        )
    ]
    controller.live[record.id] = [InstanceView("web-0", "c0ffee", 1, 0, "running", True, None, 0)]
    return record.id


def test_durations() -> None:
    assert duration_s("10m") == 600
    assert duration_s("1h") == 3600
    assert duration_s("1.5s") == 1.5
    assert duration_s("2024-05-01T00:00:00Z") is None


async def test_since_a_duration_and_tail(
    site: tuple[list[str], Store, Engine, Controller], capsys: pytest.CaptureFixture[str]
) -> None:
    s, store, engine, controller = site
    await deploy(store, engine, controller)
    before = time.time()
    assert await run([*s, "logs", "web", "--since", "10m", "-n", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in out] == ["1", "2"], out
    since = engine.asked[-1]["since"]
    assert before - 600 - 5 <= since <= time.time() - 600 + 1
    assert engine.asked[-1]["tail"] == 2


async def test_unknown_instance_is_an_error(
    site: tuple[list[str], Store, Engine, Controller], capsys: pytest.CaptureFixture[str]
) -> None:
    s, store, engine, controller = site
    await deploy(store, engine, controller)
    assert await run([*s, "logs", "web", "--instance", "web-7"]) == 1
    assert capsys.readouterr().err == (
        "patrctl: --instance: web has no instance 'web-7'; its instances: web-0\n"
    )
    assert await run([*s, "logs", "web", "--instance", "web-0"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


async def test_empty_logs_say_why(
    site: tuple[list[str], Store, Engine, Controller], capsys: pytest.CaptureFixture[str]
) -> None:
    s, store, _, _ = site
    spec = parse_create({"name": "web", "image": "x", "ports": {"80": "http"}}, region="local")
    record = await store.create_deployment(spec)
    reason = "image x:latest unavailable: pull access denied"
    await store.set_status(record.id, Status.ERRORED, reason)
    assert await run([*s, "logs", "web"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"patrctl: no log lines: web has no instances (errored: {reason})\n")
