"""Keep the agent's fence (``table inet patrd_agent``) equal to this node's tasks: the I/O side.

:class:`NodeFenceKeeper` lists the published ports of this node's patrd task
containers, renders the table (:func:`patrd.firewall.node_fence.render`)
and, when the kernel does not hold exactly that, replaces it in one
``nft -f`` transaction (:class:`patrd.firewall.apply.Nft`, confined to this
table). ``run()`` checks every ``interval_s``: a task that starts is fenced
within one interval, a port that is gone leaves the set.

Without an allow list the keeper fences nothing; it deletes a table an
earlier, fencing run left (recognised by its comment) so the flag is the
whole truth. When the agent stops, the table stays: the ports stay fenced
(fail closed) until an agent starts again (docs/design.md says why).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from enum import StrEnum
from typing import Final, Protocol

import structlog

from patrd.engine.swarm_node import NodeDocker
from patrd.firewall.apply import FirewallError, Nft
from patrd.firewall.node_fence import (
    COMMENT_PREFIX,
    TABLE_FAMILY,
    TABLE_NAME,
    Network,
    NodeFence,
    render,
    rules_hash_of,
)
from patrd.model.errors import EngineError

__all__ = ["NodeFenceKeeper", "PortSource", "SyncResult", "TaskPorts", "fence_nft"]

INTERVAL_S: Final = 2.0


class SyncResult(StrEnum):
    UNCHANGED = "unchanged"
    APPLIED = "applied"
    REMOVED = "removed"  # no allow list: a table left from a fencing run was deleted
    DISABLED = "disabled"  # no allow list, nothing to delete


class PortSource(Protocol):
    async def published_ports(self) -> list[int]: ...


class TaskPorts:
    """``PortSource`` over this node's engine: its patrd task containers' published ports."""

    def __init__(self, docker: NodeDocker) -> None:
        self._docker = docker

    async def published_ports(self) -> list[int]:
        return sorted({p for task in await self._docker.tasks() for p in task.ports})


def fence_nft(command: Sequence[str] = ("nft",)) -> Nft:
    """``nft`` confined to ``table inet patrd_agent``."""
    return Nft(command, table=(TABLE_FAMILY, TABLE_NAME))


class NodeFenceKeeper:
    def __init__(
        self,
        allow: tuple[Network, ...],
        ports: PortSource,
        nft: Nft | None = None,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self._allow = allow
        self._ports_source = ports
        self._nft = nft if nft is not None else fence_nft()
        self._interval_s = interval_s
        self._ports: list[int] = []
        self._expected: str | None = None  # our listing of the table right after our load
        self._error: str | None = None
        self._log = structlog.get_logger("patrd.firewall.node_fence")

    @property
    def enabled(self) -> bool:
        return bool(self._allow)

    @property
    def ports(self) -> list[int]:
        """The published ports of the last check."""
        return list(self._ports)

    async def desired(self) -> str:
        try:
            self._ports = await self._ports_source.published_ports()
        except EngineError as exc:
            # Keep the last known ports: Docker being slow must not open them.
            self._log.debug("fence.ports_unavailable", error=str(exc))
        return render(NodeFence(allow=self._allow, ports=tuple(self._ports)))

    async def sync(self) -> SyncResult:
        """One check; loads or removes the table if needed. Raises FirewallError."""
        try:
            result = await self._sync()
        except FirewallError as exc:
            if str(exc) != self._error:
                self._log.error("fence.failed", error=str(exc))
            self._error = str(exc)
            raise
        if self._error is not None:
            self._log.info("fence.recovered")
        self._error = None
        return result

    async def _sync(self) -> SyncResult:
        if not self.enabled:
            return await self._remove_leftover()
        desired = await self.desired()
        listing = await self._nft.listing()
        if (
            listing is not None
            and rules_hash_of(listing) == rules_hash_of(desired)
            and (self._expected is None or listing == self._expected)
        ):
            self._expected = listing
            return SyncResult.UNCHANGED
        await self._nft.load(desired)
        self._expected = await self._nft.listing()
        self._log.info(
            "fence.applied",
            reason="missing" if listing is None else "changed",
            ports=",".join(map(str, self._ports)) or "none",
        )
        return SyncResult.APPLIED

    async def _remove_leftover(self) -> SyncResult:
        try:
            listing = await self._nft.listing()
        except FirewallError:
            return SyncResult.DISABLED  # no nft here: nothing was loaded either
        if listing is None or f'comment "{COMMENT_PREFIX}' not in listing:
            return SyncResult.DISABLED
        await self._nft.delete()
        self._log.info("fence.removed", reason="no --fence-allow")
        return SyncResult.REMOVED

    async def run(self) -> None:
        """Check every ``interval_s`` until cancelled (errors are logged, then retried)."""
        while True:
            with contextlib.suppress(FirewallError):
                await self.sync()
            if not self.enabled:
                return
            await asyncio.sleep(self._interval_s)
