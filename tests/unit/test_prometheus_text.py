"""The per-instance families rendered without prometheus_client (patrd/observe/prometheus_text.py)
give the text generate_latest gives for the same collector."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from patrd.model.deployment import DeploymentRecord
from patrd.observe.counters import Counters, InstanceSample
from patrd.observe.prometheus import Exposition, Sources
from patrd.observe.prometheus_text import LabelCache, escape, header
from tests.support.observed import deployment_record, sample


class _Store:
    def __init__(self, records: list[DeploymentRecord]) -> None:
        self.records = records

    async def list_deployments(self) -> list[DeploymentRecord]:
        return self.records

    async def events_since(self, after_id: int, limit: int = 1000) -> list[tuple[int, str, str]]:
        return [(2, "web", "restart")] if after_id < 2 else []

    async def last_event_id(self) -> int:
        return 1


@dataclasses.dataclass
class _View:
    name: str
    container_id: str
    ready: bool
    probe: str
    liveness_failures: int
    restarts: int


class _Views:
    def __init__(self, views: dict[str, list[_View]]) -> None:
        self.views = views

    def instances(self, deployment_id: str) -> list[Any]:
        return list(self.views.get(deployment_id, []))


class _Sampler:
    last_tick_s = 0.0123

    def __init__(self, samples: list[InstanceSample]) -> None:
        self.latest = samples

    def samples(self, deployment_id: str | None = None) -> list[InstanceSample]:
        return self.latest


def _samples() -> list[InstanceSample]:
    plain = sample(1.0, "web-0", 0.25, cid="a")
    big = dataclasses.replace(
        sample(1.0, "web-1", 1e-9, cid="b"),
        memory_bytes=40_000_000,
        memory_limit=None,  # no sample in the limit family
        cpu_allocation=0.0,
        totals=Counters(
            at=0.0,
            cpu_ns=123_456_789_012_345,
            memory_bytes=40_000_000,
            rx_bytes=10**12,
            tx_bytes=7,
            read_bytes=None,
            write_bytes=0,
        ),
    )
    odd = dataclasses.replace(
        sample(1.0, 'we"b\\-\n2', 3.5, cid="c"), deployment="d\\ep", cpu_cores=float("inf")
    )
    return [plain, big, odd]


async def test_text_is_what_prometheus_client_renders() -> None:
    web = deployment_record({"name": "web", "scale": {"min": 1, "max": 3}}, replicas=2)
    other = dataclasses.replace(deployment_record({"name": "api"}), id="d2")
    views = {
        "d1": [
            _View("web-0", "a" * 64, True, "ready", 0, 0),
            _View("web-1", "b" * 64, False, "", 2, 3),
        ],
        "d2": [_View("api-0", "c" * 64, False, 'fai"led', 1, 0)],
    }
    exposition = Exposition(
        Sources(store=_Store([web, other]), instances=_Views(views), sampler=_Sampler(_samples()))
    )
    exposition.add(_Other())  # another part's families (disk, notify, node) come after
    await exposition.collector.prime()
    text = await exposition.render()
    assert text == generate_latest(exposition.registry)
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    assert families["patrd_other_things"].samples[0].value == 7
    assert len(families["patrd_instance_memory_limit_bytes"].samples) == 2
    phases = families["patrd_instance_probe_phase"].samples
    assert [s.labels["phase"] for s in phases] == ["ready", 'fai"led']
    assert families["patrd_instance_cpu_seconds"].samples[1].value == 123456.789012345
    assert 'deployment="d\\\\ep"' in text.decode()  # escaped once, as prometheus_client does
    # Without a sampler or instance views: the same families missing from both.
    bare = Exposition(Sources(store=_Store([web])))
    await bare.collector.prime()
    assert await bare.render() == generate_latest(bare.registry)


async def test_label_text_is_kept_only_for_instances_still_seen() -> None:
    labels = LabelCache()
    first = labels(("web", "web-0", "aaa"))
    assert first == 'container="aaa",deployment="web",instance="web-0"'
    labels(("web", "web-1", "bbb"))
    labels.prune()
    assert len(labels) == 2
    assert labels(("web", "web-0", "aaa")) is first  # built once
    labels.prune()
    assert len(labels) == 1  # web-1 was not asked for in the last scrape


def test_escape_and_header() -> None:
    assert escape('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert header("patrd_x", "bytes\nsent", "counter") == (
        "# HELP patrd_x_total bytes\\nsent\n# TYPE patrd_x_total counter\n"
    )
    assert header("patrd_y", "y", "gauge").endswith("# TYPE patrd_y gauge\n")


class _Other(Collector):
    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("patrd_other_things", "a family of another part", value=7)
