"""Restore one deployment's volumes from an off-site backup (patrd/state/offsite.py).

``SNAPSHOT`` names a backup run: its run id (``20261206T031500Z-ab12``),
``latest`` (the newest run holding that deployment's volumes), or the id (or
a unique prefix) of any snapshot of the run. Of that run, the volume
snapshots of the deployment (optionally one volume) are restored:

* into the deployment's own volumes (the default): its instances are
  stopped first (this deployment only, through its intent, so the
  reconciler does it and no other app is touched), each volume's contents
  are replaced by the snapshot's, and the deployment is started again if it
  was running — also when the restore failed;
* or into a named target directory on the host (``<target>/<volume>-<instance>``),
  leaving the deployment alone.

Each volume is restored into a staging directory beside the volume's data
first and swapped in only when restic finished: a failed restore leaves the
volume as it was.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from patrd.engine.docker import ContainerState
from patrd.model.errors import NotFound, PatrdError, SpecError
from patrd.model.naming import legacy_volume_name, volume_name
from patrd.state.archive import RestoreResult, restore
from patrd.state.backup_config import BackupConfig, read_env_file
from patrd.state.offsite import STATE_FILE, Job, OffsiteBackups
from patrd.state.restic import Repository, Restic, Snapshot
from patrd.state.store import DeploymentRecord, Intent

STOP_WAIT_S = 300.0
POLL_S = 0.5
MIN_PREFIX = 4
_LIVE = frozenset({ContainerState.RUNNING, ContainerState.RESTARTING, ContainerState.PAUSED})


@dataclass(frozen=True, slots=True)
class RestoreRequest:
    snapshot: str
    deployment: str
    volume: str | None = None
    target: Path | None = None  # None: into the deployment's own volumes


def choose(snapshots: list[Snapshot], request: RestoreRequest) -> list[Snapshot]:
    """The volume snapshots ``request`` names (pure); ``NotFound`` says why none."""
    mine = [
        s
        for s in snapshots
        if s.kind == "volume"
        and s.tags.get("deployment") == request.deployment
        and (request.volume is None or s.tags.get("volume") == request.volume)
    ]
    what = f"{request.deployment}" + (f" (volume {request.volume})" if request.volume else "")
    ref = request.snapshot
    if ref == "latest":
        if not mine:
            raise NotFound(f"no backup holds volumes of {what}")
        run = max(mine, key=lambda s: s.time).tags.get("run", "")
        chosen = [s for s in mine if s.tags.get("run", "") == run]
    elif any(s.tags.get("run") == ref for s in snapshots):
        chosen = [s for s in mine if s.tags.get("run") == ref]
    else:
        if len(ref) < MIN_PREFIX:
            raise NotFound(f"no backup run or snapshot {ref!r}")
        matches = [s for s in snapshots if s.id.startswith(ref)]
        if not matches:
            raise NotFound(f"no backup run or snapshot {ref!r}")
        if len(matches) > 1:
            raise NotFound(f"snapshot id prefix {ref!r} is ambiguous; give more of it")
        hit = matches[0]
        if hit.kind == "volume":
            chosen = [hit] if hit in mine else []
        else:
            chosen = [s for s in mine if s.tags.get("run") == hit.tags.get("run", "?")]
    if not chosen:
        raise NotFound(f"backup {ref} holds no volumes of {what}")
    latest: dict[tuple[str, str], Snapshot] = {}
    for s in sorted(chosen, key=lambda s: s.time):
        latest[(s.tags.get("volume", ""), s.tags.get("instance", "0"))] = s
    return [latest[k] for k in sorted(latest)]


def choose_state(snapshots: list[Snapshot], ref: str) -> Snapshot:
    """The state snapshot of run ``ref`` (``latest``, a run id or any snapshot id of it)."""
    states = [s for s in snapshots if s.kind == "state"]
    if ref == "latest":
        if not states:
            raise NotFound("no backup holds patrd's state")
        return max(states, key=lambda s: s.time)
    run = ref
    if not any(s.tags.get("run") == ref for s in snapshots):
        matches = [s for s in snapshots if len(ref) >= MIN_PREFIX and s.id.startswith(ref)]
        if len(matches) != 1:
            raise NotFound(f"no backup run or snapshot {ref!r} (or an ambiguous prefix)")
        run = matches[0].tags.get("run", "?")
        if matches[0].kind == "state":
            return matches[0]
    found = [s for s in states if s.tags.get("run") == run]
    if not found:
        raise NotFound(f"backup {ref} holds no state")
    return found[-1]


async def fetch_state(config: BackupConfig, ref: str, dest: Path, cache_dir: Path) -> Snapshot:
    """Write the state archive of run ``ref`` to ``dest`` (0600): ``patrd restore --snapshot``.

    Offline, onto an empty data dir: the password must come from
    ``backup.password_file`` (the data dir's generated copy is not there yet).
    """
    if not config.enabled:
        raise PatrdError("restore --snapshot needs [backup] repository in the config")
    if config.password_file is None:
        raise PatrdError(
            "restore --snapshot needs backup.password_file: the repository password "
            "(a copy of <data_dir>/backup/restic-password from the old machine)"
        )
    env = read_env_file(config.env_file) if config.env_file else {}
    restic = Restic(
        Repository(config.repository, config.password_file, cache_dir, env, config.binary)
    )
    chosen = choose_state(await restic.snapshots(), ref)
    await restic.dump(chosen.id, STATE_FILE, dest)
    return chosen


def restore_from_repository(
    config: BackupConfig | None, ref: str, data_dir: Path, key_file: Path | None
) -> RestoreResult:
    """``patrd restore --snapshot RUN --config FILE``: state from the repository. Blocking.

    ``config``: the ``[backup]`` section of that file (None: no --config given).
    """
    if config is None:
        raise PatrdError("restore --snapshot needs --config FILE (its [backup] section)")
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".patrd-restore-", dir=data_dir.parent) as tmp:
        dest = Path(tmp) / STATE_FILE
        asyncio.run(fetch_state(config, ref, dest, Path(tmp) / "cache"))
        return restore(dest, data_dir, key_file)


async def start_restore(service: OffsiteBackups, request: RestoreRequest) -> Job:
    """Check the request now (404/422 at the API), then restore in the background."""
    if request.target is not None:
        _check_target(request.target)
        record = None
    else:
        record = await service.store.get_deployment(request.deployment)
        known = {v.name for v in record.spec.volumes}
        if request.volume is not None and request.volume not in known:
            raise SpecError("volume", f"{request.deployment} has no volume {request.volume!r}")
    chosen = choose(await service.snapshots(), request)
    if record is not None:
        known = {v.name for v in record.spec.volumes}
        chosen = [s for s in chosen if s.tags.get("volume") in known]
        if not chosen:
            raise NotFound(f"{request.deployment} has none of the volumes that backup holds")
    job = service.new_job("restore")
    job.snapshots = [s.short_id for s in chosen]

    async def work(job: Job) -> None:
        await _restore(service, job, request, chosen)

    service.spawn(job, work)
    return job


def _check_target(target: Path) -> None:
    if not target.is_absolute():
        raise SpecError("target", "must be an absolute path on the daemon's host")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise SpecError("target", f"{target} exists and is not an empty directory")


async def _restore(
    service: OffsiteBackups, job: Job, request: RestoreRequest, chosen: list[Snapshot]
) -> None:
    restic = service.restic()
    if request.target is not None:
        for s in chosen:
            dest = request.target / f"{s.tags.get('volume')}-{s.tags.get('instance', '0')}"
            await restic.restore(s.id, dest)
            job.details.append(f"snapshot {s.short_id} → {dest}")
        done = f"{len(chosen)} volumes restored into {request.target}"
        service.finish(job, ok=True, message=done)
        return
    record = await service.store.get_deployment(request.deployment)
    was_running = record.intent is Intent.RUN
    problem = ""
    try:
        if was_running:
            await service.store.set_intent(record.name, Intent.STOP)
            service.wake(record.id)
            job.details.append(f"stopping {record.name} (this deployment only)")
            await _wait_stopped(service, record)
        for s in chosen:
            volume, slot = s.tags.get("volume", ""), int(s.tags.get("instance", "0"))
            mountpoint = await _mountpoint(service, record, volume, slot)
            await _restore_into(restic, s.id, mountpoint)
            job.details.append(f"volume {volume} (instance {slot}) ← snapshot {s.short_id}")
    except (PatrdError, OSError) as exc:  # OSError: the swap on the host's filesystem
        problem = str(exc)
    finally:
        if was_running:
            try:
                await service.store.set_intent(record.name, Intent.RUN)
                service.wake(record.id)
                job.details.append(f"started {record.name} again")
            except PatrdError as exc:
                problem = problem or f"could not start {record.name} again: {exc}"
    if problem:
        await service.event(record, "backup.restore_failed", f"restore failed: {problem}")
        service.finish(job, ok=False, message=problem)
    else:
        message = f"{len(chosen)} volumes restored from {', '.join(job.snapshots)}"
        await service.event(record, "backup.restored", message)
        service.finish(job, ok=True, message=message)


async def _wait_stopped(service: OffsiteBackups, record: DeploymentRecord) -> None:
    deadline = time.monotonic() + STOP_WAIT_S
    while time.monotonic() < deadline:
        instances = await service.engine.list_instances(record.id)
        if not any(i.state in _LIVE for i in instances):
            return
        await asyncio.sleep(POLL_S)
    raise PatrdError(f"{record.name}: instances still running after {STOP_WAIT_S:g} s")


async def _mountpoint(
    service: OffsiteBackups, record: DeploymentRecord, volume: str, slot: int
) -> Path:
    for attempt in range(2):
        for v in await service.engine.list_volumes(record.name):
            if v.volume == volume and v.slot == slot and v.mountpoint:
                return Path(v.mountpoint)
        if attempt == 0:  # never created here yet (a fresh install): create it now
            name = volume_name(record.name, volume, slot)
            await service.engine.ensure_volume(
                name, record.name, volume, slot, adopt=legacy_volume_name(record.name, volume, slot)
            )
    raise PatrdError(f"volume {volume} of instance {slot}: no mountpoint on this host")


async def _restore_into(restic: Restic, snapshot_id: str, mountpoint: Path) -> None:
    staging = mountpoint.parent / f".patrd-restore-{uuid.uuid4().hex[:8]}"
    try:
        await restic.restore(snapshot_id, staging)
        await asyncio.to_thread(_swap, staging, mountpoint)
    finally:
        await asyncio.to_thread(shutil.rmtree, staging, True)


def _swap(staging: Path, mountpoint: Path) -> None:
    """Replace the contents of ``mountpoint`` by those of ``staging`` (same filesystem).

    The volume's own directory (its owner and mode) stays; what it held goes.
    """
    old = mountpoint.parent / f".patrd-old-{uuid.uuid4().hex[:8]}"
    old.mkdir(mode=0o700)
    try:
        for entry in os.listdir(mountpoint):
            os.rename(mountpoint / entry, old / entry)
        for entry in os.listdir(staging):
            os.rename(staging / entry, mountpoint / entry)
    finally:
        shutil.rmtree(old, ignore_errors=True)
