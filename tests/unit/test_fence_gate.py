"""The proxy gate (patrd/firewall/fence_gate.py): listeners open only while fenced."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from patrd.firewall.apply import FirewallError
from patrd.firewall.fence_gate import ProxyGate


@dataclass
class FakeFence:
    enabled: bool = True
    loaded: bool = False
    error: str | None = "nft not found"
    present: bool | None = False  # None: nft does not answer

    async def table_present(self) -> bool:
        if self.present is None:
            raise FirewallError("nft did not answer")
        return self.present


@dataclass
class Listeners:
    calls: list[str] = field(default_factory=list)

    async def open(self) -> None:
        self.calls.append("open")

    async def close(self) -> None:
        self.calls.append("close")


def gate_for(fence: FakeFence) -> tuple[ProxyGate, Listeners]:
    listeners = Listeners()
    return ProxyGate(fence, listeners.open, listeners.close, poll_s=0.01), listeners


async def test_disabled_firewall_opens_at_once() -> None:
    gate, listeners = gate_for(FakeFence(enabled=False))
    assert await gate.open_if_fenced()
    assert listeners.calls == ["open"] and gate.closed_reason() is None
    await gate.stop()
    assert listeners.calls == ["open", "close"]


async def test_unloaded_firewall_keeps_listeners_closed_until_it_loads() -> None:
    fence = FakeFence()
    gate, listeners = gate_for(fence)
    assert not await gate.open_if_fenced()
    reason = gate.closed_reason()
    assert reason is not None and "nft not found" in reason and "firewall.enabled" in reason
    task = asyncio.create_task(gate.run())
    await asyncio.sleep(0.05)
    assert listeners.calls == []
    fence.loaded, fence.error = True, None
    for _ in range(100):
        if gate.is_open:
            break
        await asyncio.sleep(0.01)
    assert gate.is_open and listeners.calls == ["open"] and gate.closed_reason() is None
    await gate.stop()
    await asyncio.wait_for(task, 1)
    assert listeners.calls == ["open", "close"]


async def test_a_failed_reload_with_the_old_table_in_place_keeps_serving() -> None:
    fence = FakeFence(loaded=True, error=None)
    gate, listeners = gate_for(fence)
    assert await gate.open_if_fenced()
    task = asyncio.create_task(gate.run())
    fence.loaded, fence.error, fence.present = False, "nft refused the ruleset", True
    await asyncio.sleep(0.1)
    assert gate.is_open and listeners.calls == ["open"]
    await gate.stop()
    await asyncio.wait_for(task, 1)


async def test_table_gone_and_not_loadable_stops_the_listeners() -> None:
    for present in (False, None):
        fence = FakeFence(loaded=True, error=None)
        gate, listeners = gate_for(fence)
        assert await gate.open_if_fenced()
        task = asyncio.create_task(gate.run())
        fence.loaded, fence.error, fence.present = False, "nft refused the ruleset", present
        await asyncio.wait_for(task, 1)  # run ends: a stopped proxy does not start again
        assert listeners.calls == ["open", "close"]
        reason = gate.closed_reason()
        assert reason is not None and "restart patrd" in reason and "refused" in reason
        await gate.stop()
        assert listeners.calls == ["open", "close"], "closed once"
