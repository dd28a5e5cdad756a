"""Image garbage collection that knows about rollbacks.

patrd removes an image only when all of these hold:

* patrd pulled it (``pulled_images``: the pull brought an image id that was not
  on the engine under that name before): an image built or loaded by hand,
  or pulled by someone else, is never touched;
* no deployment keeps it: it is not the image of any of the newest
  ``images.keep_releases`` releases (revisions that were rolled out or tried)
  of any deployment, nor of a deployment's current or stable revision, nor
  the image a deployment's current revision pulled and is rolling out;
* no container on the engine uses it (running or stopped, patrd's or not);
* Docker agrees without force (an image tagged in other repositories stays).

:func:`select` decides (pure); :class:`ImageCollector` runs it every
``images.gc_interval_s``, and at once when the disk guard finds the disk low.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

import structlog

from patrd.model.errors import EngineError, StoreError


@dataclass(frozen=True, slots=True)
class PulledImage:
    image_id: str
    ref: str
    deployment_id: str
    revision: int  # the revision it was pulled for
    pulled_at: float


@dataclass(frozen=True, slots=True)
class ReleaseImage:
    deployment_id: str
    revision: int
    state: str  # a RevisionState value, or "current"/"stable" for those revisions
    image_id: str | None


@dataclass(frozen=True, slots=True)
class Removal:
    image_id: str
    ref: str
    reason: str


_RELEASED = frozenset({"deployed", "superseded", "failed", "current", "stable"})


def retained(releases: Iterable[ReleaseImage], keep: int) -> tuple[set[str], set[tuple[str, int]]]:
    """Image ids kept by the releases, and the (deployment, revision) pairs that are current."""
    by_deployment: dict[str, list[ReleaseImage]] = {}
    keep_ids: set[str] = set()
    current: set[tuple[str, int]] = set()
    for r in releases:
        if r.state in ("current", "stable"):
            current.add((r.deployment_id, r.revision))
            if r.image_id:
                keep_ids.add(r.image_id)
        if r.state in _RELEASED and r.image_id:
            by_deployment.setdefault(r.deployment_id, []).append(r)
    for rows in by_deployment.values():
        rows.sort(key=lambda r: r.revision, reverse=True)
        keep_ids.update(r.image_id for r in rows[:keep] if r.image_id)
    return keep_ids, current


def select(
    pulled: Iterable[PulledImage],
    releases: Iterable[ReleaseImage],
    in_use: Collection[str],
    keep: int,
) -> list[Removal]:
    """The pulled images nothing keeps any more, oldest pull first. Pure."""
    keep_ids, current = retained(releases, keep)
    removals = []
    for p in sorted(pulled, key=lambda p: p.pulled_at):
        if p.image_id in keep_ids or p.image_id in in_use:
            continue
        if (p.deployment_id, p.revision) in current:
            continue  # pulled for the revision rolling out now: not recorded yet
        removals.append(
            Removal(p.image_id, p.ref, f"not in the last {keep} releases of any deployment")
        )
    return removals


class ImageStore(Protocol):
    async def image_gc_rows(
        self,
    ) -> tuple[list[tuple[str, str, str, int, float]], list[tuple[str, int, str, str | None]]]: ...

    async def forget_pull(self, image_id: str) -> None: ...


class ImageEngine(Protocol):
    async def images_in_use(self) -> set[str]: ...

    async def remove_image(self, image_id: str) -> str: ...


class ImageCollector:
    """Removes pulled images no release needs; periodic, or at once when woken."""

    def __init__(
        self, store: ImageStore, engine: ImageEngine, keep_releases: int, interval_s: float
    ) -> None:
        self._store = store
        self._engine = engine
        self._keep = keep_releases
        self._interval_s = interval_s
        self._wake = asyncio.Event()
        self.removed_total = 0
        self._log = structlog.get_logger("patrd.engine.imagegc")

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.collect()
            except (EngineError, StoreError) as exc:
                self._log.warning("image_gc_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()

    async def collect(self) -> list[Removal]:
        """One pass; the images actually removed."""
        pulled_rows, release_rows = await self._store.image_gc_rows()
        in_use = await self._engine.images_in_use()
        plan = select(
            (PulledImage(*row) for row in pulled_rows),
            (ReleaseImage(*row) for row in release_rows),
            in_use,
            self._keep,
        )
        done = []
        for removal in plan:
            outcome = await self._engine.remove_image(removal.image_id)
            if outcome in ("removed", "gone"):
                await self._store.forget_pull(removal.image_id)
            if outcome == "removed":
                done.append(removal)
                self.removed_total += 1
                self._log.info(
                    "image_removed",
                    image=removal.image_id[:19],
                    ref=removal.ref,
                    reason=removal.reason,
                )
            elif outcome != "gone":
                self._log.info("image_kept", image=removal.image_id[:19], why=outcome)
        return done
