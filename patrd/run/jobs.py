"""Scheduled jobs: a deployment's ``jobs`` run as one-offs (patrd/run/oneoff.py) on schedule.

* :func:`decide` is the whole scheduling decision, pure, with the clock as
  input: given a job's schedule, the time it is due next (or None when not
  yet computed), the start of its last run and whether a run is still going,
  it says whether to start one now, whether a due time is skipped (the
  previous run is still going: never two runs of one job at once) and when
  it is due next. Missed times (the daemon was down) are not caught up: one
  run at most, then the next time after now.
* :class:`JobScheduler` is the thin executor: a supervised loop that looks at
  every running deployment's jobs once a second, starts due runs, records
  each run (start, end, exit code, outcome, the newest ``LOG_BYTES_KEPT``
  bytes of output) and writes ``job.ok`` / ``job.failed`` into the
  deployment's events (the notification dispatcher reads them).
* Only deployments whose intent is ``run`` have their jobs scheduled;
  ``run-now`` works for any deployment that is not being deleted.
* At start, runs a previous daemon left are adopted when their container is
  still there (attended to their end), else recorded ``interrupted``; then
  the one-off sweeper starts (inside this task, so it never races adoption).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

import structlog

from patrd.model import cron
from patrd.model.deployment import DeploymentRecord, Intent
from patrd.model.errors import Conflict, NotFound, PatrdError
from patrd.model.instances import OneOff
from patrd.model.records import JobRunRecord
from patrd.model.spec import JobSpec
from patrd.observe.logs import format_ts
from patrd.run.oneoff import OneOffRunner, RunRequest
from patrd.state.store import Store

TICK_S = 1.0  # how often the deployments and their jobs are looked at
LOG_BYTES_KEPT = 64 * 1024  # per run: the newest output
Key = tuple[str, str]  # (deployment id, job name)


@dataclass(frozen=True, slots=True)
class Tick:
    fire: bool  # start a run now
    skipped: bool  # it was due, but the previous run is still going
    next_at: datetime


def decide(
    schedule: cron.Schedule,
    tz: tzinfo,
    *,
    now: datetime,
    next_at: datetime | None,
    last_start: datetime | None,
    running: bool,
) -> Tick:
    """Pure: what to do about one job at ``now`` (aware datetimes throughout)."""
    if next_at is None:
        if isinstance(schedule, cron.Every) and last_start is not None:
            next_at = cron.next_after(schedule, last_start, tz)  # the interval survives restarts
        else:
            return Tick(False, False, cron.next_after(schedule, now, tz))
    if now < next_at:
        return Tick(False, False, next_at)
    return Tick(not running, running, cron.next_after(schedule, now, tz))


class LogBuffer:
    """The newest ``limit`` bytes of a run's output, as JSON lines like instance logs."""

    def __init__(self, limit: int = LOG_BYTES_KEPT) -> None:
        self._limit = limit
        self._lines: deque[str] = deque()
        self._size = 0
        self.dropped = 0

    async def add(self, stream: str, ts_ns: int, line: bytes) -> None:
        text = line.rstrip(b"\r\n").decode("utf-8", "replace")
        item = json.dumps(
            {"t": format_ts(ts_ns), "stream": stream, "line": text}, ensure_ascii=False
        )
        self._lines.append(item)
        self._size += len(item) + 1
        while self._size > self._limit and len(self._lines) > 1:
            self._size -= len(self._lines.popleft()) + 1
            self.dropped += 1

    def text(self) -> str:
        return "\n".join(self._lines)


@dataclass(frozen=True, slots=True)
class JobView:
    job: JobSpec
    next_at: datetime | None
    running: bool
    last: JobRunRecord | None


class JobScheduler:
    def __init__(
        self, store: Store, runner: OneOffRunner, tz: tzinfo, tick_s: float = TICK_S
    ) -> None:
        self._store = store
        self._runner = runner
        self._tz = tz
        self._tick_s = tick_s
        self._next: dict[Key, tuple[str, datetime]] = {}  # → (schedule text, due)
        self._running: dict[Key, asyncio.Task[None] | None] = {}  # None: starting
        self._log = structlog.get_logger("patrd.run.jobs")

    @property
    def tz(self) -> tzinfo:
        return self._tz

    async def run(self) -> None:
        """Adopt the runs a previous daemon left, then sweep one-offs and schedule."""
        try:
            await self._adopt()
            async with asyncio.TaskGroup() as tg:
                # After adoption: the sweeper removes only what nobody attends.
                tg.create_task(self._runner.run_sweeper(), name="oneoff-sweep")
                tg.create_task(self._schedule(), name="job-ticks")
        finally:
            tasks = [t for t in self._running.values() if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _schedule(self) -> None:
        while True:
            try:
                await self._tick()
            except PatrdError as exc:
                self._log.warning("jobs_tick_failed", error=str(exc))
            await asyncio.sleep(self._tick_s)

    async def _adopt(self) -> None:
        """A run whose container outlived the daemon is attended to its end (with the rest
        of its timeout); one whose container is gone is recorded ``interrupted``."""
        left = await self._store.running_job_runs()
        if not left:
            return
        containers = {o.run: o for o in await self._runner.list_oneoffs()}
        for run in left:
            record = await self._store.get_by_id(run.deployment_id)
            container = containers.get(f"job-{run.id}")
            if record is None or container is None or record.intent is Intent.DELETE:
                why = "the daemon stopped during the run and its container is gone"
                await self._finish(run, None, "interrupted", why, LogBuffer())
                self._log.warning("job_run_interrupted", job=run.job, run=run.id)
                continue
            job = next((j for j in record.spec.jobs if j.name == run.job), None)
            if job is None:  # removed from the spec meanwhile: the default bounds it
                job = JobSpec(run.job, "@yearly", ())
            remaining = max(0.0, run.started_at + job.timeout_s - time.time())
            key = (record.id, run.job)
            task = asyncio.create_task(
                self._execute(record, job, run, adopt=(container, remaining)),
                name=f"job-{run.id}",
            )
            self._running[key] = task
            task.add_done_callback(functools.partial(self._done, key))
            self._log.info("job_run_adopted", deployment=record.name, job=run.job, run=run.id)

    async def _tick(self) -> None:
        now = datetime.now(UTC)
        seen: set[Key] = set()
        for record in await self._store.list_deployments():
            if record.intent is not Intent.RUN or not record.spec.jobs:
                continue
            last_runs: dict[str, JobRunRecord] | None = None
            for job in record.spec.jobs:
                key = (record.id, job.name)
                seen.add(key)
                known = self._next.get(key)
                next_at = known[1] if known is not None and known[0] == job.schedule else None
                last_start = None
                if next_at is None:
                    if last_runs is None:
                        last_runs = await self._store.last_job_runs(record.id)
                    last = last_runs.get(job.name)
                    last_start = datetime.fromtimestamp(last.started_at, UTC) if last else None
                tick = decide(
                    cron.parse(job.schedule),
                    self._tz,
                    now=now,
                    next_at=next_at,
                    last_start=last_start,
                    running=key in self._running,
                )
                self._next[key] = (job.schedule, tick.next_at)
                if tick.skipped:
                    self._log.info("job_skipped", deployment=record.name, job=job.name)
                if tick.fire:
                    await self._start(record, job, "schedule")
        for key in [k for k in self._next if k not in seen]:
            del self._next[key]

    async def run_now(self, record: DeploymentRecord, name: str) -> JobRunRecord:
        job = next((j for j in record.spec.jobs if j.name == name), None)
        if job is None:
            raise NotFound(f"deployment {record.name!r} has no job {name!r}")
        if record.intent is Intent.DELETE:
            raise Conflict(f"deployment {record.name!r} is being deleted")
        return await self._start(record, job, "manual")

    async def _start(self, record: DeploymentRecord, job: JobSpec, trigger: str) -> JobRunRecord:
        key = (record.id, job.name)
        if key in self._running:
            raise Conflict(f"job {job.name!r} of {record.name!r} is running already")
        self._running[key] = None  # reserved before the first await: never two at once
        try:
            run = await self._store.start_job_run(record.id, job.name, trigger)
        except BaseException:
            self._running.pop(key, None)
            raise
        task = asyncio.create_task(self._execute(record, job, run), name=f"job-{run.id}")
        self._running[key] = task
        task.add_done_callback(functools.partial(self._done, key))
        self._log.info("job_started", deployment=record.name, job=job.name, run=run.id)
        return run

    def _done(self, key: Key, task: asyncio.Task[None]) -> None:
        if self._running.get(key) is task:
            del self._running[key]

    async def _execute(
        self,
        record: DeploymentRecord,
        job: JobSpec,
        run: JobRunRecord,
        adopt: tuple[OneOff, float] | None = None,
    ) -> None:
        """One run to its end; ``adopt``: (container, seconds left) of a run started before."""
        buffer = LogBuffer()
        exit_code: int | None = None
        try:
            if adopt is None:
                request = RunRequest(
                    command=job.command,
                    run=f"job-{run.id}",
                    timeout_s=job.timeout_s,
                    keep_on_cancel=True,
                )
                result = await self._runner.run(record, request, buffer.add)
            else:
                container, remaining = adopt
                result = await self._runner.attend(
                    container.container_id,
                    f"job-{run.id}",
                    remaining,
                    buffer.add,
                    started=container.started,
                )
            exit_code = result.exit_code
            if result.timed_out:
                outcome = "timeout"
                message = f"killed after its timeout of {job.timeout_s}s (exit code {exit_code})"
            elif exit_code == 0:
                outcome, message = "ok", "exit code 0"
            else:
                outcome, message = "failed", f"exit code {exit_code}"
        except asyncio.CancelledError:
            # The daemon stops: the container goes on; the next daemon adopts the run.
            self._log.info("job_run_left_running", deployment=record.name, run=run.id)
            raise
        except PatrdError as exc:
            outcome, message = "error", f"could not run: {exc}"
        took = time.time() - run.started_at
        self._log.info(
            "job_finished", deployment=record.name, job=job.name, run=run.id, outcome=outcome
        )
        await self._finish(run, exit_code, outcome, f"{message} ({took:.1f}s)", buffer)

    async def _finish(
        self,
        run: JobRunRecord,
        exit_code: int | None,
        outcome: str,
        message: str,
        buffer: LogBuffer,
    ) -> None:
        kind = "job.ok" if outcome == "ok" else "job.failed"
        with contextlib.suppress(PatrdError):
            await self._store.finish_job_run(
                run,
                exit_code=exit_code,
                outcome=outcome,
                message=message,
                log=buffer.text(),
                event=(kind, f"job {run.job} run {run.id}: {outcome}, {message}"),
            )

    async def views(self, record: DeploymentRecord) -> list[JobView]:
        last = await self._store.last_job_runs(record.id)
        now = datetime.now(UTC)
        views = []
        for job in record.spec.jobs:
            key = (record.id, job.name)
            known = self._next.get(key)
            next_at: datetime | None = None
            if record.intent is Intent.RUN:
                if known is not None and known[0] == job.schedule:
                    next_at = known[1]
                else:
                    next_at = cron.next_after(cron.parse(job.schedule), now, self._tz)
            views.append(JobView(job, next_at, key in self._running, last.get(job.name)))
        return views
