"""``patrctl status``: the daemon's health in one line, degraded reasons below, exit 1."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from patrd.api.app import build_app
from patrd.cli.notify import cmd_status
from patrd.settings.config import Config
from patrd.state.store import Store
from tests.support.api_fakes import FakeController


async def health_of(store: Store, closed: str | None) -> Any:
    app = build_app(store, FakeController(), Config(), token=None, proxy_closed=lambda: closed)
    async with TestClient(TestServer(app)) as client:
        return await (await client.get("/v1/health")).json()


class Answers:
    def __init__(self, health: Any) -> None:
        self.health = health

    def get(self, path: str, **query: Any) -> Any:
        assert path == "/v1/health" and not query
        return self.health


@pytest.mark.parametrize(
    ("closed", "code", "lines"),
    [
        (None, 0, [": ok"]),
        (
            "firewall.enabled but the ruleset did not load: nft: not found",
            1,
            [": degraded", "  firewall.enabled but the ruleset did not load: nft: not found"],
        ),
    ],
)
async def test_status_prints_the_health_and_exits_1_when_degraded(
    store: Store,
    closed: str | None,
    code: int,
    lines: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    health = await health_of(store, closed)
    args = argparse.Namespace(json=False)
    assert cmd_status(Answers(health), args) == code  # type: ignore[arg-type]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("patrd ") and out[0].endswith(lines[0])
    assert out[1:] == lines[1:]
