"""Named long-running tasks, restarted with backoff when they crash, stopped in stages.

A task that returns normally is done; one that raises is logged and started
again after the ``Backoff`` delay (1, 2, 4 … 30 s by default). A task that ran
at least ``reset_after_s`` (60 s by default) before crashing was healthy: its
failure count starts over, so it restarts after the initial delay again.

``stop()`` walks the stages in order: it cancels the stage's tasks and waits
up to the stage's timeout; when the timeout passes it logs the names of the
tasks still running and goes on to the next stage. A second ``stop()`` while
(or after) the first runs is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from patrd.kit.backoff import Backoff, BackoffState

Factory = Callable[[], Awaitable[None]]

SUPERVISOR_BACKOFF = Backoff(initial_s=1.0, cap_s=30.0, reset_after_s=60.0)


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    timeout_s: float


DEFAULT_STAGES: tuple[Stage, ...] = (Stage("tasks", 10.0),)


class Supervisor:
    def __init__(
        self,
        stages: Sequence[Stage] = DEFAULT_STAGES,
        *,
        backoff: Backoff = SUPERVISOR_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not stages:
            raise ValueError("a supervisor needs at least one stage")
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError("stage names must be unique")
        self._stages = tuple(stages)
        self._backoff = backoff
        self._clock = clock
        self._rand = rand
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stage_of: dict[str, str] = {}
        self._stopping = False
        self._log = structlog.get_logger("patrd.daemon.supervisor")

    def start(self, name: str, factory: Factory, *, stage: str | None = None) -> None:
        """Run ``factory`` as task ``name``; it stops in ``stage`` (default: the first)."""
        stage_name = self._stages[0].name if stage is None else stage
        if stage_name not in {s.name for s in self._stages}:
            raise ValueError(f"unknown stage {stage_name!r} for task {name!r}")
        self._stage_of[name] = stage_name
        self._tasks[name] = asyncio.create_task(self._keep(name, factory), name=name)

    async def _keep(self, name: str, factory: Factory) -> None:
        state = BackoffState(self._backoff)
        while not self._stopping:
            state.started(self._clock())
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = state.failed(self._clock(), self._rand())
                self._log.exception(
                    "task_crashed", task=name, failures=state.failures, restart_in=delay
                )
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        if self._stopping:
            self._log.info("stop_already_requested")
            return
        self._stopping = True
        for stage in self._stages:
            tasks = [t for name, t in self._tasks.items() if self._stage_of[name] == stage.name]
            running = [t for t in tasks if not t.done()]
            for task in running:
                task.cancel()
            if not running:
                continue
            _, pending = await asyncio.wait(running, timeout=stage.timeout_s)
            if pending:
                self._log.error(
                    "stage_timed_out",
                    stage=stage.name,
                    timeout_s=stage.timeout_s,
                    still_running=sorted(t.get_name() for t in pending),
                )
            else:
                self._log.info("stage_stopped", stage=stage.name, tasks=len(running))
        left = sorted(t.get_name() for t in self._tasks.values() if not t.done())
        if left:
            self._log.error("tasks_would_not_stop", still_running=left)
        for task in self._tasks.values():
            if task.done():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    task.result()
        self._tasks.clear()
        self._stage_of.clear()
