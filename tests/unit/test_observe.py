"""Issue 7, pure parts: autoscaler rule, cost, cgroup parsers (v1 and v2 fixture trees),
Docker stats, rates, history rollups, log timestamps, kept logs, proxy counters, Prometheus."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from patrd.control.autoscale import (
    AutoscaleStats,
    Decision,
    Direction,
    Observation,
    Policy,
    ScaleState,
    decide,
    recommend,
)
from patrd.model.deployment import DeploymentRecord, Intent, Status
from patrd.model.errors import ConfigError, SpecError
from patrd.model.instances import ContainerState, Instance
from patrd.model.replicas import effective_replicas, eligible
from patrd.model.spec import parse_create, parse_update
from patrd.observe.cost import Node, capacity, estimate
from patrd.observe.logs import LogKeeper, LogLine, LogQuery, format_ts, parse_frame, parse_ts
from patrd.observe.metrics import (
    CgroupReader,
    Counters,
    History,
    InstanceSample,
    counters_from_docker_stats,
    parse_blkio,
    parse_cpu_max,
    parse_io_stat,
    parse_net_dev,
    rates,
)
from patrd.observe.prometheus import Exposition, Sources
from patrd.proxy.stats import LATENCY_BOUNDS, DeploymentCounters
from patrd.settings import config as config_mod
from patrd.settings.config import CostConfig, LogsConfig

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


def _record(body: dict[str, Any], replicas: int | None = None) -> DeploymentRecord:
    spec = parse_create({"image": "x", "ports": {"80": "http"}, **body}, region="local")
    return DeploymentRecord(
        id="d1",
        name=spec.name,
        revision=1,
        spec=spec,
        intent=Intent.RUN,
        status=Status.RUNNING,
        status_reason="",
        created_at=0.0,
        updated_at=0.0,
        replicas=replicas,
    )


def test_effective_replicas_and_eligibility() -> None:
    ranged = _record({"name": "web", "scale": {"min": 2, "max": 5}}, replicas=4)
    assert eligible(ranged.spec) and effective_replicas(ranged) == 4
    assert effective_replicas(_record({"name": "web", "scale": {"min": 2, "max": 5}})) == 2
    assert effective_replicas(_record({"name": "web", "scale": {"min": 2, "max": 3}}, 9)) == 3
    assert effective_replicas(_record({"name": "web", "scale": {"min": 2, "max": 3}}, 1)) == 2
    fixed = _record({"name": "web", "scale": {"min": 2, "max": 2}}, replicas=5)
    assert not eligible(fixed.spec) and effective_replicas(fixed) == 2


def test_no_autoscaling_with_volumes() -> None:
    vol = {"data": {"path": "/data", "size_gb": 1}}
    with_volume = _record({"name": "db", "scale": {"min": 2, "max": 2}, "volumes": vol}, 5)
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


# --- cost and capacity --------------------------------------------------------------------

PRICES = CostConfig(currency="EUR", vcpu_month=10.0, gib_ram_month=2.0, gib_volume_month=0.1)


def test_cost_is_per_instance_times_min_and_max() -> None:
    spec = parse_create(
        {
            "name": "web",
            "image": "x",
            "ports": {"80": "http"},
            "scale": {"min": 2, "max": 5},
            "resources": {"cpu": 0.5, "memory_mb": 1536},
        },
        region="local",
    )
    one = 0.5 * 10 + 1.5 * 2  # 8.0 per instance-month
    cost = estimate(spec, PRICES)
    assert (cost.min, cost.max, cost.currency) == (2 * one, 5 * one, "EUR")
    assert cost.to_json() == {"min": 16.0, "max": 40.0, "currency": "EUR", "period": "month"}
    assert estimate(spec, CostConfig()).to_json()["max"] == 0.0  # zero by default


def test_cost_counts_each_instances_volumes() -> None:
    spec = parse_create(
        {
            "name": "db",
            "image": "x",
            "ports": {"80": "http"},
            "scale": {"min": 3, "max": 3},
            "resources": {"cpu": 1, "memory_mb": 1024},
            "volumes": {"a": {"path": "/a", "size_gb": 10}, "b": {"path": "/b", "size_gb": 5}},
        },
        region="local",
    )
    one = 10 + 2 + 15 * 0.1
    assert estimate(spec, PRICES).min == round(3 * one, 2) == 40.5


def test_cost_rounds_to_cents() -> None:
    spec = parse_create(
        {"name": "web", "image": "x", "ports": {"80": "http"}, "resources": {"cpu": 0.25}},
        region="local",
    )
    prices = CostConfig(vcpu_month=3.333, gib_ram_month=0.0)
    assert estimate(spec, prices).min == 0.83


def test_capacity_warns_when_max_does_not_fit() -> None:
    node = Node(cpus=2.0, memory_mb=4096)
    spec = parse_create(
        {
            "name": "web",
            "image": "x",
            "ports": {"80": "http"},
            "scale": {"min": 1, "max": 4},
            "resources": {"cpu": 0.5, "memory_mb": 512},
        },
        region="local",
    )
    ok = capacity(spec, [], node)
    assert ok.cpu_fits and ok.memory_fits and ok.warning is None
    assert ok.to_json()["required"] == {"cpu": 2.0, "memory_mb": 2048}
    other = parse_create(
        {"name": "db", "image": "x", "ports": {"80": "http"}, "resources": {"memory_mb": 3000}},
        region="local",
    )
    tight = capacity(spec, [(other, 1)], node)
    assert not tight.cpu_fits and not tight.memory_fits
    assert tight.warning is not None and "CPU" in tight.warning and "memory" in tight.warning
    assert tight.to_json()["fits"] is False


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


# --- cgroup readers -----------------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    5000      10    0    0    0     0          0         0     5000      10    0    0    0     0       0          0
  eth0: 1234567    1000    0    0    0     0          0         0   765432     900    0    0    0     0       0          0
"""  # noqa: E501


def test_cgroup_v2_tree(tmp_path: Path) -> None:
    cid = "a" * 64
    scope = f"sys/system.slice/docker-{cid}.scope"
    _write(
        tmp_path,
        {
            "sys/cgroup.controllers": "cpu io memory pids\n",
            f"{scope}/cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
            f"{scope}/cpu.max": "150000 100000\n",
            f"{scope}/memory.current": "104857600\n",
            f"{scope}/memory.stat": "anon 50000000\nfile 60000000\ninactive_file 20971520\n",
            f"{scope}/memory.max": "268435456\n",
            f"{scope}/io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2\n"
            "8:16 rbytes=1000 wbytes=0 rios=1 wios=0\n",
            f"{scope}/cgroup.procs": "4242\n4243\n",
            "proc/4242/net/dev": NET_DEV,
        },
    )
    reader = CgroupReader(tmp_path / "sys", proc=tmp_path / "proc", limits_every=1)
    assert reader.v2 and reader.layout == "cgroup v2"
    c = reader.read(cid)
    assert c is not None
    assert c.cpu_ns == 2_500_000_000
    assert c.cpu_limit == 1.5
    assert c.memory_bytes == 104857600 - 20971520
    assert c.memory_limit == 268435456
    assert (c.read_bytes, c.write_bytes) == (5096, 8192)
    assert (c.rx_bytes, c.tx_bytes) == (1234567, 765432)
    assert c.source == "cgroup v2"
    (tmp_path / f"{scope}/cpu.max").write_text("max 100000\n")
    (tmp_path / f"{scope}/memory.max").write_text("max\n")
    c2 = reader.read(cid)
    assert c2 is not None and c2.cpu_limit is None and c2.memory_limit is None
    assert reader.read("b" * 64) is None  # not found: the sampler asks Docker instead


def test_cgroup_v2_cgroupfs_driver_path(tmp_path: Path) -> None:
    cid = "c" * 64
    _write(
        tmp_path,
        {
            "cgroup.controllers": "cpu memory\n",
            f"docker/{cid}/cpu.stat": "usage_usec 1\n",
            f"docker/{cid}/cpu.max": "max 100000\n",
            f"docker/{cid}/memory.current": "10\n",
            f"docker/{cid}/memory.stat": "inactive_file 4\n",
            f"docker/{cid}/memory.max": "max\n",
            f"docker/{cid}/cgroup.procs": "",
        },
    )
    c = CgroupReader(tmp_path).read(cid)
    assert c is not None and c.memory_bytes == 6 and c.rx_bytes is None and c.read_bytes is None


def test_cgroup_v1_tree(tmp_path: Path) -> None:
    cid = "d" * 64
    _write(
        tmp_path,
        {
            f"sys/cpuacct/docker/{cid}/cpuacct.usage": "7000000000\n",
            f"sys/cpu/docker/{cid}/cpu.cfs_quota_us": "50000\n",
            f"sys/cpu/docker/{cid}/cpu.cfs_period_us": "100000\n",
            f"sys/memory/docker/{cid}/memory.usage_in_bytes": "3000000\n",
            f"sys/memory/docker/{cid}/memory.stat": "cache 100\ntotal_inactive_file 1000000\n",
            f"sys/memory/docker/{cid}/memory.limit_in_bytes": "9223372036854771712\n",
            f"sys/memory/docker/{cid}/cgroup.procs": "77\n",
            f"sys/blkio/docker/{cid}/blkio.throttle.io_service_bytes": (
                "8:0 Read 300\n8:0 Write 700\n8:0 Sync 1000\n8:0 Total 1000\nTotal 1000\n"
            ),
            "proc/77/net/dev": NET_DEV,
        },
    )
    reader = CgroupReader(tmp_path / "sys", proc=tmp_path / "proc", limits_every=1)
    assert not reader.v2
    c = reader.read(cid)
    assert c is not None
    assert c.cpu_ns == 7_000_000_000 and c.cpu_limit == 0.5
    assert c.memory_bytes == 2_000_000 and c.memory_limit is None  # "unlimited"
    assert (c.read_bytes, c.write_bytes) == (300, 700)
    assert (c.rx_bytes, c.tx_bytes) == (1234567, 765432)
    (tmp_path / f"sys/cpu/docker/{cid}/cpu.cfs_quota_us").write_text("-1\n")
    c2 = reader.read(cid)
    assert c2 is not None and c2.cpu_limit is None


def test_cgroup_limits_read_again_every_n_reads_and_moved_dirs_found(tmp_path: Path) -> None:
    """Issue 20: limits cached for `limits_every` reads; a vanished directory looked up again."""
    cid = "e" * 64
    scope = f"system.slice/docker-{cid}.scope"
    files = {
        "cgroup.controllers": "cpu memory\n",
        f"{scope}/cpu.stat": "usage_usec 1\n",
        f"{scope}/cpu.max": "100000 100000\n",
        f"{scope}/memory.current": "10\n",
        f"{scope}/memory.stat": "inactive_file 4\n",
        f"{scope}/memory.max": "1000\n",
        f"{scope}/cgroup.procs": "",
    }
    _write(tmp_path, files)
    reader = CgroupReader(tmp_path, limits_every=3)
    first = reader.read(cid)
    assert first is not None and (first.cpu_limit, first.memory_limit) == (1.0, 1000)
    (tmp_path / f"{scope}/cpu.max").write_text("200000 100000\n")
    (tmp_path / f"{scope}/memory.max").write_text("2000\n")
    (tmp_path / f"{scope}/memory.current").write_text("20\n")
    for _ in range(2):  # the two reads the cache covers: usage fresh, limits not
        c = reader.read(cid)
        assert (
            c is not None and c.memory_bytes == 16 and (c.cpu_limit, c.memory_limit) == (1.0, 1000)
        )
    c = reader.read(cid)
    assert c is not None and (c.cpu_limit, c.memory_limit) == (2.0, 2000)
    # The container's cgroup moves (another driver path): found again in the same read.
    moved = {k.replace(scope, f"docker/{cid}"): v for k, v in files.items()}
    shutil.rmtree(tmp_path / "system.slice")
    _write(tmp_path, moved)
    c = reader.read(cid)
    assert c is not None and c.memory_bytes == 6
    shutil.rmtree(tmp_path / "docker")
    assert reader.read(cid) is None


def test_parsers_edge_cases() -> None:
    assert parse_cpu_max("max 100000") is None and parse_cpu_max("200000 100000") == 2.0
    assert parse_io_stat("") == (0, 0)
    assert parse_blkio("Total 0\n") == (0, 0)
    assert parse_net_dev(NET_DEV.splitlines()[0] + "\n" + NET_DEV.splitlines()[1]) == (0, 0)


def test_docker_stats_fallback_v1_and_v2_shapes() -> None:
    v1 = {
        "cpu_stats": {"cpu_usage": {"total_usage": 5_000_000_000}},
        "memory_stats": {
            "usage": 10_000_000,
            "limit": 536870912,
            "stats": {"total_inactive_file": 2_000_000},
        },
        "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 20}},
        "blkio_stats": {
            "io_service_bytes_recursive": [
                {"op": "Read", "value": 5},
                {"op": "Write", "value": 7},
                {"op": "Total", "value": 12},
            ]
        },
    }
    c = counters_from_docker_stats(v1, 1.0)
    assert c is not None and c.cpu_ns == 5_000_000_000 and c.memory_bytes == 8_000_000
    assert (c.rx_bytes, c.tx_bytes, c.read_bytes, c.write_bytes) == (10, 20, 5, 7)
    v2 = {
        "cpu_stats": {"cpu_usage": {"total_usage": 1}},
        "memory_stats": {"usage": 100, "stats": {"inactive_file": 30}},
        "blkio_stats": {"io_service_bytes_recursive": [{"op": "read", "value": 3}]},
    }
    c2 = counters_from_docker_stats(v2, 1.0)
    assert c2 is not None and c2.memory_bytes == 70 and c2.read_bytes == 3 and c2.rx_bytes is None
    assert counters_from_docker_stats({}, 1.0) is None


def test_rates_are_cores_and_bytes_per_second() -> None:
    a = Counters(at=10.0, cpu_ns=1_000_000_000, memory_bytes=1, rx_bytes=0, tx_bytes=0)
    b = Counters(
        at=12.0, cpu_ns=3_000_000_000, memory_bytes=1, cpu_limit=2.0, rx_bytes=2000, tx_bytes=None
    )
    r = rates(a, b, allocation_fallback=1.0)
    assert r == (1.0, 2.0, 1000.0, None, None, None)  # one core of a 2-core allocation
    c = Counters(at=12.0, cpu_ns=3_000_000_000, memory_bytes=1)
    assert rates(a, c, allocation_fallback=0.5) == (1.0, 0.5, None, None, None, None)
    restarted = Counters(at=14.0, cpu_ns=10, memory_bytes=1)
    assert rates(b, restarted, 1.0) is None


# --- history ---------------------------------------------------------------------------------


def _sample(t: float, instance: str, cores: float, cid: str = "") -> InstanceSample:
    return InstanceSample(
        deployment_id="dep",
        deployment="web",
        instance=instance,
        container_id=(cid or instance) * 12,
        at=t,
        cpu_cores=cores,
        cpu_allocation=1.0,
        memory_bytes=1000,
        memory_limit=2000,
        rx_bps=10.0,
        tx_bps=None,
        read_bps=None,
        write_bps=None,
        totals=Counters(at=0.0, cpu_ns=0, memory_bytes=1000),
        source="cgroup v1",
    )


async def test_history_rolls_up_and_bounds_itself(tmp_path: Path) -> None:
    history = await History.open(tmp_path / "metrics.db")
    try:
        base = 1_700_000_000 // 3600 * 3600
        for i in range(0, 7200, 5):  # two hours of 5 s samples, two instances
            t = base + i
            await history.add(t, [_sample(t, "a", 0.5), _sample(t, "b", 1.5)])
            await history.maintain(t, {"dep"})
        now = base + 7200
        await history.rollup(now, {"dep"})
        step, hour = await history.series("dep", "hour", now)
        assert step == 0
        assert 700 <= len(hour) <= 721  # raw, last hour only
        assert all(p.instances == 2 and p.cpu_cores == 2.0 for p in hour)
        assert hour[-1].cpu_usage == 1.0 and hour[-1].memory_bytes == 2000
        _, day = await history.series("dep", "day", now)
        assert len(day) == 120  # 1-minute buckets over two hours
        assert all(p.cpu_cores == pytest.approx(2.0) for p in day)
        _, one = await history.series("dep", "day", now, instance="a")
        assert all(p.instances == 1 and p.cpu_cores == pytest.approx(0.5) for p in one)
        _, week = await history.series("dep", "week", now)
        assert len(week) == 8 and week[0].rx_bps == pytest.approx(20.0)
        _, month = await history.series("dep", "month", now)
        assert len(month) == 2
        before = await history.row_count()
        await history.rollup(now + 40 * 24 * 3600, {"dep"})  # everything expired
        assert before > 0 and await history.row_count() == 0
        await history.add(now, [_sample(now, "a", 1.0)])
        await history.rollup(now + 60, set())  # the deployment is gone
        assert await history.row_count() == 0
    finally:
        await history.close()


async def test_a_damaged_metrics_db_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "metrics.db"
    path.write_bytes(b"not a database at all" * 100)
    history = await History.open(path)
    try:
        assert await history.row_count() == 0
    finally:
        await history.close()
    assert any(p.name.startswith("metrics.db.broken-") for p in tmp_path.iterdir())


# --- logs ------------------------------------------------------------------------------------


def test_docker_timestamps() -> None:
    assert parse_ts(b"2024-05-01T12:34:56.123456789Z") == 1714566896123456789
    assert parse_ts(b"2024-05-01T12:34:56.1Z") == 1714566896100000000
    assert parse_ts(b"2024-05-01T12:34:56Z") == 1714566896000000000
    assert parse_ts(b"2024-05-01T14:34:56.5+02:00") == 1714566896500000000
    assert format_ts(1714566896000000001) == "2024-05-01T12:34:56.000000001Z"
    with pytest.raises(ValueError):
        parse_ts(b"yesterday")


INST = Instance(
    container_id="f" * 64,
    container_name="patrd-web-r2-1-abcd",
    deployment_id="dep1",
    deployment="web",
    revision=2,
    slot=1,
    state=ContainerState.RUNNING,
    ip="10.0.0.2",
    exit_code=None,
)


def test_parse_frame_tags_the_line() -> None:
    line = parse_frame("stderr", b"2024-05-01T12:34:56.5Z oops \xff\n", INST)
    assert line == LogLine(1714566896500000000, "web-1", "f" * 12, 2, "stderr", "oops \ufffd")
    assert line.to_json()["t"] == "2024-05-01T12:34:56.500000000Z"
    assert parse_frame("stdout", b"no-timestamp", INST) is None
    q = LogQuery(instance="web-1", since_ns=1, until_ns=2)
    assert q.wants("web-1", "zzz") and not q.wants("web-0", "a")
    assert LogQuery(instance="fff").wants("web-0", "fffff")  # a container id prefix
    assert q.in_range(1) and q.in_range(2) and not q.in_range(3)


class _Engine:
    """A stand-in engine for the keeper (unit test of its file handling only)."""

    def __init__(self, frames: list[tuple[str, bytes]]) -> None:
        self.frames = frames
        self.stopped: list[str] = []

    async def stop(self, container_id: str, stop_timeout_s: int) -> None:
        self.stopped.append(container_id)

    async def logs(self, container_id: str, **_: Any):
        for frame in self.frames:
            yield frame

    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]:
        return []


async def test_keeper_keeps_the_newest_bytes_and_trims(tmp_path: Path) -> None:
    frames = [("stdout", f"2024-05-01T12:00:{i:02d}.0Z line {i}".encode()) for i in range(50)]
    engine = _Engine(frames)
    keeper = LogKeeper(engine, tmp_path / "logs", LogsConfig(keep_bytes_per_instance=600), 5)
    await keeper.on_remove(INST)
    assert engine.stopped == [INST.container_id]
    (kept,) = await keeper.read("dep1", LogQuery(tail=None))
    assert 0 < len(kept) < 50 and kept[-1].text == "line 49"  # the newest survive
    assert all(x.kept and x.instance == "web-1" and x.revision == 2 for x in kept)
    (file,) = (tmp_path / "logs" / "dep1").iterdir()
    assert file.stat().st_size <= 600 + 200 and file.stat().st_mode & 0o777 == 0o600
    assert await keeper.read("dep1", LogQuery(tail=3, instance="web-0")) == []
    # retention: an old file goes; a deleted deployment's folder goes
    old = time.time() - 10 * 24 * 3600
    os.utime(file, (old, old))
    assert await keeper.trim({"dep1"}) == 1
    await keeper.on_remove(INST)
    assert await keeper.trim(set()) == 1 and not (tmp_path / "logs" / "dep1").exists()


async def test_keeper_total_cap_drops_oldest_first(tmp_path: Path) -> None:
    frames = [("stdout", f"2024-05-01T12:00:{i:02d}.0Z {'x' * 80}".encode()) for i in range(10)]
    keeper = LogKeeper(_Engine(frames), tmp_path, LogsConfig(keep_bytes_total=3000), 5)
    for n in range(3):
        await keeper.on_remove(INST)
        path = max((tmp_path / "dep1").iterdir(), key=lambda p: p.name)
        os.utime(path, (time.time() - 100 + n, time.time() - 100 + n))
        time.sleep(0.002)  # distinct file names (ms)
    assert len(list((tmp_path / "dep1").iterdir())) == 3
    assert await keeper.trim({"dep1"}) == 1
    assert len(list((tmp_path / "dep1").iterdir())) == 2


# --- proxy counters and Prometheus --------------------------------------------------------------


def test_proxy_counters_classes_and_buckets() -> None:
    c = DeploymentCounters()
    c.record(200, 0.004)
    c.record(503, 0.2)
    c.record(0, 99.0)
    c.record(101, 0.001)
    assert c.classes == [1, 1, 1, 0, 0, 1]
    assert c.buckets[LATENCY_BOUNDS.index(0.005)] == 1 and c.buckets[-1] == 1
    assert c.count == 4 and c.latency_sum == pytest.approx(99.205)


class _Store:
    def __init__(self, records: list[DeploymentRecord]) -> None:
        self.records = records
        self.events = [(1, "web", "created"), (2, "web", "restart"), (3, "web", "rollout")]

    async def list_deployments(self) -> list[DeploymentRecord]:
        return self.records

    async def events_since(self, after_id: int, limit: int = 1000) -> list[tuple[int, str, str]]:
        return [e for e in self.events if e[0] > after_id][:limit]

    async def last_event_id(self) -> int:
        return 1


class _Proxy:
    def __init__(self) -> None:
        self.deployment_stats = {"web": DeploymentCounters()}
        self.deployment_stats["web"].record(200, 0.01)
        self.deployment_stats["web"].record(502, 2.0)
        self.limited_requests = 3
        self.refused_connections = 0
        self.active_requests = 1
        self.timeouts = {"body": 2, "upstream_header": 0}


async def test_exposition_parses_and_has_the_families() -> None:
    record = _record({"name": "web", "scale": {"min": 1, "max": 3}}, replicas=2)
    store = _Store([record])
    stats = AutoscaleStats()
    stats.decisions[("web", "up")] = 1
    stats.last["web"] = Decision(1, 2, "up", "x", 0.95, 2)

    class Sampler:
        last_tick_s = 0.002

        def samples(self, deployment_id: str | None = None) -> list[InstanceSample]:
            return [_sample(time.time(), "web-0", 0.25)]

    exposition = Exposition(
        Sources(store=store, sampler=Sampler(), proxy=_Proxy(), autoscale=stats)
    )
    await exposition.collector.prime()
    text = (await exposition.render()).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "patrd_info",
        "patrd_deployment_replicas",
        "patrd_instance_cpu_seconds",
        "patrd_instance_cpu_usage_ratio",
        "patrd_instance_memory_working_set_bytes",
        "patrd_instance_network_receive_bytes",
        "patrd_proxy_requests",
        "patrd_proxy_request_duration_seconds",
        "patrd_restarts",
        "patrd_rollouts",
        "patrd_probe_failures",
        "patrd_autoscale_decisions",
        "patrd_certificate_expiry_timestamp_seconds",
        "patrd_firewall_packets",
    ):
        assert name in families, name
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert samples[("patrd_deployment_replicas", (("deployment", "web"),))] == 2
    assert samples[("patrd_proxy_requests_total", (("code", "5xx"), ("deployment", "web")))] == 1
    assert samples[("patrd_proxy_timeouts_total", (("kind", "body"),))] == 2
    assert samples[("patrd_restarts_total", (("deployment", "web"), ("reason", "restart")))] == 1
    assert samples[("patrd_rollouts_total", (("deployment", "web"), ("result", "deployed")))] == 1
    assert ("patrd_events_total", (("deployment", "web"), ("kind", "created"))) not in samples
    assert samples[("patrd_proxy_request_duration_seconds_count", (("deployment", "web"),))] == 2
    inf = ("patrd_proxy_request_duration_seconds_bucket", (("deployment", "web"), ("le", "+Inf")))
    assert samples[inf] == 2
    usage = [v for (n, _), v in samples.items() if n == "patrd_instance_cpu_usage_ratio"]
    assert usage == [0.25]
    # each daemon has its own registry: nothing leaks into the library's global one
    from prometheus_client import REGISTRY

    assert "patrd_info" not in json.dumps([m.name for m in REGISTRY.collect()])
