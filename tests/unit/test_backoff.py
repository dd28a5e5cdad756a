"""The one Backoff policy: delays, cap, jitter, reset after a stable run."""

from __future__ import annotations

import pytest

from patrd.kit.backoff import Backoff, BackoffState


@pytest.mark.parametrize(
    ("policy", "failures", "rand", "expected"),
    [
        (Backoff(1.0, 30.0), 0, 1.0, 0.0),
        (Backoff(1.0, 30.0), -3, 1.0, 0.0),
        (Backoff(1.0, 30.0), 1, 1.0, 1.0),
        (Backoff(1.0, 30.0), 2, 1.0, 2.0),
        (Backoff(1.0, 30.0), 5, 1.0, 16.0),
        (Backoff(1.0, 30.0), 6, 1.0, 30.0),
        (Backoff(1.0, 30.0), 200, 1.0, 30.0),
        (Backoff(0.5, 30.0), 3, 1.0, 2.0),
        (Backoff(1.0, 300.0, factor=3.0), 3, 1.0, 9.0),
        (Backoff(5.0, 2.0), 1, 1.0, 2.0),  # cap below initial: the cap wins
        (Backoff(300.0, 21600.0, jitter=0.25), 1, 0.0, 225.0),
        (Backoff(300.0, 21600.0, jitter=0.25), 1, 1.0, 300.0),
        (Backoff(300.0, 21600.0, jitter=0.25), 2, 0.5, 525.0),
        (Backoff(300.0, 21600.0, jitter=0.25), 20, 0.0, 16200.0),
        (Backoff(1.0, 30.0, jitter=1.0), 3, 0.0, 0.0),
    ],
)
def test_delay_table(policy: Backoff, failures: int, rand: float, expected: float) -> None:
    assert policy.delay(failures, rand) == pytest.approx(expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_s": -1.0, "cap_s": 1.0},
        {"initial_s": 1.0, "cap_s": -1.0},
        {"initial_s": 1.0, "cap_s": 1.0, "factor": 0.5},
        {"initial_s": 1.0, "cap_s": 1.0, "jitter": 1.5},
        {"initial_s": 1.0, "cap_s": 1.0, "reset_after_s": -1.0},
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


# (event, time) -> expected delay after each "fail"; "start" marks a run beginning.
STABLE = Backoff(1.0, 30.0, reset_after_s=60.0)


@pytest.mark.parametrize(
    ("events", "delays"),
    [
        # quick crashes double
        (
            [("start", 0), ("fail", 1), ("start", 2), ("fail", 3), ("start", 5), ("fail", 6)],
            [1.0, 2.0, 4.0],
        ),
        # a run of 60 s or more before the crash starts the count over
        (
            [("start", 0), ("fail", 1), ("start", 2), ("fail", 3), ("start", 5), ("fail", 65)],
            [1.0, 2.0, 1.0],
        ),
        # 59.9 s is not stable
        ([("start", 0), ("fail", 1), ("start", 2), ("fail", 61.9)], [1.0, 2.0]),
        # a failure without a recorded start never resets
        ([("fail", 0), ("fail", 1000), ("fail", 5000)], [1.0, 2.0, 4.0]),
        # success resets
        ([("fail", 0), ("fail", 1), ("ok", 2), ("fail", 3)], [1.0, 2.0, 1.0]),
    ],
)
def test_state_table(events: list[tuple[str, float]], delays: list[float]) -> None:
    state = BackoffState(STABLE)
    got = []
    for kind, now in events:
        if kind == "start":
            state.started(now)
        elif kind == "fail":
            got.append(state.failed(now))
        else:
            state.succeeded()
    assert got == delays


def test_without_reset_after_a_long_run_still_counts() -> None:
    state = BackoffState(Backoff(1.0, 30.0))
    state.started(0.0)
    assert state.failed(1.0) == 1.0
    state.started(2.0)
    assert state.failed(10_000.0) == 2.0
    assert state.pending == 2.0
    state.succeeded()
    assert state.pending == 0.0
