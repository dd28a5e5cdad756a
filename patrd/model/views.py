"""Read models the controller hands to the API: plain data, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class InstanceView:
    name: str  # e.g. "web-0" (deployment name + slot)
    container_id: str
    revision: int
    slot: int
    state: str  # Docker's container state: created, running, exited, ...
    ready: bool  # in the proxy pool
    address: str | None  # container IP on the deployment's network
    restarts: int  # restarts patrd made for this slot since the daemon started
    current: bool = True  # built from the target revision's template (False: being replaced)
    probe: str = ""  # starting | ready | failed | unhealthy ("" before the first check)
    probe_detail: str = ""  # last probe result: "200", "connection refused", …
    liveness_failures: int = 0  # consecutive
    waiting_for: str = ""  # the node holding its volume data that it waits for (Swarm)


class ControllerView(Protocol):
    """What the API may ask of the reconciler: wake it, and read what it sees."""

    def wake(self, deployment_id: str | None = None) -> None: ...

    def instances(self, deployment_id: str) -> list[InstanceView]: ...

    async def volume_usage(self, deployment: str) -> dict[str, tuple[int, int]]:
        """Docker volume name → (instance slot, bytes used)."""
        ...
