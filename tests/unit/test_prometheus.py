"""Proxy counters and the Prometheus exposition (patrd/observe/prometheus.py)."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from patrd.control.autoscale import (
    AutoscaleStats,
    Decision,
)
from patrd.model.deployment import DeploymentRecord
from patrd.observe.counters import (
    InstanceSample,
)
from patrd.observe.prometheus import Exposition, Sources
from patrd.proxy.stats import LATENCY_BOUNDS, DeploymentCounters
from tests.support.observed import deployment_record, sample

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
    web = deployment_record({"name": "web", "scale": {"min": 1, "max": 3}}, replicas=2)
    store = _Store([web])
    stats = AutoscaleStats()
    stats.decisions[("web", "up")] = 1
    stats.last["web"] = Decision(1, 2, "up", "x", 0.95, 2)

    class Sampler:
        last_tick_s = 0.002

        def samples(self, deployment_id: str | None = None) -> list[InstanceSample]:
            return [sample(time.time(), "web-0", 0.25)]

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
