"""Off-site backups (``[backup]``): patrd's state and every deployment's volumes → restic.

One run, on the schedule (patrd/state/backup_schedule.py) or on request:

1. ``state``: the archive ``patrctl backup`` writes (patrd/state/archive.py), as
   ``/patrd-state.tar`` in a snapshot tagged ``kind=state``;
2. per deployment with volumes: its ``backup.hooks.pre`` (exec in one
   running instance), then one snapshot per Docker volume, read at the
   volume's mountpoint on the host while the app keeps serving (tags
   ``kind=volume deployment= volume= instance=``), then ``hooks.post``
   (always). A failing hook fails that deployment's backup only;
3. retention: ``restic forget --keep-… --prune`` (per volume and state).

Nothing in a backup stops or restarts an instance: a failed backup cannot
leave an app stopped. Each deployment backed up gets a ``backup.ok`` or
``backup.failed`` event; the run's outcome is logged, counted for
``/metrics`` and kept in ``<data_dir>/backup/status.json`` (the schedule
counts from it across restarts). Restores live in patrd/state/offsite_restore.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from patrd.model.deployment import DeploymentRecord, Intent
from patrd.model.errors import Conflict, EngineError, PatrdError
from patrd.model.instances import ContainerState, ExecResult, Instance, VolumeInfo
from patrd.state import archive as state_backup
from patrd.state.backup_config import BACKUP_DIR, PASSWORD_NAME, BackupConfig, read_env_file
from patrd.state.backup_schedule import seconds_until
from patrd.state.restic import Repository, Restic, Snapshot, redact

STATE_FILE = "patrd-state.tar"
STATUS_FILE = "status.json"
JOBS_KEPT = 20
HOOK_OUTPUT_SHOWN = 300


class BackupEngine(Protocol):
    """What backups and restores ask of the engine adapter (patrd/engine/docker.py)."""

    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]: ...
    async def list_volumes(self, deployment: str) -> list[VolumeInfo]: ...
    async def ensure_volume(
        self, name: str, deployment: str, volume: str, slot: int, *, adopt: str = ""
    ) -> str: ...
    async def exec(
        self, container_id: str, argv: Sequence[str], timeout_s: float
    ) -> ExecResult: ...


class BackupStore(Protocol):
    async def list_deployments(self) -> list[DeploymentRecord]: ...
    async def get_deployment(self, name: str) -> DeploymentRecord: ...
    async def set_intent(self, name: str, intent: Intent) -> DeploymentRecord: ...
    async def add_event(
        self, deployment_id: str, kind: str, message: str, revision: int | None = None
    ) -> None: ...


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    database: Path
    secrets_key: Path | None


@dataclass
class Job:
    """A backup run or a restore, as ``GET /v1/backups/jobs/{id}`` shows it."""

    id: str
    kind: str  # "backup" | "restore"
    started_at: float
    state: str = "running"  # running | ok | failed
    finished_at: float | None = None
    message: str = ""
    details: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "message": self.message,
            "details": list(self.details),
            "snapshots": list(self.snapshots),
        }


@dataclass
class BackupStats:
    """For /metrics (patrd/observe/prometheus.py): counters since start, times from status.json."""

    runs_ok: int = 0
    runs_failed: int = 0
    deployment_failures: int = 0
    last_run_at: float | None = None
    last_success_at: float | None = None
    last_duration_s: float | None = None
    snapshots_total: int = 0


class OffsiteBackups:
    """The backup runs, their schedule, the jobs list; restores are delegated."""

    def __init__(
        self,
        config: BackupConfig,
        paths: Paths,
        store: BackupStore,
        engine: BackupEngine,
        wake: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.paths = paths
        self.store = store
        self.engine = engine
        self.wake = wake
        self.stats = BackupStats()
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy = asyncio.Lock()
        self._active: Job | None = None  # claimed by new_job(), released when the job ends
        self._log = structlog.get_logger("patrd.state.archive")
        self._dir = paths.data_dir / BACKUP_DIR
        self._load_status()

    # --- the repository -----------------------------------------------------------

    def restic(self) -> Restic:
        """A restic bound to the configured repository (env file re-read each time)."""
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        password = self.config.password_file or self._dir / PASSWORD_NAME
        if self.config.password_file is None and not password.exists():
            _create_password(password)
        env = read_env_file(self.config.env_file) if self.config.env_file else {}
        return Restic(
            Repository(
                location=self.config.repository,
                password_file=password,
                cache_dir=self.paths.data_dir / state_backup.RESTIC_CACHE_DIR,
                env=env,
                binary=self.config.binary,
            )
        )

    # --- jobs -------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._active is not None

    def jobs(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.started_at, reverse=True)

    def job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def next_run_at(self) -> float | None:
        if self.config.schedule is None:
            return None
        now = self._clock()
        return now + seconds_until(self.config.schedule, self.stats.last_run_at, now)

    def new_job(self, kind: str) -> Job:
        """Claim the one slot for a job (409 while another job runs); run it with spawn()."""
        if self._active is not None:
            raise Conflict(
                f"{self._active.kind} {self._active.id} is running; wait for it to finish"
            )
        stamp = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y%m%dT%H%M%SZ")
        job = Job(id=f"{stamp}-{uuid.uuid4().hex[:4]}", kind=kind, started_at=self._clock())
        self._jobs[job.id] = job
        self._active = job
        for old in self.jobs()[JOBS_KEPT:]:
            self._jobs.pop(old.id, None)
        return job

    def spawn(self, job: Job, work: Callable[[Job], Awaitable[None]]) -> None:
        """Run ``work(job)`` in the background under the one lock; keep a reference."""
        task = asyncio.create_task(self._guarded(job, work), name=f"backup-job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, job: Job, work: Callable[[Job], Awaitable[None]]) -> None:
        """``work(job)`` under the one lock; whatever happens, the job ends ok or failed."""
        async with self._busy:
            try:
                await work(job)
            except asyncio.CancelledError:
                self.finish(job, ok=False, message="interrupted (daemon stopping)")
                raise
            except Exception as exc:
                self._log.exception("backup_job_crashed", job=job.id)
                self.finish(job, ok=False, message=f"{type(exc).__name__}: {exc}")
            finally:
                if self._active is job:
                    self._active = None

    def start_backup(self) -> Job:
        job = self.new_job("backup")
        self.spawn(job, self._backup)
        return job

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- the schedule (a supervised task) ------------------------------------------

    async def run_schedule(self) -> None:
        schedule = self.config.schedule
        if schedule is None:
            return
        while True:
            wait = seconds_until(schedule, self.stats.last_run_at, self._clock())
            self._log.info("backup_next", schedule=str(schedule), in_s=round(wait, 1))
            await asyncio.sleep(wait)
            if self.busy:
                await asyncio.sleep(5)
                continue
            await self._guarded(self.new_job("backup"), self._backup)

    # --- one backup run --------------------------------------------------------------

    async def _backup(self, job: Job) -> None:
        started = self._clock()
        self.stats.last_run_at = started
        self._save_status()
        self._log.info("backup_started", job=job.id, repository=_safe_location(self.config))
        failures: list[str] = []
        try:
            restic = self.restic()
            if await restic.ensure_repository():
                job.details.append(f"created repository {restic.location}")
        except PatrdError as exc:
            self.finish(job, ok=False, message=f"repository: {exc}")
            return
        if self.config.state:
            try:
                sid = await self._backup_state(restic, job.id)
                job.snapshots.append(sid)
                job.details.append(f"state: snapshot {sid}")
            except PatrdError as exc:
                failures.append(f"state: {exc}")
                job.details.append(f"state: FAILED: {exc}")
        if self.config.volumes:
            try:
                records = await self.store.list_deployments()
            except PatrdError as exc:
                records = []
                failures.append(f"volumes: {exc}")
            for record in records:
                if record.intent is Intent.DELETE or not record.spec.volumes:
                    continue
                problem = await self._backup_deployment(restic, job, record)
                if problem:
                    failures.append(f"{record.name}: {problem}")
        if self.config.retention.any and not failures:
            try:
                await restic.forget(self.config.retention.flags())
                job.details.append("retention applied (forget --prune)")
            except PatrdError as exc:
                failures.append(f"retention: {exc}")
        self.stats.last_duration_s = self._clock() - started
        if failures:
            self.finish(job, ok=False, message="; ".join(failures))
        else:
            self.stats.last_success_at = started
            self.finish(job, ok=True, message=f"{len(job.snapshots)} snapshots")
        self._save_status()

    async def _backup_state(self, restic: Restic, run: str) -> str:
        archive, _ = await state_backup.create_backup(
            self.paths.data_dir, self.paths.database, self.paths.secrets_key
        )
        try:
            return await restic.backup_file(archive, STATE_FILE, {"kind": "state", "run": run})
        finally:
            archive.unlink(missing_ok=True)

    async def _backup_deployment(self, restic: Restic, job: Job, record: DeploymentRecord) -> str:
        """Hooks and volume snapshots of one deployment; returns what went wrong ("": ok)."""
        hooks = record.spec.backup
        problem = ""
        taken: list[str] = []
        instance: Instance | None = None
        try:
            if hooks.pre or hooks.post:
                instance = await self._running_instance(record)
                if instance is None:
                    job.details.append(f"{record.name}: no running instance, hooks not run")
            if hooks.pre and instance is not None:
                problem = await self._hook(instance, hooks.pre, "pre")
            if not problem:
                wanted = {v.name for v in record.spec.volumes}
                for volume in await self.engine.list_volumes(record.name):
                    if volume.volume not in wanted or not volume.mountpoint:
                        continue
                    if await asyncio.to_thread(_empty, Path(volume.mountpoint)):
                        # restic refuses an empty snapshot; there is nothing to restore.
                        job.details.append(f"{record.name}: {volume.name} is empty, skipped")
                        continue
                    tags = {
                        "kind": "volume",
                        "deployment": record.name,
                        "volume": volume.volume,
                        "instance": str(volume.slot),
                        "run": job.id,
                    }
                    taken.append(await restic.backup_dir(Path(volume.mountpoint), tags))
        except PatrdError as exc:
            problem = problem or str(exc)
        if hooks.post and instance is not None:
            post_problem = await self._hook(instance, hooks.post, "post")
            problem = problem or post_problem
        job.snapshots.extend(taken)
        if problem:
            self.stats.deployment_failures += 1
            job.details.append(f"{record.name}: FAILED: {problem}")
            await self.event(record, "backup.failed", f"backup {job.id} failed: {problem}")
        else:
            job.details.append(f"{record.name}: {len(taken)} volume snapshots")
            await self.event(
                record,
                "backup.ok",
                f"backup {job.id}: {len(taken)} volume snapshots ({', '.join(taken) or 'none'})",
            )
        return problem

    async def _running_instance(self, record: DeploymentRecord) -> Instance | None:
        instances = await self.engine.list_instances(record.id)
        running = [i for i in instances if i.state is ContainerState.RUNNING]
        return min(running, key=lambda i: (i.revision != record.revision, i.slot), default=None)

    async def _hook(self, instance: Instance, argv: Sequence[str], which: str) -> str:
        try:
            result = await self.engine.exec(instance.container_id, argv, self.config.hook_timeout_s)
        except EngineError as exc:
            return f"{which} hook: {exc}"
        if result.exit_code != 0:
            tail = result.output.decode(errors="replace").strip()[-HOOK_OUTPUT_SHOWN:]
            return f"{which} hook exited {result.exit_code}" + (f": {tail}" if tail else "")
        return ""

    async def event(self, record: DeploymentRecord, kind: str, message: str) -> None:
        with contextlib.suppress(PatrdError):  # the deployment may be gone meanwhile
            await self.store.add_event(record.id, kind, message)

    def finish(self, job: Job, *, ok: bool, message: str) -> None:
        job.state = "ok" if ok else "failed"
        job.finished_at = self._clock()
        job.message = message
        if job.kind == "backup":
            if ok:
                self.stats.runs_ok += 1
            else:
                self.stats.runs_failed += 1
            self.stats.snapshots_total += len(job.snapshots)
        log = self._log.info if ok else self._log.error
        log(f"{job.kind}_{job.state}", job=job.id, message=message)

    # --- snapshots ---------------------------------------------------------------

    async def snapshots(self) -> list[Snapshot]:
        return await self.restic().snapshots()

    # --- status.json ---------------------------------------------------------------

    def _load_status(self) -> None:
        try:
            data = json.loads((self._dir / STATUS_FILE).read_text())
            self.stats.last_run_at = _float_or_none(data.get("last_run_at"))
            self.stats.last_success_at = _float_or_none(data.get("last_success_at"))
        except (OSError, ValueError, AttributeError):
            return

    def _save_status(self) -> None:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = json.dumps(
            {
                "last_run_at": self.stats.last_run_at,
                "last_success_at": self.stats.last_success_at,
            }
        )
        tmp = self._dir / f".{STATUS_FILE}.tmp"
        tmp.write_text(body)
        os.replace(tmp, self._dir / STATUS_FILE)


def _create_password(path: Path) -> None:
    """A random repository password, 0600, written once (keep a copy off this machine)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(32) + "\n")
        out.flush()
        os.fsync(out.fileno())


def _empty(directory: Path) -> bool:
    with os.scandir(directory) as entries:
        return next(entries, None) is None


def _safe_location(config: BackupConfig) -> str:
    return redact(config.repository)


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None
