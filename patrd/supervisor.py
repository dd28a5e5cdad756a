"""Named long-running tasks, restarted with backoff when they crash.

A task that returns normally is done; one that raises is logged and started
again after 1, 2, 4 … 30 s. ``stop()`` cancels them all and waits, bounded,
naming any task that would not stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

Factory = Callable[[], Awaitable[None]]


class Supervisor:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._log = structlog.get_logger("patrd.supervisor")

    def start(self, name: str, factory: Factory) -> None:
        self._tasks[name] = asyncio.create_task(self._keep(name, factory), name=name)

    async def _keep(self, name: str, factory: Factory) -> None:
        delay = 1.0
        while not self._stopping:
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception("task_crashed", task=name, restart_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def stop(self, within_s: float = 10.0) -> None:
        self._stopping = True
        for task in self._tasks.values():
            task.cancel()
        _, pending = await asyncio.wait(self._tasks.values(), timeout=within_s)
        for task in pending:
            self._log.error("task_would_not_stop", task=task.get_name())
        for task in self._tasks.values():
            if task.done():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    task.result()
        self._tasks.clear()
