"""Load patrd's nftables table and keep it loaded: the thin, I/O side of ``firewall.py``.

* :class:`Nft` runs the ``nft`` program. The whole table goes in as one
  ``nft -f -`` batch (see :func:`patrd.firewall.rules.transaction`): the kernel
  commits it atomically or not at all. pyroute2 could add tables and rules
  over netlink, but each call is its own batch (no atomic replacement), and
  sets with timeouts and meters need hand-built messages (NOTES.md); the
  ``nft`` program is Debian's ``nftables`` package, which the firewall needs
  anyway. Only the table it was given is ever named (``table inet patrd``,
  or the swarm agent's ``table inet patrd_agent``): nothing here lists,
  flushes or deletes any other table.
* :class:`FirewallKeeper` renders the table from the config and the
  deployments' bridges, compares it with what the kernel holds and loads it
  when it is missing, different, or was edited by hand. ``run()`` does that
  every ``firewall.check_interval_s`` (and when woken), so a flushed ruleset,
  an ``nftables.service`` restart or a Docker restart is repaired within one
  interval. A check that finds the right table changes nothing: counters and
  limiter state survive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Protocol

import structlog

from patrd.engine.protocol import Engine
from patrd.firewall.rules import (
    COMMENT_PREFIX,
    TABLE_FAMILY,
    TABLE_NAME,
    HostConfig,
    hash_of,
    render,
    rules_from_config,
    transaction,
)
from patrd.model.errors import EngineError, PatrdError

__all__ = [
    "Counter",
    "EngineBridges",
    "FirewallError",
    "FirewallKeeper",
    "FirewallStatus",
    "Nft",
    "SyncResult",
]

NFT_TIMEOUT_S: Final = 15.0


class FirewallError(PatrdError):
    """``nft`` is missing, refused the ruleset, or did not answer."""


class BridgeSource(Protocol):
    """Where the keeper learns the deployments' bridges."""

    async def list_bridges(self) -> list[str]: ...


class EngineBridges:
    """``BridgeSource`` over the engine: the bridges of patrd's deployment networks."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def list_bridges(self) -> list[str]:
        return [n.bridge for n in await self._engine.list_networks() if n.bridge]


@dataclass(frozen=True, slots=True)
class Counter:
    packets: int = 0
    bytes: int = 0

    def __add__(self, other: Counter) -> Counter:
        return Counter(self.packets + other.packets, self.bytes + other.bytes)


class Nft:
    """The ``nft`` command, confined to one table: ``table inet patrd`` unless
    ``table`` names another (family, name), e.g. the agent's fence.

    ``command`` is the argv prefix: ``("nft",)`` in production; tests use
    ``("ip", "netns", "exec", NS, "nft")`` to work inside their namespace.
    """

    def __init__(
        self,
        command: Sequence[str] = ("nft",),
        timeout_s: float = NFT_TIMEOUT_S,
        table: tuple[str, str] = (TABLE_FAMILY, TABLE_NAME),
    ) -> None:
        self.command = tuple(command)
        self._timeout_s = timeout_s
        self.family, self.name = table

    async def load(self, text: str) -> None:
        """Replace the table by ``text`` (a rendered table) in one transaction."""
        rc, _, err = await self._run(
            "-f", "-", stdin=transaction(text, f"{self.family} {self.name}")
        )
        if rc != 0:
            raise FirewallError(f"nft refused the ruleset: {_first_lines(err)}")

    async def check(self, text: str) -> None:
        """Let nft parse and validate ``text`` without committing it (``nft -c``)."""
        rc, _, err = await self._run(
            "-c", "-f", "-", stdin=transaction(text, f"{self.family} {self.name}")
        )
        if rc != 0:
            raise FirewallError(f"nft rejects the ruleset: {_first_lines(err)}")

    async def listing(self) -> str | None:
        """``nft -s -t list table inet patrd``: no counter values, no set elements.

        None if the table is absent.
        """
        rc, out, err = await self._run("-s", "-t", "list", "table", self.family, self.name)
        if rc == 0:
            return out
        if _missing(err):
            return None
        raise FirewallError(f"nft list table failed: {_first_lines(err)}")

    async def counters(self) -> dict[str, Counter]:
        """The named counters of the table ({} if the table is absent)."""
        rc, out, err = await self._run("-j", "list", "counters", "table", self.family, self.name)
        if rc != 0:
            if _missing(err):
                return {}
            raise FirewallError(f"nft list counters failed: {_first_lines(err)}")
        return parse_counters(out, self.name)

    async def delete(self) -> bool:
        """Delete the table; False if there was none."""
        rc, _, err = await self._run("delete", "table", self.family, self.name)
        if rc == 0:
            return True
        if _missing(err):
            return False
        raise FirewallError(f"nft delete table failed: {_first_lines(err)}")

    async def _run(self, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
        argv = [*self.command, *args]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError:
            raise FirewallError(
                f"{argv[0]} not found: install Debian's nftables package (scripts/setup does)"
            ) from None
        except OSError as exc:
            raise FirewallError(f"cannot run {argv[0]}: {exc}") from exc
        try:
            async with asyncio.timeout(self._timeout_s):
                out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise FirewallError(
                f"{' '.join(argv)} did not finish in {self._timeout_s:g}s"
            ) from None
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def parse_counters(text: str, table: str = TABLE_NAME) -> dict[str, Counter]:
    """``nft -j list counters …`` output → {name: Counter}."""
    try:
        items = json.loads(text).get("nftables", [])
    except (ValueError, AttributeError) as exc:
        raise FirewallError(f"nft printed unexpected JSON: {exc}") from exc
    counters: dict[str, Counter] = {}
    for item in items:
        c = item.get("counter") if isinstance(item, dict) else None
        if isinstance(c, dict) and c.get("table") == table and "name" in c:
            counters[str(c["name"])] = Counter(int(c.get("packets", 0)), int(c.get("bytes", 0)))
    return counters


def _missing(err: str) -> bool:
    return "No such file or directory" in err or "does not exist" in err


def _first_lines(text: str, n: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[:n]) or "no error text"


# --- the keeper ----------------------------------------------------------------


class SyncResult(StrEnum):
    UNCHANGED = "unchanged"  # the kernel holds the table we would load
    APPLIED = "applied"  # loaded (missing, changed or edited by hand)
    REMOVED = "removed"  # disabled in the config: a table left from before was deleted
    DISABLED = "disabled"  # disabled, nothing to do


@dataclass(frozen=True, slots=True)
class FirewallStatus:
    """What ``GET /v1/firewall`` shows."""

    enabled: bool
    applied: bool  # the kernel holds exactly ``ruleset``
    ruleset: str  # what patrd loads (a dry run when disabled)
    counters: dict[str, Counter] = field(default_factory=dict)
    error: str | None = None
    applied_at: float | None = None  # unix time of the last load
    loads: int = 0  # loads since the daemon started


class FirewallKeeper:
    """Keeps ``table inet patrd`` equal to what the config and the bridges say."""

    def __init__(
        self,
        config: HostConfig,
        bridges: BridgeSource,
        nft: Nft | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._bridges_source = bridges
        self._nft = nft if nft is not None else Nft()
        self._clock = clock
        self._log = structlog.get_logger("patrd.firewall.rules")
        self._bridges: list[str] = []
        self._expected: str | None = None  # our listing of the table right after our load
        self._carried: dict[str, Counter] = {}  # counters of tables we replaced
        self._error: str | None = None
        self._applied_at: float | None = None
        self._loads = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self._config.firewall.enabled

    @property
    def loaded(self) -> bool:
        """The last check loaded our table or found it as wanted (patrd/firewall/fence_gate.py)."""
        return self.enabled and self._error is None and self._expected is not None

    @property
    def error(self) -> str | None:
        return self._error

    async def table_present(self) -> bool:
        """Is ``table inet patrd`` in the kernel at all (maybe not the wanted one)?"""
        return await self._nft.listing() is not None

    def wake(self) -> None:
        """Check now instead of at the next interval (e.g. a network was created)."""
        self._wake.set()

    async def desired(self) -> str:
        """The table text for the current config and bridges (refreshed from the engine)."""
        try:
            self._bridges = sorted(set(await self._bridges_source.list_bridges()))
        except EngineError as exc:
            # Keep the last known bridges: Docker being down must not drop rules.
            self._log.debug("firewall.bridges_unavailable", error=str(exc))
        return render(rules_from_config(self._config, self._bridges))

    async def sync(self) -> SyncResult:
        """One check; loads the table if needed. Raises FirewallError."""
        async with self._lock:
            try:
                result = await self._sync()
            except FirewallError as exc:
                if str(exc) != self._error:
                    self._log.error("firewall.failed", error=str(exc))
                self._error = str(exc)
                raise
            self._error = None
            return result

    async def _sync(self) -> SyncResult:
        nft = self._nft
        if not self.enabled:
            return await self._remove_leftover()
        desired = await self.desired()
        listing = await nft.listing()
        if (
            listing is not None
            and hash_of(listing) == hash_of(desired)
            and (self._expected is None or listing == self._expected)
        ):
            self._expected = listing  # unchanged, or adopted after a daemon restart
            return SyncResult.UNCHANGED
        reason = (
            "missing"
            if listing is None
            else "changed"
            if hash_of(listing) != hash_of(desired)
            else "edited"
        )
        if listing is not None:
            with contextlib.suppress(FirewallError):
                for name, value in (await nft.counters()).items():
                    self._carried[name] = self._carried.get(name, Counter()) + value
        await nft.load(desired)
        self._expected = await nft.listing()
        self._applied_at = self._clock()
        self._loads += 1
        self._log.info(
            "firewall.applied", reason=reason, rules=hash_of(desired), bridges=len(self._bridges)
        )
        return SyncResult.APPLIED

    async def _remove_leftover(self) -> SyncResult:
        """Disabled: delete a table an earlier, enabled run left behind (ours only)."""
        try:
            listing = await self._nft.listing()
        except FirewallError:
            return SyncResult.DISABLED  # no nft here: nothing can be loaded either
        if listing is None or f'comment "{COMMENT_PREFIX}' not in listing:
            return SyncResult.DISABLED
        await self._nft.delete()
        self._log.info("firewall.removed", reason="firewall.enabled is false")
        return SyncResult.REMOVED

    async def run(self) -> None:
        """Check every ``firewall.check_interval_s`` until cancelled."""
        interval = self._config.firewall.check_interval_s
        while True:
            with contextlib.suppress(FirewallError):
                await self.sync()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()

    async def status(self) -> FirewallStatus:
        """A consistent snapshot: waits for a check in progress to finish."""
        async with self._lock:
            return await self._status()

    async def _status(self) -> FirewallStatus:
        ruleset = await self.desired()
        if not self.enabled:
            return FirewallStatus(enabled=False, applied=False, ruleset=ruleset)
        error = self._error
        counters: dict[str, Counter] = {}
        applied = False
        try:
            listing = await self._nft.listing()
            applied = (
                listing is not None
                and hash_of(listing) == hash_of(ruleset)
                and (self._expected is None or listing == self._expected)
            )
            current = await self._nft.counters()
            for name in sorted(set(current) | set(self._carried)):
                counters[name] = self._carried.get(name, Counter()) + current.get(name, Counter())
        except FirewallError as exc:
            error = str(exc)
        return FirewallStatus(
            enabled=True,
            applied=applied,
            ruleset=ruleset,
            counters=counters,
            error=error,
            applied_at=self._applied_at,
            loads=self._loads,
        )
