"""FirewallKeeper decisions over a fake ``nft`` (the real one: test_firewall_netns.py).

Also the API route ``GET /v1/firewall`` and ``patrctl firewall show``.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from patrd.api.app import build_app
from patrd.api.firewall import status_json
from patrd.cli import main as cli
from patrd.cli.client import Client
from patrd.firewall.apply import Counter, FirewallError, FirewallKeeper, FirewallStatus, Nft
from patrd.firewall.rules import hash_of
from patrd.model.errors import EngineError
from patrd.settings.config import Config, FirewallConfig
from patrd.state.store import Store
from tests.support.api_fakes import FakeController


class FakeNft(Nft):
    """The kernel's table as a string; ``listing()`` returns what was loaded."""

    def __init__(self) -> None:
        super().__init__(("nft-not-run",))
        self.table: str | None = None
        self.loads = 0
        self.packets: dict[str, Counter] = {}
        self.fail: str | None = None

    async def load(self, text: str) -> None:
        if self.fail:
            raise FirewallError(self.fail)
        self.table = text
        self.packets = {}
        self.loads += 1

    async def listing(self) -> str | None:
        return self.table

    async def counters(self) -> dict[str, Counter]:
        return dict(self.packets) if self.table is not None else {}

    async def delete(self) -> bool:
        gone, self.table = self.table is not None, None
        return gone


class Bridges:
    def __init__(self, *names: str) -> None:
        self.names = list(names)
        self.down = False

    async def list_bridges(self) -> list[str]:
        if self.down:
            raise EngineError("Docker unreachable")
        return list(self.names)


ENABLED = Config(firewall=FirewallConfig(enabled=True))


async def test_applies_once_then_leaves_the_table_alone() -> None:
    nft, bridges = FakeNft(), Bridges("br-a")
    keeper = FirewallKeeper(ENABLED, bridges, nft)
    assert await keeper.sync() == "applied"
    assert await keeper.sync() == "unchanged"
    assert await keeper.sync() == "unchanged"
    assert nft.loads == 1
    assert nft.table is not None and '"br-a"' in nft.table


@pytest.mark.parametrize("change", ["deleted", "edited", "bridges", "flushed-and-foreign"])
async def test_reapplies_when_the_kernel_or_the_state_differs(change: str) -> None:
    nft, bridges = FakeNft(), Bridges("br-a")
    keeper = FirewallKeeper(ENABLED, bridges, nft)
    await keeper.sync()
    assert nft.table is not None
    if change == "deleted":
        nft.table = None
    elif change == "edited":  # same comment (hash), a rule added by hand
        nft.table = nft.table.replace("chain input {", "chain input {\n\t\ttcp dport 9 accept")
    elif change == "bridges":
        bridges.names.append("br-b")
    else:  # someone else's table of that name, without our comment
        nft.table = "table inet patrd {\n}\n"
    assert await keeper.sync() == "applied"
    assert nft.loads == 2
    assert "dport 9 accept" not in (nft.table or "")


async def test_docker_down_keeps_the_known_bridges() -> None:
    nft, bridges = FakeNft(), Bridges("br-a")
    keeper = FirewallKeeper(ENABLED, bridges, nft)
    await keeper.sync()
    bridges.down = True
    assert await keeper.sync() == "unchanged"
    assert '"br-a"' in (nft.table or "")


async def test_a_restarted_daemon_adopts_the_loaded_table() -> None:
    nft = FakeNft()
    await FirewallKeeper(ENABLED, Bridges("br-a"), nft).sync()
    again = FirewallKeeper(ENABLED, Bridges("br-a"), nft)
    assert await again.sync() == "unchanged"
    assert nft.loads == 1


async def test_counters_survive_a_reload() -> None:
    nft, bridges = FakeNft(), Bridges()
    keeper = FirewallKeeper(ENABLED, bridges, nft)
    await keeper.sync()
    nft.packets = {"rate_limited": Counter(5, 300)}
    bridges.names.append("br-new")
    await keeper.sync()  # reload: the kernel's counters restart at zero
    nft.packets = {"rate_limited": Counter(2, 120)}
    status = await keeper.status()
    assert status.counters["rate_limited"] == Counter(7, 420)
    assert status.enabled and status.applied and status.loads == 2


async def test_failure_is_reported_and_retried() -> None:
    nft = FakeNft()
    nft.fail = "Error: syntax error"
    keeper = FirewallKeeper(ENABLED, Bridges(), nft)
    with pytest.raises(FirewallError):
        await keeper.sync()
    status = await keeper.status()
    assert status.error == "Error: syntax error" and not status.applied
    nft.fail = None
    assert await keeper.sync() == "applied"
    assert (await keeper.status()).error is None


async def test_disabled_removes_only_its_own_leftover() -> None:
    nft = FakeNft()
    await FirewallKeeper(ENABLED, Bridges(), nft).sync()
    disabled = FirewallKeeper(Config(), Bridges(), nft)
    assert await disabled.sync() == "removed"
    assert nft.table is None
    nft.table = "table inet patrd {\n}\n"  # not ours: no patrd comment
    assert await disabled.sync() == "disabled"
    assert nft.table is not None
    status = await disabled.status()
    assert not status.enabled and hash_of(status.ruleset)


def test_status_json_shape() -> None:
    body = status_json(
        FirewallStatus(
            enabled=True,
            applied=True,
            ruleset="table inet patrd {\n}\n",
            counters={"api_denied": Counter(1, 60)},
            applied_at=0.0,
            loads=1,
        )
    )
    assert body["counters"] == {"api_denied": {"packets": 1, "bytes": 60}}
    assert body["applied_at"] == "1970-01-01T00:00:00.000Z"


# --- the API route and the CLI ---------------------------------------------------


async def test_route_without_keeper_is_a_dry_run(store: Store) -> None:
    app = build_app(store, FakeController(), Config(), token=None)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/v1/firewall")
        assert resp.status == 200
        body = await resp.json()
    assert body["enabled"] is False and body["applied"] is False
    assert body["ruleset"].count("table inet patrd {") == 1
    assert body["counters"] == {}


async def test_route_with_keeper(store: Store) -> None:
    nft = FakeNft()
    keeper = FirewallKeeper(ENABLED, Bridges("br-x"), nft)
    await keeper.sync()
    app = build_app(store, FakeController(), ENABLED, token=None, firewall=keeper)
    async with TestClient(TestServer(app)) as client:
        body = await (await client.get("/v1/firewall")).json()
    assert body["enabled"] is True and body["applied"] is True and body["loads"] == 1
    assert '"br-x"' in body["ruleset"]


def test_cli_firewall_show(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = {
        "enabled": True,
        "applied": True,
        "ruleset": "table inet patrd {\n}\n",
        "counters": {"rate_limited": {"packets": 3, "bytes": 180}},
        "error": None,
        "applied_at": "2026-01-01T00:00:00.000Z",
        "loads": 2,
    }
    calls: list[str] = []

    def fake_get(self: Client, path: str, **query: Any) -> Any:
        calls.append(path)
        return answer

    monkeypatch.setattr(Client, "get", fake_get)
    assert cli.main(["--socket", "/nonexistent", "firewall", "show"]) == 0
    out = capsys.readouterr().out
    assert calls == ["/v1/firewall"]
    assert out.startswith("# firewall: enabled and loaded (loads: 2")
    assert "table inet patrd {" in out
    assert "rate_limited" in out and "180" in out
    # Everything but the ruleset is a comment: the output still loads with nft -f.
    rules = ["table inet patrd {", "}"]
    assert [line for line in out.splitlines() if not line.startswith("#")] == rules
    answer["enabled"] = False
    assert cli.main(["--socket", "/nonexistent", "firewall", "show"]) == 0
    assert "disabled" in capsys.readouterr().out.splitlines()[0]
    assert cli.main(["--socket", "/nonexistent", "firewall", "nope"]) == 2
