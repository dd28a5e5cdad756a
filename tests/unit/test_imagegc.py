"""The image collector's decision (pure): what patrd pulled and no release keeps."""

from __future__ import annotations

import pytest

from patrd.engine.imagegc import PulledImage, ReleaseImage, retained, select


def pulled(image_id: str, dep: str = "d", revision: int = 1, at: float = 0.0) -> PulledImage:
    return PulledImage(image_id, f"reg/x@{image_id}", dep, revision, at)


def rel(dep: str, revision: int, state: str, image: str | None) -> ReleaseImage:
    return ReleaseImage(dep, revision, state, image)


HISTORY = [
    rel("d", 1, "superseded", "i1"),
    rel("d", 2, "superseded", "i2"),
    rel("d", 3, "superseded", "i3"),
    rel("d", 4, "current", "i4"),
]


@pytest.mark.parametrize(
    ("keep", "removed"),
    [(1, ["i1", "i2", "i3"]), (2, ["i1", "i2"]), (4, []), (9, [])],
)
def test_keeps_the_last_n_releases(keep: int, removed: list[str]) -> None:
    images = [pulled(f"i{n}", at=n) for n in range(1, 5)]
    assert [r.image_id for r in select(images, HISTORY, set(), keep)] == removed


def test_never_what_patrd_did_not_pull() -> None:
    # i1 is old and unused but was never recorded as pulled: not a candidate.
    assert select([pulled("i2")], HISTORY, set(), 1) == [pulled_removal("i2")]


def pulled_removal(image_id: str) -> object:
    [removal] = select([pulled(image_id)], HISTORY, set(), 1)
    return removal


def test_running_and_stable_and_in_use_are_kept() -> None:
    history = [
        rel("d", 1, "superseded", "i1"),
        rel("d", 2, "stable", "i2"),  # runs: the rollouts after it failed
        rel("d", 3, "failed", "i3"),
        rel("d", 4, "failed", "i4"),
        rel("d", 5, "current", None),  # rolling out, image not recorded yet
    ]
    images = [pulled("i1"), pulled("i2"), pulled("i3"), pulled("i4"), pulled("i5", revision=5)]
    # keep 1: i4 (last release), i2 (stable), i5 (pulled for the current revision);
    # i1 is used by a container (say, a user's), so it stays too.
    assert [r.image_id for r in select(images, history, {"i1"}, 1)] == ["i3"]


def test_another_deployment_still_keeps_a_shared_image() -> None:
    history = [*HISTORY, rel("e", 1, "current", "i1")]
    assert "i1" not in [r.image_id for r in select([pulled("i1")], history, set(), 1)]
    assert retained(history, 1)[0] == {"i4", "i1"}


def test_pending_revisions_are_no_releases() -> None:
    history = [
        rel("d", 1, "deployed", "i1"),
        rel("d", 2, "pending", "i2"),
        rel("d", 3, "current", None),
    ]
    keep_ids, current = retained(history, 1)
    assert keep_ids == {"i1"} and current == {("d", 3)}
