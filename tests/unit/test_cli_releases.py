"""``patrctl redeploy`` and ``patrctl revert REF`` end to end over the unix socket.

The API and store are real; the reconciler is the scripted stand-in of
test_cli.py and the tag resolver a table (pulling is the integration tests').
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from patrd.api.app import build_app, serve_api
from patrd.cli import waiting
from patrd.cli.main import main
from patrd.model.deployment import DeploymentRecord
from patrd.model.releases import Pin
from patrd.model.spec import parse_create
from patrd.settings.config import ApiConfig, Config, Listen, ProxyConfig
from patrd.state.store import Store
from tests.support.api_fakes import ScriptedController

REPO = "127.0.0.1:5000/apps/web"
D1, D2 = "sha256:" + "a" * 64, "sha256:" + "b" * 64
ID1, ID2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


class TableResolver:
    """What the tag points at now (the test moves it)."""

    def __init__(self) -> None:
        self.pin = Pin(f"{REPO}@{D1}", ID1, D1)
        self.asked: list[str] = []

    async def resolve_tag(self, record: DeploymentRecord) -> tuple[Pin, str | None]:
        self.asked.append(record.name)
        return self.pin, None


@pytest.fixture
async def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, Store, TableResolver]]:
    monkeypatch.setattr(waiting, "POLL_INTERVAL_S", 0.02)
    store = await Store.open(tmp_path / "patrd.db")
    controller = ScriptedController(store)
    resolver = TableResolver()
    config = Config(
        api=ApiConfig(max_body_bytes=64 * 1024),
        proxy=ProxyConfig(http_listen=(Listen("0.0.0.0", 80),), base_domain="example.test"),
    )
    sock = tmp_path / "api.sock"
    runner = await serve_api(
        build_app(store, controller, config, token=None, resolver=resolver),
        socket_path=sock,
        socket_mode=0o600,
        tcp=None,
    )
    try:
        yield str(sock), store, resolver
    finally:
        await runner.cleanup()
        for task in list(controller.tasks):
            task.cancel()
        await asyncio.gather(*controller.tasks, return_exceptions=True)
        await store.close()


async def run(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)


async def test_redeploy_and_revert_by_ref(
    served: tuple[str, Store, TableResolver], capsys: pytest.CaptureFixture[str]
) -> None:
    sock, store, resolver = served
    s = ["--socket", sock]
    body = {"name": "web", "registry": "local", "image": "apps/web", "tag": "main"}
    record = await store.create_deployment(
        parse_create({**body, "ports": {"80": "http"}}, region="")
    )
    await store.record_image(record.id, 1, ID1, f"{REPO}@{D1}")

    assert await run([*s, "redeploy", "web"]) == 0
    assert capsys.readouterr().out.strip() == f"web: already at {D1[:19]}"
    assert (await store.get_deployment("web")).revision == 1

    resolver.pin = Pin(f"{REPO}@{D2}", ID2, D2)
    assert await run([*s, "redeploy", "web", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["revision"] == 2 and answer["redeploy"]["changed"] is True
    assert await store.revision_pin(record.id, 2) == (f"{REPO}@{D2}", ID2, f"{REPO}@{D2}")
    assert resolver.asked == ["web", "web"]

    assert await run([*s, "revert", "web", "1"]) == 0
    assert "web: revision 3 reverts" in capsys.readouterr().out
    assert await store.revision_pin(record.id, 3) == (f"{REPO}@{D1}", ID1, f"{REPO}@{D1}")

    assert await run([*s, "revert", "web", "abc"]) == 1
    err = capsys.readouterr().err
    assert "at least 12 hex characters" in err and "field: ref" in err
    assert await run([*s, "revert", "web", "b" * 12]) == 0  # digest prefix of revision 2
    capsys.readouterr()
    assert (await store.get_deployment("web")).pinned_image == f"{REPO}@{D2}"
