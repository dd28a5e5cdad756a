"""The firewall fails closed: proxy listeners are open only while the host is fenced.

With ``firewall.enabled``, patrd opens its HTTP/HTTPS listeners once its nft
table is loaded. While it cannot be (no ``nft``, a ruleset the kernel
refuses), the listeners stay closed, the API stays up and says why
(``GET /v1/health``, ``GET /v1/firewall``, ``patrctl firewall show``); they
open as soon as a later check loads the table. If the table disappears and
cannot be loaded again while the listeners are open, they are stopped (a
stopped proxy does not start again: restart patrd once the firewall loads).
With the firewall disabled the gate opens at once and never closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from patrd.model.errors import PatrdError

POLL_S = 1.0


class Fence(Protocol):
    """What the gate asks of the firewall keeper (patrd/firewall/apply.py)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def loaded(self) -> bool: ...  # the last check loaded or found our table

    @property
    def error(self) -> str | None: ...  # the last check's error

    async def table_present(self) -> bool: ...


class ProxyGate:
    def __init__(
        self,
        fence: Fence,
        open_listeners: Callable[[], Awaitable[None]],
        close_listeners: Callable[[], Awaitable[None]],
        poll_s: float = POLL_S,
    ) -> None:
        self._fence = fence
        self._open = open_listeners
        self._close = close_listeners
        self._poll_s = poll_s
        self._lock = asyncio.Lock()
        self._opened = False
        self._finished = False  # stopped (daemon stopping, or closed by the firewall)
        self._reason: str | None = None
        self._log = structlog.get_logger("patrd.fence")

    @property
    def is_open(self) -> bool:
        return self._opened and not self._finished

    def closed_reason(self) -> str | None:
        """Why the proxy listeners are closed; None while they are open (or opening)."""
        return None if self.is_open else self._reason

    async def open_if_fenced(self) -> bool:
        """At start: open now if the firewall is off or loaded; else say why and wait."""
        async with self._lock:
            return await self._try_open()

    async def _try_open(self) -> bool:
        if self._opened or self._finished:
            return self.is_open
        fence = self._fence
        if fence.enabled and not fence.loaded:
            reason = (
                "proxy listeners closed: firewall.enabled but the nft ruleset is not loaded: "
                f"{fence.error or 'not checked yet'}"
            )
            if reason != self._reason:
                self._log.error("proxy_closed", reason=reason)
            self._reason = reason
            return False
        await self._open()
        self._opened = True
        if self._reason is not None:
            self._log.info("proxy_opened", note="the firewall is loaded")
        self._reason = None
        return True

    async def run(self) -> None:
        """Supervised: open when the firewall loads; close if it is gone for good."""
        while not self._finished:
            await asyncio.sleep(self._poll_s)
            async with self._lock:
                if self._finished:
                    return
                if not self._opened:
                    await self._try_open()
                elif self._fence.enabled and not self._fence.loaded:
                    await self._close_if_unfenced()

    async def _close_if_unfenced(self) -> None:
        """The last check failed: stop the listeners only if our table is really gone."""
        try:
            present = await self._fence.table_present()
        except PatrdError:  # no answer from nft: assume unfenced
            present = False
        if present:
            return  # the previous ruleset still fences the host; the keeper retries
        self._reason = (
            "proxy listeners stopped: the firewall table is gone and cannot be loaded: "
            f"{self._fence.error}; restart patrd once it loads"
        )
        self._log.error("proxy_stopped", reason=self._reason)
        self._finished = True
        await self._close()

    async def stop(self) -> None:
        """The daemon is stopping: close the listeners if they were opened."""
        async with self._lock:
            was_open = self.is_open
            self._finished = True
            if self._reason is None:
                self._reason = "patrd is stopping"
        if was_open:
            await self._close()
