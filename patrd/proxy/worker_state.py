"""The daemon's view of its proxy worker processes: one record per worker, their counters.

:class:`WorkerState` is what :class:`~patrd.proxy.workers.ProxyWorkers` knows
of one worker: its process, its control channel, and its last report
(:func:`apply_report`). :class:`Tally` sums the reports of the live workers
with the counters of the workers that are gone, so that counters never go
back when a worker dies and is replaced.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from patrd.proxy import wire
from patrd.proxy.server import TIMEOUT_KINDS
from patrd.proxy.stats import DeploymentCounters

__all__ = ["Tally", "WorkerState", "apply_report"]


@dataclass(eq=False)
class WorkerState:
    index: int
    sockets: list[tuple[str, socket.socket]]  # scheme, the daemon's copy of its listener
    proc: subprocess.Popen[bytes] | None = None
    writer: asyncio.StreamWriter | None = None
    live: bool = False  # a process runs and its control channel is open
    pid: int = 0
    started_at: float = 0.0
    heard_at: float = 0.0  # monotonic time of its last message
    table_version: int = -1  # the newest table this worker reported having
    outstanding: dict[tuple[str, int], int] = field(default_factory=dict)
    stats: dict[str, DeploymentCounters] = field(default_factory=dict)
    active: int = 0
    limited: int = 0
    refused: int = 0
    timeouts: dict[str, int] = field(default_factory=dict)
    acks: dict[str, int] = field(default_factory=dict)  # what → newest version acknowledged
    ready: asyncio.Future[None] | None = None
    supervisor: asyncio.Task[None] | None = None

    def send(self, frame: bytes) -> None:
        if self.live and self.writer is not None and not self.writer.is_closing():
            self.writer.write(frame)


def apply_report(w: WorkerState, message: dict[str, Any]) -> int | None:
    """Take in a worker's ``report`` message; its ``seq`` if it answers a request."""
    w.table_version = message["table_version"]
    w.outstanding = {(h, p): n for h, p, n in message["outstanding"]}
    w.active = message["active"]
    w.limited = message["limited"]
    w.refused = message["refused"]
    w.timeouts = message.get("timeouts", {})
    stats = message.get("stats")
    if stats is not None:
        w.stats = {name: wire.counters_from(c) for name, c in stats.items()}
    seq = message.get("seq")
    return int(seq) if seq is not None else None


class Tally:
    """The counters of every worker, gone ones included."""

    def __init__(self) -> None:
        # Counters of worker processes that are gone (counters never go back).
        self._stats: dict[str, DeploymentCounters] = {}
        self._limited = 0
        self._refused = 0
        self._timeouts: dict[str, int] = {}

    def retire(self, w: WorkerState) -> None:
        """``w``'s process is gone: keep its counters, forget its load."""
        for name, counters in w.stats.items():
            into = self._stats.get(name)
            if into is None:
                into = self._stats[name] = DeploymentCounters()
            add_counters(into, counters)
        self._limited += w.limited
        self._refused += w.refused
        for kind, n in w.timeouts.items():
            self._timeouts[kind] = self._timeouts.get(kind, 0) + n
        w.timeouts = {}
        w.stats = {}
        w.outstanding = {}
        w.active = w.limited = w.refused = 0
        w.acks = {}

    def deployment_stats(self, workers: Iterable[WorkerState]) -> dict[str, DeploymentCounters]:
        total: dict[str, DeploymentCounters] = {}
        for source in (self._stats, *(w.stats for w in workers)):
            for name, counters in source.items():
                into = total.get(name)
                if into is None:
                    into = total[name] = DeploymentCounters()
                add_counters(into, counters)
        return total

    def limited(self, workers: Iterable[WorkerState]) -> int:
        return self._limited + sum(w.limited for w in workers)

    def refused(self, workers: Iterable[WorkerState]) -> int:
        return self._refused + sum(w.refused for w in workers)

    def timeouts(self, workers: Iterable[WorkerState]) -> dict[str, int]:
        """Timeouts after the head that fired, by kind (server.TIMEOUT_KINDS)."""
        total = dict.fromkeys(TIMEOUT_KINDS, 0)
        for source in (self._timeouts, *(w.timeouts for w in workers)):
            for kind, n in source.items():
                total[kind] = total.get(kind, 0) + n
        return total


def add_counters(into: DeploymentCounters, c: DeploymentCounters) -> None:
    for i, v in enumerate(c.classes):
        into.classes[i] += v
    for i, v in enumerate(c.buckets):
        into.buckets[i] += v
    into.count += c.count
    into.latency_sum += c.latency_sum
