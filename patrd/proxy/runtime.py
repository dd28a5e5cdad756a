"""How the proxy runs: which event loop, how many worker processes (``[proxy]`` config).

Imports nothing heavy: the worker processes (``patrd/proxy/worker.py``) start
from here.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, TypeVar

__all__ = ["AUTO_WORKERS_MAX", "EventLoop", "ProxyRuntime", "loop_factory", "run_event_loop"]

T = TypeVar("T")

# "auto" workers: one per CPU this process may run on, at most this many.
AUTO_WORKERS_MAX: Final = 8


class EventLoop(StrEnum):
    UVLOOP = "uvloop"  # libuv in Cython: cheaper transports and TLS (scripts/bench/proxy)
    ASYNCIO = "asyncio"  # the standard library's loop


@dataclass(frozen=True, slots=True)
class ProxyRuntime:
    """``proxy.event_loop`` and ``proxy.workers``.

    ``workers``: ``None`` is "auto" (one per CPU, at most
    :data:`AUTO_WORKERS_MAX`); ``0`` runs the proxy inside the daemon process,
    on the daemon's loop; ``N`` ≥ 1 runs N worker processes sharing the
    listening ports (``SO_REUSEPORT``), fed by the daemon.
    """

    event_loop: EventLoop = EventLoop.UVLOOP
    workers: int | None = None

    def resolved_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        return max(1, min(AUTO_WORKERS_MAX, len(os.sched_getaffinity(0))))


def loop_factory(event_loop: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A new-loop function for ``event_loop`` (``uvloop`` or ``asyncio``)."""
    if event_loop == EventLoop.UVLOOP:
        import uvloop

        return uvloop.new_event_loop
    if event_loop == EventLoop.ASYNCIO:
        return asyncio.new_event_loop
    raise ValueError(f"unknown event loop {event_loop!r}")


def run_event_loop(main: Coroutine[Any, Any, T], event_loop: str) -> T:
    """``asyncio.run(main)`` on a loop of the kind ``event_loop`` names."""
    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        return runner.run(main)
