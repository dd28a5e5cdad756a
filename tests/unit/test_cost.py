"""Cost estimates and node capacity (patrd/observe/cost.py, pure)."""

from __future__ import annotations

from typing import Any

from patrd.model.spec import DeploymentSpec, parse_create
from patrd.observe.cost import Node, capacity, estimate
from patrd.settings.config import CostConfig

# --- cost and capacity --------------------------------------------------------------------

PRICES = CostConfig(currency="EUR", vcpu_month=10.0, gib_ram_month=2.0, gib_volume_month=0.1)


def sized(name: str, resources: dict[str, Any], **extra: Any) -> DeploymentSpec:
    """A spec of ``name`` asking for ``resources`` (``extra``: scale, volumes, …)."""
    body = {"name": name, "image": "x", "ports": {"80": "http"}, "resources": resources}
    return parse_create({**body, **extra}, region="local")


def test_cost_is_per_instance_times_min_and_max() -> None:
    spec = sized("web", {"cpu": 0.5, "memory_mb": 1536}, scale={"min": 2, "max": 5})
    one = 0.5 * 10 + 1.5 * 2  # 8.0 per instance-month
    cost = estimate(spec, PRICES)
    assert (cost.min, cost.max, cost.currency) == (2 * one, 5 * one, "EUR")
    assert cost.to_json() == {"min": 16.0, "max": 40.0, "currency": "EUR", "period": "month"}
    assert estimate(spec, CostConfig()).to_json()["max"] == 0.0  # zero by default


def test_cost_counts_each_instances_volumes() -> None:
    volumes = {"a": {"path": "/a", "size_gb": 10}, "b": {"path": "/b", "size_gb": 5}}
    spec = sized("db", {"cpu": 1, "memory_mb": 1024}, scale={"min": 3, "max": 3}, volumes=volumes)
    one = 10 + 2 + 15 * 0.1
    assert estimate(spec, PRICES).min == round(3 * one, 2) == 40.5


def test_cost_rounds_to_cents() -> None:
    spec = sized("web", {"cpu": 0.25})
    prices = CostConfig(vcpu_month=3.333, gib_ram_month=0.0)
    assert estimate(spec, prices).min == 0.83


def test_capacity_warns_when_max_does_not_fit() -> None:
    node = Node(cpus=2.0, memory_mb=4096)
    spec = sized("web", {"cpu": 0.5, "memory_mb": 512}, scale={"min": 1, "max": 4})
    ok = capacity(spec, [], node)
    assert ok.cpu_fits and ok.memory_fits and ok.warning is None
    assert ok.to_json()["required"] == {"cpu": 2.0, "memory_mb": 2048}
    other = sized("db", {"memory_mb": 3000})
    tight = capacity(spec, [(other, 1)], node)
    assert not tight.cpu_fits and not tight.memory_fits
    assert tight.warning is not None and "CPU" in tight.warning and "memory" in tight.warning
    assert tight.to_json()["fits"] is False
