"""Releases: which image a revision runs, and the pure decisions about it.

Every revision *pins* its image once its tag has been resolved: the registry
manifest digest (``repo@sha256:…``, what ``docker push`` prints) where one
exists, and the local image id. Settings changes carry the pin forward; only
an explicit act (create, a push, a poll, ``redeploy``, ``revert``, or a change
of registry/image/tag) brings a new one. Nothing here does I/O: the store
writes what these functions decide, the controller resolves tags.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from patrd.model.errors import Conflict, NotFound, SpecError

MIN_ID_PREFIX = 12  # hex characters of an image id or digest prefix (Docker's short id)
KEEP_REVISIONS_DEFAULT = 100
KEEP_RELEASES_DEFAULT = 5

_HEX_RE = re.compile(r"[0-9a-f]+")
_REVISION_RE = re.compile(r"[0-9]{1,9}")


class Origin(StrEnum):
    """How a revision came by its image."""

    CREATE = "create"  # the tag was resolved for the first time (create, or image/tag changed)
    PUSH = "push"  # the node registry notified a push
    POLL = "poll"  # the tag poller saw a new digest
    REDEPLOY = "redeploy"  # the user pulled the tag again and its digest had changed
    REVERT = "revert"  # the user went back to an image of the history
    SETTINGS = "settings"  # env, ports, probes, scale…: the previous revision's image


RELEASE_ORIGINS = frozenset(o for o in Origin if o is not Origin.SETTINGS)


@dataclass(frozen=True, slots=True)
class Pin:
    """What one revision runs. ``ref`` is what the template names and what is pulled."""

    ref: str  # repo@sha256:… when the registry knows the image, else the image id
    image_id: str | None  # None: known by digest only, until the controller pulls it
    digest: str | None  # sha256:… manifest digest, when there is one

    @property
    def short(self) -> str:
        return (self.digest or self.image_id or self.ref)[:19]


def pin_from_digest(repo: str, digest: str) -> Pin:
    """The registry said what the tag points at (no pull): pinned by digest alone."""
    return Pin(ref=f"{repo}@{digest}", image_id=None, digest=digest)


def same_source(old: Any, new: Any) -> bool:
    """Does a spec change keep the image? Only registry, image and tag decide."""
    return bool(old.registry == new.registry and old.image == new.image and old.tag == new.tag)


def pin_from_inspect(image_id: str, repo_digests: Iterable[str], repo: str) -> Pin:
    """The pin for a resolved tag: the repo digest of ``repo`` when Docker has one.

    ``repo`` is the reference without tag (``host:port/apps/web``). Digests the
    same image has in other repositories are not used: that registry may be
    gone, and the deployment never asked for it. No digest: the image id alone
    (an image built on the node; it cannot be pulled again once removed).
    """
    chosen = next(
        (d for d in repo_digests if "@sha256:" in d and d.rsplit("@", 1)[0] == repo), None
    )
    if chosen is None:
        return Pin(ref=image_id, image_id=image_id, digest=None)
    return Pin(ref=chosen, image_id=image_id, digest=chosen.rsplit("@", 1)[1])


def digest_of(ref: str | None) -> str | None:
    """``sha256:…`` of a ``repo@sha256:…`` reference; None for an image id or nothing."""
    if ref is None or "@" not in ref:
        return None
    return ref.rsplit("@", 1)[1]


def release_changed(
    pinned: str | None, image_id: str | None, digest_ref: str | None, new: Pin
) -> bool:
    """Does a freshly resolved tag (``redeploy``) differ from what a revision runs?

    Digests are compared when both sides have one (the registry's view);
    otherwise image ids. An unresolved revision always takes the new pin.
    """
    current_digest = digest_of(digest_ref) or digest_of(pinned)
    if new.digest is not None and current_digest is not None:
        return new.digest != current_digest
    current_id = image_id or (pinned if pinned is not None and "@" not in pinned else None)
    return current_id != new.image_id


@dataclass(frozen=True, slots=True)
class ReleaseRow:
    """One revision as a revert sees it."""

    revision: int
    pinned_image: str | None
    image_id: str | None
    digest_ref: str | None = None
    origin: str = Origin.CREATE.value

    @property
    def pull_ref(self) -> str | None:
        if self.digest_ref is not None:
            return self.digest_ref
        if self.pinned_image is not None and "@" in self.pinned_image:
            return self.pinned_image
        return None

    @property
    def digest(self) -> str | None:
        return digest_of(self.pull_ref)

    @property
    def target(self) -> str | None:
        """What a revert to this row pins: the digest ref (re-pullable), else the image id."""
        return self.pull_ref or self.image_id or self.pinned_image


def resolve_revert(ref: str, rows: Sequence[ReleaseRow], name: str) -> ReleaseRow:
    """The revision a ``revert NAME REF`` means.

    REF is a revision number, a manifest digest (``sha256:…`` or
    ``repo@sha256:…``) or an image id, or a prefix of either of at least
    ``MIN_ID_PREFIX`` hex characters. Raises SpecError (bad REF), NotFound,
    or Conflict (a prefix that names two different images).
    """
    ref = ref.strip()
    if _REVISION_RE.fullmatch(ref):
        number = int(ref)
        row = next((r for r in rows if r.revision == number), None)
        if row is None:
            raise NotFound(f"revision {number} of {name!r} does not exist (any more)")
        if row.target is None:
            raise Conflict(f"revision {number} of {name!r} never resolved an image")
        return row
    if "@" in ref:
        matches = [r for r in rows if r.pull_ref == ref]
        if not matches:
            raise NotFound(f"image {ref} is not in the history of {name!r}")
        return max(matches, key=lambda r: r.revision)
    hexpart = ref.removeprefix("sha256:")
    if not _HEX_RE.fullmatch(hexpart) or len(hexpart) > 64:
        raise SpecError(
            "ref",
            "must be a revision number, a digest (sha256:<hex>, repo@sha256:<hex>) "
            f"or an image id prefix of at least {MIN_ID_PREFIX} hex characters",
        )
    if len(hexpart) < MIN_ID_PREFIX:
        raise SpecError(
            "ref",
            f"an image id or digest prefix needs at least {MIN_ID_PREFIX} hex characters "
            f"(got {len(hexpart)})",
        )
    wanted = "sha256:" + hexpart
    matches = [
        r
        for r in rows
        if r.target is not None
        and any(v is not None and v.startswith(wanted) for v in (r.image_id, r.digest))
    ]
    if not matches:
        raise NotFound(f"image {ref} is not in the history of {name!r}")
    images = {r.image_id or r.target for r in matches}
    if len(images) > 1:
        raise Conflict(f"{ref} is ambiguous: {', '.join(sorted(str(i) for i in images))}")
    return max(matches, key=lambda r: r.revision)


@dataclass(frozen=True, slots=True)
class PruneRow:
    revision: int
    release: bool  # its image differs from the revision before it (a release starts here)


def revisions_to_prune(
    rows: Sequence[PruneRow],
    *,
    keep_revisions: int,
    keep_releases: int,
    protected: Iterable[int] = (),
) -> list[int]:
    """Revisions to delete: all but the newest ``keep_revisions``, the newest
    ``keep_releases`` releases and ``protected`` (the current and stable ones).
    """
    ordered = sorted(rows, key=lambda r: r.revision, reverse=True)
    keep = {r.revision for r in ordered[: max(keep_revisions, 0)]}
    keep |= {r.revision for r in [r for r in ordered if r.release][: max(keep_releases, 0)]}
    keep |= set(protected)
    return sorted(r.revision for r in ordered if r.revision not in keep)
