"""Estimated monthly cost and node capacity. Pure: no I/O beyond :func:`node_capacity`.

Cost of one instance per month = ``resources.cpu * cost.vcpu_month
+ memory_mb / 1024 * cost.gib_ram_month + sum(volume size_gb) * cost.gib_volume_month``
(each instance has its own volumes, as in the seed). A deployment's
``estimated_cost`` is that times ``scale.min`` (the low end) and times
``scale.max`` (the high end), rounded to cents. The price table is zero by
default: patrd runs on a box the user already pays for.

Capacity: the node's CPUs and memory against what the deployments may ask
for. ``required`` is this deployment at ``scale.max``; ``committed`` is every
other live deployment at its current count (the autoscaler's, else
``scale.min``). Limits are ceilings, not reservations, so overcommitting is
allowed: it is reported (``fits: false`` and a warning), never refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patrd.model import checks as c
from patrd.model.errors import ConfigError
from patrd.model.sections import setting
from patrd.model.view_shapes import CapacityJson, CostJson


def _currency(value: Any, key: str, _: Path) -> str:
    currency = c.str_at(value, key, ConfigError).strip()
    if not 1 <= len(currency) <= 8:
        raise ConfigError(key, "must be a short currency code such as USD")
    return currency


@dataclass(frozen=True)
class CostConfig:
    """``[cost]``: the price table behind ``estimated_cost``; zero by default."""

    currency: str = setting("USD", _currency, "the currency of the prices below")
    vcpu_month: float = setting(0.0, c.off_or_number(), "price of one vCPU for a month")
    gib_ram_month: float = setting(0.0, c.off_or_number(), "price of 1 GiB of RAM for a month")
    gib_volume_month: float = setting(
        0.0, c.off_or_number(), "price of 1 GiB of volume for a month"
    )


@dataclass(frozen=True, slots=True)
class Cost:
    min: float
    max: float
    currency: str

    def to_json(self) -> CostJson:
        return {"min": self.min, "max": self.max, "currency": self.currency, "period": "month"}


def volume_gb(spec: Any) -> float:
    """Total volume size of one instance."""
    return float(sum(getattr(v, "size_gb", 0) for v in getattr(spec, "volumes", ())))


def instance_cost(spec: Any, prices: CostConfig) -> float:
    return float(
        spec.resources.cpu * prices.vcpu_month
        + spec.resources.memory_mb / 1024 * prices.gib_ram_month
        + volume_gb(spec) * prices.gib_volume_month
    )


def estimate(spec: Any, prices: CostConfig) -> Cost:
    one = instance_cost(spec, prices)
    return Cost(
        min=round(one * spec.scale.min, 2),
        max=round(one * spec.scale.max, 2),
        currency=prices.currency,
    )


@dataclass(frozen=True, slots=True)
class Node:
    cpus: float
    memory_mb: int


@dataclass(frozen=True, slots=True)
class Capacity:
    node: Node
    required_cpu: float  # this deployment at scale.max
    required_memory_mb: int
    committed_cpu: float  # the other deployments at their current count
    committed_memory_mb: int

    @property
    def cpu_fits(self) -> bool:
        return self.required_cpu + self.committed_cpu <= self.node.cpus + 1e-9

    @property
    def memory_fits(self) -> bool:
        return self.required_memory_mb + self.committed_memory_mb <= self.node.memory_mb

    @property
    def warning(self) -> str | None:
        short = []
        if not self.cpu_fits:
            short.append(
                f"{self.required_cpu:g} CPUs at its most instances, next to "
                f"{self.committed_cpu:g} for the other deployments, on a node with "
                f"{self.node.cpus:g}"
            )
        if not self.memory_fits:
            short.append(
                f"{self.required_memory_mb} MB of memory at its most instances, next to "
                f"{self.committed_memory_mb} MB for the other deployments, on a node with "
                f"{self.node.memory_mb} MB"
            )
        if not short:
            return None
        return "this node may be too small when it scales up: " + "; ".join(short)

    def to_json(self) -> CapacityJson:
        return {
            "fits": self.cpu_fits and self.memory_fits,
            "node": {"cpu": self.node.cpus, "memory_mb": self.node.memory_mb},
            "required": {"cpu": self.required_cpu, "memory_mb": self.required_memory_mb},
            "committed": {"cpu": self.committed_cpu, "memory_mb": self.committed_memory_mb},
            "warning": self.warning,
        }


def capacity(spec: Any, others: Iterable[tuple[Any, int]], node: Node) -> Capacity:
    """``others``: (spec, current instance count) of every other live deployment."""
    committed_cpu = 0.0
    committed_mem = 0
    for other, count in others:
        committed_cpu += other.resources.cpu * count
        committed_mem += other.resources.memory_mb * count
    return Capacity(
        node=node,
        required_cpu=round(spec.resources.cpu * spec.scale.max, 3),
        required_memory_mb=spec.resources.memory_mb * spec.scale.max,
        committed_cpu=round(committed_cpu, 3),
        committed_memory_mb=committed_mem,
    )


def node_capacity(meminfo: Path = Path("/proc/meminfo")) -> Node:
    """This machine: usable CPUs (affinity) and MemTotal."""
    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cpus = float(os.cpu_count() or 1)
    memory_mb = 0
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_mb = int(line.split()[1]) // 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    return Node(cpus=cpus, memory_mb=memory_mb)
