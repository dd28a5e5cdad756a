"""The executor's decisions (patrd/control/decisions.py): tables."""

from __future__ import annotations

import pytest

from patrd.control.decisions import (
    STABLE_AFTER_S,
    ImageSource,
    failure_note,
    forgiven_slots,
    hide_status,
    image_source,
    next_failure,
    pull_block_delay,
    scale_down_removes_volumes,
    slot_volumes,
)
from patrd.control.reconcile import SlotHealth
from patrd.model.deployment import Status

REF = "reg.example/acme/web:v1"
ID = "sha256:" + "a" * 64
DIGEST = "reg.example/acme/web@sha256:" + "b" * 64

IMAGE_SOURCES = [
    # An unresolved revision (create, image or tag changed): the tag, by the pull policy.
    ((None, None, None), ImageSource(by_tag=True, local=None, pull_ref=None, shown=REF)),
    # Pinned with both: the node's copy by id first, then a pull by digest.
    ((DIGEST, ID, DIGEST), ImageSource(False, local=ID, pull_ref=DIGEST, shown=DIGEST)),
    # Resolved, no digest (an image built on the node): by id only.
    ((None, ID, None), ImageSource(False, local=ID, pull_ref=None, shown=ID)),
    # Only a digest recorded (a push): pulled by digest when not on the node.
    ((None, None, DIGEST), ImageSource(False, local=None, pull_ref=DIGEST, shown=DIGEST)),
    # A revert/redeploy pin by digest reference, id unknown: the digest pulls.
    ((DIGEST, None, None), ImageSource(False, local=None, pull_ref=DIGEST, shown=DIGEST)),
    # A pin by image id (no "@"): the node's copy, nothing to pull by.
    ((ID, None, None), ImageSource(False, local=ID, pull_ref=None, shown=ID)),
]


@pytest.mark.parametrize(("pin", "expected"), IMAGE_SOURCES)
def test_image_source(
    pin: tuple[str | None, str | None, str | None], expected: ImageSource
) -> None:
    assert image_source(REF, *pin) == expected


@pytest.mark.parametrize(
    ("failures", "refused", "delay"),
    [(1, False, 1.0), (3, False, 4.0), (9, False, 256.0), (9, True, 30.0), (2, True, 2.0)],
)
def test_pull_block_delay(failures: int, refused: bool, delay: float) -> None:
    assert pull_block_delay(failures, refused=refused) == delay


@pytest.mark.parametrize(
    ("before", "failures", "retry_at", "note"),
    [
        (None, 1, 101.0, "failure #1, next attempt after 1s"),
        (SlotHealth(1, 0.0, "x"), 2, 102.0, "failure #2, next attempt after 2s"),
        (SlotHealth(4, 0.0, "x"), 5, 116.0, "failure #5, next attempt after 16s"),
        (SlotHealth(20, 0.0, "x"), 21, 400.0, "failure #21, next attempt after 300s"),
    ],
)
def test_next_failure(before: SlotHealth | None, failures: int, retry_at: float, note: str) -> None:
    health = next_failure(before, "exited with code 1", now=100.0)
    assert health == SlotHealth(failures, retry_at, "exited with code 1")
    assert failure_note(health) == note


NOW = 1000.0
FORGIVEN = [
    # (slot, ready since) of ready instances; health; forgiven slots
    ([(0, NOW - STABLE_AFTER_S)], {0: SlotHealth(3)}, {0}),  # ready long enough
    ([(0, NOW - STABLE_AFTER_S + 0.1)], {0: SlotHealth(3)}, set()),  # not yet
    ([(0, NOW - 60)], {}, set()),  # nothing to forgive
    ([(0, NOW - 60)], {0: SlotHealth(0, retry_at=5.0)}, set()),  # a zero count stays as is
    ([(1, NOW - 60)], {0: SlotHealth(2), 1: SlotHealth(2)}, {1}),  # only the ready slot
    ([], {0: SlotHealth(2)}, set()),  # nothing ready
]


@pytest.mark.parametrize(("ready", "health", "slots"), FORGIVEN)
def test_forgiven_slots(
    ready: list[tuple[int, float]], health: dict[int, SlotHealth], slots: set[int]
) -> None:
    assert forgiven_slots(ready, health, NOW) == slots


REMOVES = [
    # slot, replicas, running, slot_still_used → volumes removed
    (1, 1, True, False, True),  # scale 2 → 1: slot 1 goes, with its volumes
    (0, 0, True, False, True),
    (1, 2, True, False, False),  # not a scale-down: a replacement
    (1, 1, False, False, False),  # a stop (or delete) keeps them
    (1, 1, True, True, False),  # another container of the slot is still there
]


@pytest.mark.parametrize(("slot", "replicas", "running", "used", "removes"), REMOVES)
def test_scale_down_removes_volumes(
    slot: int, replicas: int, running: bool, used: bool, removes: bool
) -> None:
    got = scale_down_removes_volumes(slot, replicas, running=running, slot_still_used=used)
    assert got is removes


FOUND = [
    ("web-data-1", "data", 1),
    ("web-cache-1", "cache", 1),
    ("patrd-web-data-1", "data", 1),  # an adopted older name, same labels
    ("web-data-0", "data", 0),
    ("web-old-1", "old", 1),  # no longer declared: left alone
]


@pytest.mark.parametrize(
    ("slot", "removed"),
    [(1, ["web-data-1", "web-cache-1", "patrd-web-data-1"]), (0, ["web-data-0"]), (2, [])],
)
def test_slot_volumes(slot: int, removed: list[str]) -> None:
    assert slot_volumes(FOUND, declared={"data", "cache"}, slot=slot) == removed


HIDDEN = [
    # previous, planned, has_actions, rechecking, in_rollout → hidden
    (Status.RUNNING, Status.DEPLOYING, False, True, False, True),  # adopted, re-checked
    (Status.RUNNING, Status.DEPLOYING, True, True, False, False),  # it is changing
    (Status.RUNNING, Status.DEPLOYING, False, False, False, False),  # nothing checks
    (Status.RUNNING, Status.DEPLOYING, False, True, True, False),  # a rollout says so
    (Status.DEPLOYING, Status.DEPLOYING, False, True, False, False),  # nothing to keep
    (Status.RUNNING, Status.ERRORED, False, True, False, False),  # bad news is never hidden
]


@pytest.mark.parametrize(
    ("previous", "planned", "actions", "rechecking", "rollout", "hidden"), HIDDEN
)
def test_hide_status(
    previous: Status, planned: Status, actions: bool, rechecking: bool, rollout: bool, hidden: bool
) -> None:
    got = hide_status(
        previous, planned, has_actions=actions, rechecking=rechecking, in_rollout=rollout
    )
    assert got is hidden
