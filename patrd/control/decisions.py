"""The executor's small decisions, as pure functions (table-tested in
tests/unit/test_control_decisions.py).

The planner (reconcile.py) decides what to do with containers; these decide
the bookkeeping around it: which image a revision runs and where it comes
from, how a failed start is counted and when that count is forgiven, which
volumes a scale-down removes, and when a planned status is not written.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from patrd.control.reconcile import SlotHealth, backoff_delay
from patrd.model.deployment import Status

STABLE_AFTER_S = 10.0  # a slot ready this long has its crash count reset
PULL_REFUSED_CAP_S = 30.0  # the disk guard may say yes soon: look again at least this often


@dataclass(frozen=True, slots=True)
class ImageSource:
    """Where the image of a revision comes from (docs/design.md, "Pinned releases")."""

    by_tag: bool  # an unresolved revision: the tag, by the pull policy
    local: str | None  # else first the node's copy (image id, or a pinned reference)
    pull_ref: str | None  # then a pull by this digest reference
    shown: str  # what events and errors call it


def image_source(
    ref: str, pinned: str | None, image_id: str | None, digest_ref: str | None
) -> ImageSource:
    """The fallback order of a pinned revision: the image id on the node, then a pull
    by digest; never the tag again. A pin without a digest (an image built on the
    node) has nothing to pull by."""
    shown = pinned or digest_ref or image_id or ref
    if not (pinned or image_id or digest_ref):
        return ImageSource(by_tag=True, local=None, pull_ref=None, shown=shown)
    pull_ref = digest_ref or (pinned if pinned is not None and "@" in pinned else None)
    local = image_id or (pinned if pull_ref is None else None)
    return ImageSource(by_tag=False, local=local, pull_ref=pull_ref, shown=shown)


def pull_block_delay(failures: int, *, refused: bool) -> float:
    """How long a deployment waits before it tries its image again: the restart
    backoff, capped at 30 s when only the disk guard said no."""
    delay = backoff_delay(failures)
    return min(delay, PULL_REFUSED_CAP_S) if refused else delay


def next_failure(health: SlotHealth | None, reason: str, now: float) -> SlotHealth:
    """One more failed start of a slot: its count, and when it may be tried again."""
    failures = (health.failures if health is not None else 0) + 1
    return SlotHealth(failures=failures, retry_at=now + backoff_delay(failures), last_error=reason)


def failure_note(health: SlotHealth) -> str:
    return f"failure #{health.failures}, next attempt after {backoff_delay(health.failures):g}s"


def forgiven_slots(
    ready_since: Iterable[tuple[int, float]], health: Mapping[int, SlotHealth], now: float
) -> set[int]:
    """Slots whose crash count is reset: an instance of the slot has been ready for
    ``STABLE_AFTER_S`` (``ready_since``: (slot, ready since) of each ready instance)."""
    return {
        slot
        for slot, since in ready_since
        if (h := health.get(slot)) is not None and h.failures and now - since >= STABLE_AFTER_S
    }


def scale_down_removes_volumes(
    slot: int, replicas: int, *, running: bool, slot_still_used: bool
) -> bool:
    """Whether removing an instance also removes its slot's volumes: only a
    scale-down (confirmed at the API) does, i.e. the slot is at or above the
    replica count, the deployment runs (a stop keeps them; a delete removes
    them itself when asked), and no other container of the slot is left."""
    return running and slot >= replicas and not slot_still_used


def slot_volumes(
    found: Iterable[tuple[str, str, int]], *, declared: Collection[str], slot: int
) -> list[str]:
    """The Docker volumes of ``slot`` the spec declares. ``found``: (docker name,
    declared volume, slot) by their labels, so an adopted older name counts too."""
    return [name for name, volume, s in found if s == slot and volume in declared]


def hide_status(
    previous: Status,
    planned: Status,
    *,
    has_actions: bool,
    rechecking: bool,
    in_rollout: bool,
) -> bool:
    """Keep ``running`` while adopted instances are re-checked (``rechecking``: a
    startup check runs), instead of saying "deploying" about a deployment that
    was running a moment ago and that nothing is changing."""
    return (
        previous is Status.RUNNING
        and planned is Status.DEPLOYING
        and not has_actions
        and rechecking
        and not in_rollout
    )


def waits_to_announce(announced: Mapping[int, str], waiting: Mapping[int, str]) -> dict[int, str]:
    """Slot → node of the waits (``Plan.waiting``) not told yet: a slot that
    starts waiting, or waits for another node. ``announced``: the waits told
    so far that still hold (the caller replaces it with ``waiting``, so a wait
    that ends and comes back is told again)."""
    return {slot: node for slot, node in waiting.items() if announced.get(slot) != node}
