"""The autoscaler (patrd/control/autoscale.py): its rule, its decisions, its spec and
config fields (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from patrd.control.autoscale import (
    Decision,
    Direction,
    Observation,
    Policy,
    ScaleState,
    decide,
    recommend,
)
from patrd.model.errors import ConfigError, SpecError
from patrd.model.replicas import effective_replicas, eligible
from patrd.model.spec import parse_create, parse_update
from patrd.settings import config as config_mod
from tests.support.observed import deployment_record

# --- autoscaler ------------------------------------------------------------------------

P = Policy(min=1, max=4, target=0.8, window_s=300, stabilization_s=300, tolerance=0.1)


@pytest.mark.parametrize(
    ("current", "usage", "expected"),
    [
        (1, 1.0, 2),  # ceil(1 * 1.0 / 0.8) = 2
        (2, 1.0, 3),  # ceil(2.5)
        (3, 1.0, 4),  # ceil(3.75)
        (4, 1.0, 4),  # capped at max
        (1, 0.85, 1),  # within tolerance (ratio 1.0625)
        (2, 0.72, 2),  # within tolerance (ratio 0.9)
        (2, 0.71, 2),  # ceil(2 * 0.8875) = 2
        (2, 0.3, 1),  # ceil(0.75)
        (4, 0.1, 1),  # ceil(0.5)
        (3, 0.0, 1),  # min
        (2, 0.8 * 1.5, 3),  # exact: no float rounding up to 4
    ],
)
def test_recommend_is_the_hpa_rule(current: int, usage: float, expected: int) -> None:
    assert recommend(P, current, usage) == expected


def run(
    policy: Policy, current: int, usages: Sequence[tuple[float, float | None]]
) -> list[Decision]:
    state = ScaleState()
    out = []
    for at, usage in usages:
        decision, state = decide(policy, current, Observation(at, usage, 1), state)
        out.append(decision)
        current = decision.replicas
    return out


def test_scale_up_only_after_a_full_window_above_target() -> None:
    # Above target from t=0; the window is 300 s: no change before t=300.
    seq = [(float(t), 1.0) for t in range(0, 301, 15)]
    decisions = run(P, 1, seq)
    assert all(d.direction == Direction.HOLD for d in decisions[:-1])
    assert decisions[-1].direction == Direction.UP and decisions[-1].replicas == 2
    assert "above target 80%" in decisions[-1].reason


def test_a_dip_below_target_restarts_the_up_window() -> None:
    seq = [(float(t), 1.0) for t in range(0, 200, 15)] + [(200.0, 0.5)]
    seq += [(float(t), 1.0) for t in range(215, 560, 15)]
    decisions = run(P, 1, seq)
    ups = [(seq[i][0], d.replicas) for i, d in enumerate(decisions) if d.direction == "up"]
    assert ups[0][0] >= 215 + 300, ups  # only a full window after the dip


def test_scale_up_uses_the_window_mean_and_is_capped() -> None:
    small = Policy(min=1, max=3, target=0.5, window_s=30, stabilization_s=300)
    decisions = run(small, 1, [(0.0, 1.0), (15.0, 1.0), (30.0, 1.0)])
    assert decisions[-1].replicas == 2  # ceil(1 * 1.0 / 0.5)
    decisions = run(small, 2, [(0.0, 1.0), (15.0, 1.0), (30.0, 1.0)])
    assert decisions[-1].replicas == 3 and "capped at max 3" in decisions[-1].reason


def test_scale_down_uses_the_highest_recommendation_of_the_stabilization_window() -> None:
    # 3 instances; usage falls to 0.4 (→ 2) then 0.1 (→ 1).
    seq = [(float(t), 0.4) for t in range(0, 301, 15)]
    decisions = run(P, 3, seq)
    assert [d.replicas for d in decisions[:-1]] == [3] * (len(seq) - 1)
    assert decisions[-1].direction == "down" and decisions[-1].replicas == 2
    # At 2 instances a short spike to 0.9 (recommendation 3 = ceil(2 * 0.9/0.8))
    # keeps the count from dropping to 1 for a whole stabilization window.
    state = ScaleState()
    current = 2
    seq2 = [(0.0, 0.9)] + [(float(t), 0.05) for t in range(15, 330, 15)]
    downs = []
    for at, usage in seq2:
        d, state = decide(P, current, Observation(at, usage, 2), state)
        if d.changed:
            downs.append((at, d.replicas))
            current = d.replicas
    assert downs == [(315.0, 1)], downs


def test_no_data_holds_and_restart_needs_a_full_window() -> None:
    decisions = run(P, 2, [(0.0, None), (15.0, None)])
    assert all(d.direction == "hold" and d.usage is None for d in decisions)
    # A fresh state (daemon restart) never scales down at once.
    d, _ = decide(P, 3, Observation(1000.0, 0.0, 3), ScaleState())
    assert d.direction == "hold"


def test_current_is_clamped_to_min_and_max() -> None:
    d, _ = decide(P, 9, Observation(0.0, 0.8, 1), ScaleState())
    assert d.current == 4


def test_effective_replicas_and_eligibility() -> None:
    ranged = deployment_record({"name": "web", "scale": {"min": 2, "max": 5}}, replicas=4)
    assert eligible(ranged.spec) and effective_replicas(ranged) == 4
    assert (
        effective_replicas(deployment_record({"name": "web", "scale": {"min": 2, "max": 5}})) == 2
    )
    assert (
        effective_replicas(deployment_record({"name": "web", "scale": {"min": 2, "max": 3}}, 9))
        == 3
    )
    assert (
        effective_replicas(deployment_record({"name": "web", "scale": {"min": 2, "max": 3}}, 1))
        == 2
    )
    fixed = deployment_record({"name": "web", "scale": {"min": 2, "max": 2}}, replicas=5)
    assert not eligible(fixed.spec) and effective_replicas(fixed) == 2


def test_no_autoscaling_with_volumes() -> None:
    vol = {"data": {"path": "/data", "size_gb": 1}}
    with_volume = deployment_record(
        {"name": "db", "scale": {"min": 2, "max": 2}, "volumes": vol}, 5
    )
    assert with_volume.spec.volumes  # issue 6's field, as it landed
    assert not eligible(with_volume.spec)
    assert effective_replicas(with_volume) == 2  # a stored count is ignored
    with pytest.raises(SpecError) as err:  # and a range is refused outright (issue 6)
        parse_create(
            {"name": "db", "image": "x", "ports": {"80": "http"}, "volumes": vol,
             "scale": {"min": 1, "max": 3}},
            region="local",
        )  # fmt: skip
    assert err.value.field.startswith("scale")


def test_target_cpu_is_a_percentage() -> None:
    spec = parse_create(
        {"name": "web", "image": "x", "ports": {"80": "http"}, "scale": {"max": 3}},
        region="local",
    )
    assert spec.scale.target_cpu == 80
    assert spec.to_json()["scale"] == {"min": 1, "max": 3, "target_cpu": 80}
    assert parse_update(spec, {"scale": {"target_cpu": 50}}).scale.target_cpu == 50
    assert parse_update(spec, {"scale": {"max": 4}}).scale.target_cpu == 80  # kept
    for bad in (0.8, 9, 101, "80", True):
        with pytest.raises(SpecError) as err:
            parse_update(spec, {"scale": {"target_cpu": bad}})
        assert err.value.field == "scale.target_cpu"


# --- config ---------------------------------------------------------------------------


def test_config_sections_and_errors() -> None:
    cfg = config_mod.parse(
        {
            "autoscale": {"window_s": 4, "stabilization_s": 6, "interval_s": 1},
            "metrics": {"interval_s": 2, "cgroup_root": "cg"},
            "cost": {"vcpu_month": 12.5, "currency": "EUR"},
            "logs": {"retention_s": 60, "keep_bytes_per_instance": 0},
        },
        base_dir=Path("/etc/patrd"),
    )
    assert (cfg.autoscale.window_s, cfg.autoscale.stabilization_s) == (4.0, 6.0)
    assert cfg.metrics.cgroup_root == Path("/etc/patrd/cg")
    assert cfg.cost.vcpu_month == 12.5 and cfg.cost.currency == "EUR"
    assert cfg.logs.keep_bytes_per_instance == 0
    for raw, key in (
        ({"autoscale": {"tolerance": 1.5}}, "autoscale.tolerance"),
        ({"autoscale": {"window": 3}}, "autoscale.window"),
        ({"cost": {"vcpu_month": -1}}, "cost.vcpu_month"),
        ({"metrics": {"interval_s": 0}}, "metrics.interval_s"),
    ):
        with pytest.raises(ConfigError) as err:
            config_mod.parse(raw, base_dir=Path("."))
        assert err.value.key == key
