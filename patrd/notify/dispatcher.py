"""Deliver notifications off the hot path: tail the event tables, queue, send with retries.

Controllers only ever write events (patrd/state/store.py); nothing they do waits on
a receiver. Two supervised tasks (patrd/daemon/compose.py):

* ``tail`` reads new deployment and node events every ``poll_interval_s``
  (from the newest id when ``prime`` ran: events written while the daemon was
  down are not notified), classifies them (``rules.classify``), redacts env and secret
  values, and queues one delivery per matching target;
* ``drain`` keeps one worker per target; each takes deliveries off its
  target's bounded queue and sends each in its own task (at most
  ``per_target`` at once), retrying with exponential backoff up to
  ``attempts`` times. A down or hanging receiver only ever holds its own
  queue and its own slots: other targets are never behind it.

A full queue drops its oldest delivery (``patrd_notify_dropped``); a delivery
given up on is counted (``patrd_notify_deliveries{result="failed"}``), logged
and written as a ``notify.failed`` node event (which is itself never notified).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import aiohttp
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from patrd.kit.backoff import Backoff
from patrd.model.errors import NotFound, PatrdError, StoreError
from patrd.model.spec import SecretRef
from patrd.notify import senders
from patrd.notify.rules import Notification, classify, matches, redact
from patrd.notify.targets import Target, parse_target
from patrd.state.crypto import SecretsKeyError
from patrd.state.store import Store
from patrd.state.vault import Vault

log = structlog.get_logger("patrd.notify")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5  # tries in all, the first included
    first_delay_s: float = 1.0
    max_delay_s: float = 60.0


def backoff_s(policy: RetryPolicy, failed_attempts: int) -> float:
    """The wait before the next try after ``failed_attempts`` ≥ 1 (1, 2, 4 … capped)."""
    return Backoff(initial_s=policy.first_delay_s, cap_s=policy.max_delay_s).delay(failed_attempts)


@dataclass(frozen=True, slots=True)
class DispatchOptions:
    queue_size: int = 256  # per target
    per_target: int = 4  # deliveries in flight (sending or backing off) per target
    poll_interval_s: float = 1.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    node: str = field(default_factory=socket.gethostname)


@dataclass(frozen=True, slots=True)
class Delivery:
    target: Target
    note: Notification


@dataclass
class NotifyStats:
    deliveries: Counter[tuple[str, str]] = field(default_factory=Counter)  # (target, result)
    retries: Counter[str] = field(default_factory=Counter)
    dropped: int = 0
    queued: int = 0
    in_flight: int = 0


class Dispatcher:
    def __init__(
        self,
        store: Store,
        configured: Iterable[Target],
        vault: Vault | None = None,
        options: DispatchOptions | None = None,
    ) -> None:
        self._store = store
        self._vault = vault
        self._options = options or DispatchOptions()
        self._configured = tuple(configured)
        self._runtime: tuple[Target, ...] = ()
        self._queues: dict[str, deque[Delivery]] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._new_queue = asyncio.Event()
        self._watermarks: tuple[int, int] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = NotifyStats()

    @property
    def store(self) -> Store:
        return self._store

    @property
    def node(self) -> str:
        return self._options.node

    # --- targets ------------------------------------------------------------

    def targets(self) -> list[Target]:
        return [*self._configured, *self._runtime]

    async def reload(self) -> None:
        """Read the runtime targets again (after ``/v1/notifications`` changed them)."""
        loaded = []
        for name, spec, _ in await self._store.list_notifications():
            try:
                loaded.append(parse_target(spec, source="api"))
            except PatrdError as exc:  # stored by an older patrd with other rules
                log.warning("notify.target_unreadable", target=name, error=str(exc))
        self._runtime = tuple(loaded)
        names = {t.name for t in self.targets()}
        for name, queue in self._queues.items():
            if name not in names:  # removed: what it had queued goes with it
                queue.clear()
        self._count_queued()

    # --- queueing -----------------------------------------------------------

    def submit(self, note: Notification, only: Target | None = None) -> int:
        """Queue ``note`` for every target whose filter takes it (or just ``only``)."""
        chosen = [only] if only is not None else self.targets()
        count = 0
        for target in chosen:
            if only is None and not matches(target.events, note.kind):
                continue
            queue = self._queues.get(target.name)
            if queue is None:
                queue = self._queues[target.name] = deque()
                self._ready[target.name] = asyncio.Event()
                self._new_queue.set()
            if len(queue) >= self._options.queue_size:
                dropped = queue.popleft()
                self.stats.dropped += 1
                log.warning("notify.dropped", target=target.name, kind=dropped.note.kind)
            queue.append(Delivery(target, note))
            self._ready[target.name].set()
            count += 1
        self._count_queued()
        return count

    def _count_queued(self) -> None:
        self.stats.queued = sum(len(q) for q in self._queues.values())

    # --- the two supervised tasks ---------------------------------------------

    async def prime(self) -> None:
        """Load the runtime targets and start from the newest events.

        The daemon awaits this before it starts anything that writes events
        (the node watcher's first reading may write one at once).
        """
        await self.reload()
        if self._watermarks is None:
            self._watermarks = (
                await self._store.last_event_id(),
                await self._store.last_node_event_id(),
            )

    async def tail(self) -> None:
        """Turn new events into queued deliveries, forever."""
        await self.prime()
        while True:
            try:
                await self.poll_once()
            except StoreError as exc:  # busy or full: the next poll reads the same events
                log.warning("notify.poll_failed", error=str(exc))
            await asyncio.sleep(self._options.poll_interval_s)

    async def poll_once(self) -> None:
        if self._watermarks is None:
            await self.prime()
        assert self._watermarks is not None
        deployments_after, node_after = self._watermarks
        for event, name in await self._store.events_after(deployments_after):
            deployments_after = event.id
            kind = classify(event.kind, event.message)
            if kind is not None and self._wanted(kind):
                message = redact(event.message, await self._sensitive(name))
                self.submit(
                    Notification(
                        id=f"d{event.id}",
                        kind=kind,
                        event=event.kind,
                        message=message,
                        at=event.at,
                        node=self._options.node,
                        deployment=name,
                        revision=event.revision,
                    )
                )
            self._watermarks = (deployments_after, node_after)
        for node_event in await self._store.node_events(after_id=node_after, limit=500):
            node_after = node_event.id
            kind = classify(node_event.kind, node_event.message)
            if kind is not None:
                self.submit(
                    Notification(
                        id=f"n{node_event.id}",
                        kind=kind,
                        event=node_event.kind,
                        message=node_event.message,
                        at=node_event.at,
                        node=self._options.node,
                    )
                )
            self._watermarks = (deployments_after, node_after)

    async def drain(self) -> None:
        """One worker per target with deliveries (started as targets appear)."""
        workers: dict[str, asyncio.Task[None]] = {}
        async with aiohttp.ClientSession() as session:
            try:
                while True:
                    self._new_queue.clear()
                    for name in list(self._queues):
                        if name not in workers or workers[name].done():
                            workers[name] = asyncio.create_task(
                                self._worker(name, session), name=f"notify-{name}"
                            )
                    await self._new_queue.wait()
            finally:
                for task in [*workers.values(), *self._tasks]:
                    task.cancel()
                await asyncio.gather(*workers.values(), *self._tasks, return_exceptions=True)

    async def _worker(self, name: str, session: aiohttp.ClientSession) -> None:
        """Send ``name``'s deliveries, each in its own task, ``per_target`` at most at once."""
        queue, ready = self._queues[name], self._ready[name]
        slots = asyncio.Semaphore(self._options.per_target)
        while True:
            await ready.wait()
            ready.clear()
            while queue:
                await slots.acquire()
                if not queue:  # dropped meanwhile
                    slots.release()
                    break
                delivery = queue.popleft()
                self._count_queued()
                task = asyncio.create_task(self._deliver(delivery, session, slots))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    # --- one delivery -----------------------------------------------------------

    async def _deliver(
        self, delivery: Delivery, session: aiohttp.ClientSession, limit: asyncio.Semaphore
    ) -> None:
        target, note = delivery.target, delivery.note
        policy = self._options.retry
        self.stats.in_flight += 1
        error = "not tried"
        attempt = 0
        try:
            for attempt in range(1, policy.attempts + 1):
                started = time.monotonic()
                try:
                    await senders.send(target, note, session, self._vault)
                except Exception as exc:
                    failure = exc if isinstance(exc, senders.DeliveryError) else None
                    if failure is None:  # a bug: give up on this delivery, do not loop
                        log.exception("notify.sender_crashed", target=target.name)
                        failure = senders.DeliveryError(f"internal error: {exc!r}", retry=False)
                    error = str(failure)
                    log.info(
                        "notify.attempt_failed",
                        target=target.name,
                        kind=note.kind,
                        attempt=attempt,
                        error=error,
                        retry=failure.retry,
                    )
                    if not failure.retry or attempt == policy.attempts:
                        break
                    self.stats.retries[target.name] += 1
                    await asyncio.sleep(backoff_s(policy, attempt))
                    continue
                self.stats.deliveries[(target.name, "sent")] += 1
                log.info(
                    "notify.sent",
                    target=target.name,
                    kind=note.kind,
                    id=note.id,
                    took_ms=round((time.monotonic() - started) * 1000, 1),
                )
                return
            self.stats.deliveries[(target.name, "failed")] += 1
            log.warning("notify.gave_up", target=target.name, kind=note.kind, error=error)
            await self._node_event(
                "notify.failed",
                f"notification {note.kind} ({note.id}) to {target.name} failed after "
                f"{attempt} attempt(s): {error}",
            )
        finally:
            self.stats.in_flight -= 1
            limit.release()

    # --- helpers ----------------------------------------------------------------

    def _wanted(self, kind: str) -> bool:
        return any(matches(t.events, kind) for t in self.targets())

    async def _sensitive(self, deployment: str) -> list[str]:
        """Env and secret values of ``deployment``: never in a notification."""
        try:
            record = await self._store.get_deployment(deployment)
        except (NotFound, StoreError):
            return []
        values = [v for _, v in record.spec.env if not isinstance(v, SecretRef)]
        if self._vault is not None:
            with contextlib.suppress(SecretsKeyError, StoreError):
                values.extend((await self._vault.env_values(record.spec)).values())
        return values

    async def _node_event(self, kind: str, message: str) -> None:
        try:
            await self._store.add_node_event(kind, message)
        except StoreError as exc:
            log.warning("notify.event_not_recorded", kind=kind, error=str(exc))


class NotifyCollector(Collector):
    """``patrd_notify_*`` for ``GET /metrics`` (registered beside PatrdCollector)."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._d = dispatcher

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        stats = self._d.stats
        deliveries = CounterMetricFamily(
            "patrd_notify_deliveries",
            "notifications sent or given up on, by target",
            labels=["target", "result"],
        )
        for (target, result), n in sorted(stats.deliveries.items()):
            deliveries.add_metric([target, result], n)
        yield deliveries
        retries = CounterMetricFamily(
            "patrd_notify_retries", "delivery attempts retried, by target", labels=["target"]
        )
        for target, n in sorted(stats.retries.items()):
            retries.add_metric([target], n)
        yield retries
        yield CounterMetricFamily(
            "patrd_notify_dropped", "deliveries dropped from a full queue", value=stats.dropped
        )
        yield GaugeMetricFamily(
            "patrd_notify_queued", "deliveries waiting in the queue", value=stats.queued
        )
        yield GaugeMetricFamily(
            "patrd_notify_in_flight", "deliveries being sent or retried", value=stats.in_flight
        )
