"""One-off containers: ``patrctl run`` and every scheduled job run (patrd/run/jobs.py).

A one-off is made like an instance of its deployment (the same code builds
it: ``controller.instance_spec``): the revision's image, its env with
secrets resolved, its config files at /etc/config, its network, its
resources and hardening. It differs in three ways: it runs the given
command, it is labelled ``patrd.oneoff=<run>`` instead of ``patrd.instance``
(the reconciler never adopts, restarts or collects it), and it has no DNS
alias (``web-0`` keeps meaning the instance). Volumes are mounted only when
asked, and only for a deployment of one instance (each instance has its own
volumes: with several there is no single one to pick).

The runner starts it, streams its output to a callback, waits for its exit
(killing it at the timeout: SIGTERM, then SIGKILL after the stop timeout)
and always removes it, also when the caller goes away (cancellation).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import structlog

from patrd.control.instances import instance_spec, resolve_env
from patrd.control.options import ControllerOptions
from patrd.engine.config_mounts import sync_config_dir
from patrd.model.deployment import DeploymentRecord, Intent
from patrd.model.errors import Conflict, EngineError, SpecError
from patrd.model.instances import ImageResult, InstanceSpec, OneOff, RegistryAuth
from patrd.model.naming import (
    legacy_volume_name,
    network_name,
    oneoff_container_name,
    oneoff_hostname,
    volume_name,
)
from patrd.model.replicas import effective_replicas
from patrd.model.spec import DeploymentSpec
from patrd.observe.logs import parse_ts
from patrd.state.store import Store
from patrd.state.vault import Vault

MAX_COMMAND_ARGS = 256
MAX_COMMAND_BYTES = 64 * 1024
LOG_DRAIN_S = 3.0  # after the exit: for the follow stream to end, then for the catch-up
SWEEP_INTERVAL_S = 2.0  # a deleted deployment's network waits for this at most

Output = Callable[[str, int, bytes], Awaitable[None]]  # (stream, time ns, line)


class OneOffEngine(Protocol):
    """The engine as this module uses it (patrd/engine/docker.py ``DockerEngine``)."""

    async def ensure_image(
        self,
        ref: str,
        *,
        always_pull: bool,
        progress: Callable[[str], Awaitable[None]] | None = None,
        auth: RegistryAuth | None = None,
    ) -> ImageResult: ...
    async def ensure_network(self, name: str, deployment: str, deployment_id: str) -> None: ...
    async def ensure_volume(
        self, name: str, deployment: str, volume: str, slot: int, *, adopt: str = ""
    ) -> str: ...
    async def create_oneoff(
        self, spec: InstanceSpec, command: tuple[str, ...], run: str
    ) -> str: ...
    async def start(self, container_id: str) -> None: ...
    async def wait(self, container_id: str) -> int: ...
    async def stop(self, container_id: str, stop_timeout_s: int) -> None: ...
    async def remove(self, container_id: str, stop_timeout_s: int) -> None: ...
    async def list_oneoffs(self) -> list[OneOff]: ...
    def logs(
        self,
        container_id: str,
        *,
        since: float | None = None,
        until: float | None = None,
        tail: int | None = None,
        follow: bool = False,
    ) -> AsyncIterator[tuple[str, bytes]]: ...


@dataclass(frozen=True, slots=True)
class RunRequest:
    command: tuple[str, ...]
    run: str  # the label value and the container's name suffix: "run-1a2b3c4d", "job-17"
    volumes: bool = False
    timeout_s: float | None = None
    # Cancelled (the daemon stops): leave the container running for the next
    # daemon to adopt (job runs), instead of removing it (``patrctl run``).
    keep_on_cancel: bool = False


@dataclass(frozen=True, slots=True)
class RunResult:
    exit_code: int
    timed_out: bool
    started_at: float
    ended_at: float


def new_run_id() -> str:
    return f"run-{secrets.token_hex(4)}"


def parse_command(value: object, field: str) -> tuple[str, ...]:
    """A non-empty list of strings (argv, no shell), bounded."""
    if not isinstance(value, list) or not value:
        raise SpecError(field, "must be a non-empty list of strings (argv; no shell)")
    if len(value) > MAX_COMMAND_ARGS:
        raise SpecError(field, f"at most {MAX_COMMAND_ARGS} arguments")
    for i, arg in enumerate(value):
        if not isinstance(arg, str):
            raise SpecError(f"{field}.{i}", "must be a string")
        if "\x00" in arg:
            raise SpecError(f"{field}.{i}", "must not contain NUL")
    if sum(len(a.encode()) for a in value) > MAX_COMMAND_BYTES:
        raise SpecError(field, f"longer than {MAX_COMMAND_BYTES // 1024} KiB")
    return tuple(value)


def check_runnable(record: DeploymentRecord, volumes: bool) -> None:
    """Pure: may a one-off of ``record`` start (with its volumes)? Conflict/SpecError if not."""
    if record.intent is Intent.DELETE:
        raise Conflict(f"deployment {record.name!r} is being deleted")
    if not volumes:
        return
    if not record.spec.volumes:
        raise SpecError("volumes", f"deployment {record.name!r} has no volumes")
    if record.spec.scale.max > 1 or effective_replicas(record) > 1:
        raise Conflict(
            f"deployment {record.name!r} runs more than one instance, each with its own "
            "volumes: a one-off can mount them only when scale is 1"
        )


async def run_image(
    store: Store, engine: OneOffEngine, record: DeploymentRecord, local_registry: str
) -> str:
    """The image id a one-off of ``record`` runs: its revision's pinned (or recorded) image.

    The one place that picks it, so a change of how revisions pin their
    image repoints one-offs and jobs here. Before a revision ever rolled out
    the tag is resolved like the controller does, from the local copy first.
    """
    pinned, image_id, digest_ref = await store.revision_pin(record.id, record.revision)
    ref = image_id or pinned or digest_ref or record.spec.image_ref_via(local_registry)
    result = await engine.ensure_image(ref, always_pull=False)
    return result.image_id


class OneOffRunner:
    """Starts, streams, times out and removes one-off containers."""

    def __init__(
        self,
        store: Store,
        engine: OneOffEngine,
        options: ControllerOptions,
        vault: Vault | None,
    ) -> None:
        self._store = store
        self._engine = engine
        self._options = options
        self._vault = vault
        self._active: set[str] = set()  # runs being created or attended
        self._log = structlog.get_logger("patrd.oneoff")

    @property
    def stop_timeout_s(self) -> int:
        return self._options.stop_timeout_s

    async def run(
        self,
        record: DeploymentRecord,
        request: RunRequest,
        output: Output,
        on_created: Callable[[], Awaitable[None]] | None = None,
    ) -> RunResult:
        """Run to the end (or the timeout); the container is removed whatever happens.

        ``on_created`` is awaited once the container exists, before it starts
        (errors up to there leave nothing behind and reach the caller as is).
        """
        check_runnable(record, request.volumes)
        self._active.add(request.run)
        try:
            container_id = await self._create(record, request)
        except BaseException:
            self._active.discard(request.run)
            raise
        keep = False
        try:
            if on_created is not None:
                await on_created()
            return await self._run(container_id, request.run, request.timeout_s, output)
        except asyncio.CancelledError:
            keep = request.keep_on_cancel
            raise
        finally:
            if keep:
                self._active.discard(request.run)
            else:
                await asyncio.shield(self._cleanup(container_id, request.run))

    async def attend(
        self,
        container_id: str,
        run: str,
        timeout_s: float | None,
        output: Output,
        *,
        started: bool = True,
    ) -> RunResult:
        """Take over a job's one-off a previous daemon started (it may have exited
        meanwhile): its whole output, its exit (or the rest of its timeout), removal.
        Cancelled, it is left running again for the next daemon."""
        self._active.add(run)
        keep = False
        try:
            return await self._run(container_id, run, timeout_s, output, start=not started)
        except asyncio.CancelledError:
            keep = True
            raise
        finally:
            if keep:
                self._active.discard(run)
            else:
                await asyncio.shield(self._cleanup(container_id, run))

    async def list_oneoffs(self) -> list[OneOff]:
        return await self._engine.list_oneoffs()

    async def _create(self, record: DeploymentRecord, request: RunRequest) -> str:
        spec = record.spec
        image = await run_image(self._store, self._engine, record, self._options.local_registry)
        user_env = await resolve_env(spec, self._vault)
        wanted = instance_spec(
            record,
            self._options,
            slot=0,
            template="",
            image=image,
            user_env=user_env,
            name=oneoff_container_name(record.name, request.run),
        )
        env = tuple((k, request.run if k == "PATRD_INSTANCE" else v) for k, v in wanted.env)
        wanted = replace(wanted, env=env, hostname=oneoff_hostname(record.name, request.run))
        if wanted.config_dir is not None:
            await asyncio.to_thread(_config_dir_present, Path(wanted.config_dir), spec)
        if request.volumes:
            mounts = []
            for v in spec.volumes:
                docker_volume = await self._engine.ensure_volume(
                    volume_name(record.name, v.name, 0),
                    record.name,
                    v.name,
                    0,
                    adopt=legacy_volume_name(record.name, v.name, 0),
                )
                mounts.append((docker_volume, v.path))
            wanted = replace(wanted, volumes=tuple(mounts))
        else:
            wanted = replace(wanted, volumes=())
        await self._engine.ensure_network(network_name(record.name), record.name, record.id)
        self._log.info(
            "oneoff_create", deployment=record.name, run=request.run, volumes=request.volumes
        )
        return await self._engine.create_oneoff(wanted, request.command, request.run)

    async def _run(
        self,
        container_id: str,
        run: str,
        timeout_s: float | None,
        output: Output,
        *,
        start: bool = True,
    ) -> RunResult:
        loop = asyncio.get_running_loop()
        started = time.time()
        if start:
            await self._engine.start(container_id)
        reader = _OutputReader(self._engine, container_id, output)
        pump = asyncio.create_task(reader.follow())
        waiter = asyncio.create_task(self._engine.wait(container_id))
        deadline = None if timeout_s is None else loop.time() + timeout_s
        timed_out = False
        try:
            while not waiter.done():
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                watched = {waiter} if pump.done() else {waiter, pump}
                done, _ = await asyncio.wait(
                    watched, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                if waiter in done:
                    break
                if pump in done and _delivery_failed(pump):
                    # The output cannot be delivered (the caller went away): stop it.
                    await self._engine.stop(container_id, self._options.stop_timeout_s)
                    raise pump.exception()  # type: ignore[misc]
                if not done:
                    timed_out = True
                    self._log.info("oneoff_timeout", run=run, timeout_s=timeout_s)
                    await self._engine.stop(container_id, self._options.stop_timeout_s)
                    break
            code = await waiter
            ended = time.time()
            if not pump.done():
                await asyncio.wait({pump}, timeout=LOG_DRAIN_S)
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            if _delivery_failed(pump):
                raise pump.exception()  # type: ignore[misc]
            # A follow stream may end (or stall) before the last lines of a container
            # that exits at once: read what came after the last line delivered.
            with contextlib.suppress(EngineError, TimeoutError):
                async with asyncio.timeout(LOG_DRAIN_S):
                    await reader.catch_up()
        finally:
            for task in (pump, waiter):
                task.cancel()
            await asyncio.gather(pump, waiter, return_exceptions=True)
        return RunResult(code, timed_out, started, ended)

    async def _cleanup(self, container_id: str, run: str) -> None:
        try:
            await self._engine.remove(container_id, self._options.stop_timeout_s)
        except EngineError as exc:  # the sweep tries again
            self._log.warning("oneoff_remove_failed", container=container_id[:12], error=str(exc))
        finally:
            self._active.discard(run)

    # --- sweeping --------------------------------------------------------------

    async def sweep(self) -> int:
        """Remove one-offs nobody waits for: left by a daemon that stopped, or of a
        deleted deployment (its network cannot go while they are attached)."""
        found = await self._engine.list_oneoffs()
        if not found:
            return 0
        known = {r.id: r for r in await self._store.list_deployments()}
        removed = 0
        for item in found:
            record = known.get(item.deployment_id)
            gone = record is None or record.intent is Intent.DELETE
            if item.run in self._active and not gone:
                continue
            self._log.info(
                "oneoff_swept", container=item.container_id[:12], run=item.run, running=item.running
            )
            await self._engine.remove(item.container_id, self._options.stop_timeout_s)
            removed += 1
        return removed

    async def run_sweeper(self) -> None:
        while True:
            try:
                await self.sweep()
            except EngineError as exc:
                self._log.warning("oneoff_sweep_failed", error=str(exc))
            await asyncio.sleep(SWEEP_INTERVAL_S)


class _OutputReader:
    """A one-off's output, delivered once: followed live, then caught up after the exit."""

    def __init__(self, engine: OneOffEngine, container_id: str, output: Output) -> None:
        self._engine = engine
        self._container_id = container_id
        self._output = output
        self._last_ns = 0

    async def follow(self) -> None:
        async for stream, payload in self._engine.logs(self._container_id, follow=True):
            await self._deliver(stream, payload, only_newer=False)

    async def catch_up(self) -> None:
        since = self._last_ns / 1e9 if self._last_ns else None
        async for stream, payload in self._engine.logs(self._container_id, since=since):
            await self._deliver(stream, payload, only_newer=True)

    async def _deliver(self, stream: str, payload: bytes, *, only_newer: bool) -> None:
        ts, sep, text = payload.partition(b" ")
        try:
            ts_ns = parse_ts(ts) if sep else 0
        except ValueError:
            ts_ns, text = 0, payload
        if only_newer and ts_ns <= self._last_ns:
            return
        self._last_ns = max(self._last_ns, ts_ns)
        await self._output(stream, ts_ns or time.time_ns(), text)


def _delivery_failed(pump: asyncio.Task[None]) -> bool:
    """The output callback failed (not Docker's log stream: the run goes on without it)."""
    if pump.cancelled():
        return False
    exc = pump.exception()
    return exc is not None and not isinstance(exc, EngineError)


def _config_dir_present(directory: Path, spec: DeploymentSpec) -> None:
    """The controller writes it on its first pass; a one-off may come first."""
    if not directory.exists():
        sync_config_dir(directory, spec.config_mounts)


def parse_timeout(value: object, field: str) -> float | None:
    """An optional timeout in seconds (1 s to 1 day)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 86400:
        raise SpecError(field, "must be a number of seconds from 1 to 86400")
    return float(value)
