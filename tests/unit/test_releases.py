"""Pinned releases: the pure decisions (patrd/model/releases.py) and the seed's autoscale rule."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from patrd.control.autoscale import (
    Direction,
    Observation,
    Policy,
    ScaleState,
    decide,
    scale_up_count,
)
from patrd.model.deployment import Intent, Status
from patrd.model.errors import ConfigError, Conflict, NotFound, SpecError
from patrd.model.releases import (
    MIN_ID_PREFIX,
    Origin,
    Pin,
    PruneRow,
    ReleaseRow,
    pin_from_inspect,
    release_changed,
    resolve_revert,
    revisions_to_prune,
    same_source,
)
from patrd.model.spec import DeploymentSpec, parse_create, parse_update
from patrd.settings.config import parse
from patrd.state.store import Store

ID1 = "sha256:" + "1" * 64
ID2 = "sha256:" + "2" * 64
D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
REPO = "127.0.0.1:5000/apps/web"


def spec(**extra: object) -> DeploymentSpec:
    body = {"name": "web", "image": "apps/web", "tag": "v1", "ports": {"80": "http"}, **extra}
    return parse_create(body, region="")


# --- what a resolved tag pins -------------------------------------------------


@pytest.mark.parametrize(
    ("digests", "expected"),
    [
        ([], Pin(ID1, ID1, None)),  # built here, never pushed: the image id
        ([f"{REPO}@{D1}"], Pin(f"{REPO}@{D1}", ID1, D1)),
        ([f"other/web@{D2}", f"{REPO}@{D1}"], Pin(f"{REPO}@{D1}", ID1, D1)),  # own repo first
        ([f"other/web@{D2}"], Pin(ID1, ID1, None)),  # another registry's name: not ours
    ],
)
def test_pin_from_inspect(digests: list[str], expected: Pin) -> None:
    assert pin_from_inspect(ID1, digests, REPO) == expected


@pytest.mark.parametrize(
    ("change", "carried"),
    [
        ({"env": {"A": "1"}}, True),
        ({"ports": {"80": "http", "81": "http"}}, True),
        ({"scale": {"min": 2, "max": 2}}, True),
        ({"startup_probe": {"port": 80, "path": "/x"}}, True),
        ({"resources": {"cpu": 0.5}}, True),
        ({"tag": "v2"}, False),
        ({"image": "apps/other"}, False),
        ({"registry": "local"}, False),
    ],
)
def test_settings_changes_carry_the_pin_and_image_changes_do_not(
    change: dict[str, object], carried: bool
) -> None:
    """(registry, image and tag are immutable at the API today; the store does not rely on it)"""
    old = spec()
    if set(change) & {"tag", "image", "registry"}:
        new = replace(old, **change)  # type: ignore[arg-type]
    else:
        new = parse_update(old, change)
    assert same_source(old, new) is carried


@pytest.mark.parametrize(
    ("current", "new", "changed"),
    [
        ((f"{REPO}@{D1}", ID1, f"{REPO}@{D1}"), Pin(f"{REPO}@{D1}", ID1, D1), False),
        ((None, ID1, f"{REPO}@{D1}"), Pin(f"{REPO}@{D2}", ID2, D2), True),
        ((None, ID1, None), Pin(ID1, ID1, None), False),  # local-only image, same id
        ((None, ID1, None), Pin(ID2, ID2, None), True),  # the local tag moved
        ((ID1, ID1, None), Pin(f"{REPO}@{D1}", ID1, D1), False),  # reverted by id, same image
        ((None, None, None), Pin(ID1, ID1, None), True),  # never resolved: take it
    ],
)
def test_release_changed(
    current: tuple[str | None, str | None, str | None], new: Pin, changed: bool
) -> None:
    assert release_changed(*current, new) is changed


# --- what a revert REF names ----------------------------------------------------

ROWS = [
    ReleaseRow(1, None, ID1, f"{REPO}@{D1}", "create"),
    ReleaseRow(2, None, ID1, f"{REPO}@{D1}", "settings"),
    ReleaseRow(3, f"{REPO}@{D2}", ID2, f"{REPO}@{D2}", "push"),
    ReleaseRow(4, None, None, None, "create"),  # never resolved (failed before pulling)
]


@pytest.mark.parametrize(
    ("ref", "revision", "target"),
    [
        ("1", 1, f"{REPO}@{D1}"),
        ("3", 3, f"{REPO}@{D2}"),
        (ID1, 2, f"{REPO}@{D1}"),  # image id: the newest revision that ran it
        (ID1[: 7 + MIN_ID_PREFIX], 2, f"{REPO}@{D1}"),
        ("1" * MIN_ID_PREFIX, 2, f"{REPO}@{D1}"),  # bare hex prefix
        (D2, 3, f"{REPO}@{D2}"),  # manifest digest
        ("b" * 20, 3, f"{REPO}@{D2}"),
        (f"{REPO}@{D1}", 2, f"{REPO}@{D1}"),
    ],
)
def test_resolve_revert(ref: str, revision: int, target: str) -> None:
    row = resolve_revert(ref, ROWS, "web")
    assert (row.revision, row.target) == (revision, target)


@pytest.mark.parametrize(
    ("ref", "error", "words"),
    [
        ("9", NotFound, "revision 9"),
        ("4", Conflict, "never resolved"),
        ("1" * (MIN_ID_PREFIX - 1), SpecError, f"at least {MIN_ID_PREFIX}"),
        ("sha256:zz", SpecError, "revision number"),
        ("c" * 20, NotFound, "not in the history"),
        (f"{REPO}@{'sha256:' + 'c' * 64}", NotFound, "not in the history"),
    ],
)
def test_resolve_revert_errors(ref: str, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        resolve_revert(ref, ROWS, "web")


def test_an_ambiguous_prefix_is_refused() -> None:
    rows = [
        ReleaseRow(1, None, "sha256:" + "f" * 12 + "1" * 52, None),
        ReleaseRow(2, None, "sha256:" + "f" * 12 + "2" * 52, None),
    ]
    with pytest.raises(Conflict, match="ambiguous"):
        resolve_revert("f" * 12, rows, "web")


def test_a_revert_to_an_image_without_digest_pins_the_image_id() -> None:
    assert resolve_revert("1", [ReleaseRow(1, None, ID1, None)], "web").target == ID1


# --- which revisions are pruned --------------------------------------------------


def rows(*releases: int, upto: int) -> list[PruneRow]:
    return [PruneRow(n, n in releases) for n in range(1, upto + 1)]


@pytest.mark.parametrize(
    ("table", "keep_revisions", "keep_releases", "protected", "pruned"),
    [
        (rows(1, upto=5), 10, 5, (), []),
        (rows(1, upto=5), 3, 0, (), [1, 2]),
        (rows(1, upto=5), 3, 1, (), [2]),  # release 1 is retained
        (rows(1, 2, 3, upto=8), 2, 2, (), [1, 4, 5, 6]),  # the last 2 releases: 2 and 3
        (rows(1, upto=6), 2, 0, (3,), [1, 2, 4]),  # the stable revision stays
        (rows(upto=4), 0, 0, (4,), [1, 2, 3]),
    ],
)
def test_revisions_to_prune(
    table: list[PruneRow],
    keep_revisions: int,
    keep_releases: int,
    protected: tuple[int, ...],
    pruned: list[int],
) -> None:
    assert (
        revisions_to_prune(
            table, keep_revisions=keep_revisions, keep_releases=keep_releases, protected=protected
        )
        == pruned
    )


def test_pruning_never_drops_a_kept_revision_or_a_retained_release() -> None:
    for upto in range(1, 30):
        for releases in ((1,), (1, 5, 9), tuple(range(1, upto + 1, 3))):
            table = rows(*releases, upto=upto)
            doomed = set(revisions_to_prune(table, keep_revisions=4, keep_releases=2))
            newest = {r.revision for r in table[-4:]}
            last_releases = {r.revision for r in [r for r in table if r.release][-2:]}
            assert not doomed & (newest | last_releases)
            assert len(table) - len(doomed) <= 4 + 2


# --- the store carries pins and prunes --------------------------------------------


def test_store_carries_the_pin_through_settings_and_prunes(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await Store.open(tmp_path / "db.sqlite")
        store.keep_revisions, store.keep_releases = 3, 3
        try:
            created = await store.create_deployment(spec())
            await store.record_image(created.id, 1, ID1, f"{REPO}@{D1}")
            for n in range(5):

                def change(s: DeploymentSpec, n: int = n) -> DeploymentSpec:
                    return parse_update(s, {"env": {"N": str(n)}})

                record = await store.update_spec("web", change)
                assert await store.revision_pin(created.id, record.revision) == (
                    None,
                    ID1,
                    f"{REPO}@{D1}",
                ), n
            pushed = await store.deploy_pushed(lambda s: True, f"{REPO}@{D2}", 1.0)
            assert [r.revision for r in pushed] == [7]
            after = await store.update_spec("web", lambda s: parse_update(s, {"env": {"N": "x"}}))
            assert (await store.revision_pin(created.id, after.revision))[0] == f"{REPO}@{D2}"
            changed = await store.update_spec("web", lambda s: replace(s, tag="v9"))
            assert await store.revision_pin(created.id, changed.revision) == (None, None, None)
            reverted = await store.revert("web", D1[:20])
            assert reverted.pinned_image == f"{REPO}@{D1}"
            kept = await store._all(
                "SELECT revision, origin FROM revisions WHERE deployment_id = ? ORDER BY 1",
                (created.id,),
            )
            # The 3 newest, plus the last 3 releases (revert 10, tag change 9, push 7):
            # release 1 went with the revert; settings revisions 2-6 went earlier.
            assert [r[0] for r in kept] == [7, 8, 9, 10], kept
            assert kept[-1][1] == Origin.REVERT.value
        finally:
            await store.close()

    asyncio.run(scenario())


# --- autoscaling as the seed states it ----------------------------------------------

P = Policy(min=1, max=10, target=0.8, window_s=60, stabilization_s=60, tolerance=0.1)


@pytest.mark.parametrize(
    ("current", "mean", "expected"),
    [
        (1, 0.81, 2),  # inside the tolerance band: still up (the seed's sentence)
        (1, 0.87, 2),
        (4, 0.84, 5),  # ceil(4.2)
        (2, 1.2, 3),  # ceil(3.0)
        (2, 2.0, 5),  # ceil(5.0)
        (9, 0.85, 10),
        (10, 0.95, 10),  # at max
        (3, 0.8, 3),  # at the target: not above it
        (3, 0.5, 3),  # below: never up here
    ],
)
def test_scale_up_count(current: int, mean: float, expected: int) -> None:
    assert scale_up_count(P, current, mean) == expected


@pytest.mark.parametrize("usage", [0.81, 0.84, 0.87])
def test_sustained_use_within_the_tolerance_band_scales_up(usage: float) -> None:
    state, current = ScaleState(), 2
    decisions = []
    for t in range(0, 61, 15):
        decision, state = decide(P, current, Observation(float(t), usage, current), state)
        decisions.append(decision)
        current = decision.replicas
    assert [d.direction for d in decisions[:-1]] == [Direction.HOLD] * 4
    assert decisions[-1].direction == Direction.UP and decisions[-1].replicas == 3


@pytest.mark.parametrize("usage", [0.73, 0.79])
def test_the_tolerance_band_still_keeps_scale_down_from_flapping(usage: float) -> None:
    state, current = ScaleState(), 3
    for t in range(0, 121, 15):
        decision, state = decide(P, current, Observation(float(t), usage, current), state)
        assert decision.direction == Direction.HOLD, (t, decision)


# --- the retention keys ------------------------------------------------------------


def test_retention_keys_have_defaults_and_are_validated(tmp_path: Path) -> None:
    config = parse({}, base_dir=tmp_path)
    assert (config.history.keep_revisions, config.images.keep_releases) == (100, 5)
    config = parse(
        {"history": {"keep_revisions": 10}, "images": {"keep_releases": 2}}, base_dir=tmp_path
    )
    assert (config.history.keep_revisions, config.images.keep_releases) == (10, 2)
    with pytest.raises(ConfigError, match=r"images\.keep_releases"):
        parse({"images": {"keep_releases": 0}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"history\.keep"):
        parse({"history": {"keep": 1}}, base_dir=tmp_path)


def test_a_poll_or_push_to_a_stopped_deployment_is_kept_for_the_next_start(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        store = await Store.open(tmp_path / "db.sqlite")
        try:
            created = await store.create_deployment(spec())
            await store.record_image(created.id, 1, ID1, f"{REPO}@{D1}")
            await store.set_intent("web", Intent.STOP)
            [polled] = await store.deploy_pushed(lambda s: True, f"{REPO}@{D2}", 0.0, Origin.POLL)
            assert (polled.revision, polled.intent, polled.status) == (
                2,
                Intent.STOP,
                Status.STOPPED,
            )
            assert polled.pinned_image == f"{REPO}@{D2}"
            again = await store.deploy_pushed(lambda s: True, f"{REPO}@{D2}", 0.0, Origin.PUSH)
            assert again == [], "the same digest twice is one revision"
            started = await store.set_intent("web", Intent.RUN)
            assert (started.revision, started.pinned_image) == (2, f"{REPO}@{D2}")
            events = await store.list_events(created.id)
            assert any(e.kind == "poll" and "next start" in e.message for e in events)
        finally:
            await store.close()

    asyncio.run(scenario())
