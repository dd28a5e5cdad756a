"""``GET /metrics``: Prometheus text exposition, built with ``prometheus_client``.

One :class:`PatrdCollector` per daemon, registered in its own
``CollectorRegistry`` (never the library's global default registry, so two
daemons in one process, or tests, never share state). Collection is a
snapshot of in-memory state: the sampler's latest rates and totals, the
proxy's per-deployment counters, the controller's instances, the autoscaler's
decisions, the certificates and the firewall counters. What needs an await
(the deployment list, new events, the firewall's counters) is fetched by
:meth:`PatrdCollector.refresh` just before ``generate_latest`` runs.

Counters derived from events (restarts, rollouts, probe failures) count from
the daemon's start, as Prometheus counters should; ``rate()`` and
``increase()`` handle the reset a restart causes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from patrd import __version__
from patrd.control.autoscale import AutoscaleStats
from patrd.model.errors import PatrdError
from patrd.model.replicas import effective_replicas
from patrd.observe.counters import InstanceSample
from patrd.observe.prometheus_text import (
    PROBE_FAMILIES,
    SAMPLE_FAMILIES,
    LabelCache,
    probe_families,
    probe_rows,
    sample_families,
    sample_key,
)
from patrd.proxy.stats import LATENCY_BOUNDS, STATUS_CLASSES, DeploymentCounters

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
EVENT_PAGES = 20  # at most 20 * 1000 new events per scrape (the rest next time)

# Event kinds (patrd/control/worker.py, steps.py, the store) → (family, label value).
_RESTART_KINDS = {"restart": "restart", "failed_start": "failed_start"}
_ROLLOUT_KINDS = {"rollout": "deployed", "rollout_failed": "failed"}
_PROBE_KINDS = {"startup_failed": "startup", "unhealthy": "liveness"}


class SampleSource(Protocol):
    last_tick_s: float  # how long the last sampling pass took

    def samples(self, deployment_id: str | None = None) -> list[InstanceSample]: ...


class ProxySource(Protocol):
    @property
    def deployment_stats(self) -> dict[str, DeploymentCounters]: ...

    @property
    def limited_requests(self) -> int: ...

    @property
    def refused_connections(self) -> int: ...

    @property
    def timeouts(self) -> dict[str, int]: ...  # kind → fired (proxy.*_timeout_s)

    @property
    def active_requests(self) -> int: ...


class InstanceSource(Protocol):
    def instances(self, deployment_id: str) -> list[Any]: ...  # views.InstanceView


class EventSource(Protocol):
    async def list_deployments(self) -> list[Any]: ...

    async def events_since(
        self, after_id: int, limit: int = 1000
    ) -> list[tuple[int, str, str]]: ...

    async def last_event_id(self) -> int: ...


class CertSource(Protocol):
    def statuses(self) -> list[Any]: ...  # tls.controller.CertStatus


class FirewallSource(Protocol):
    async def status(self) -> Any: ...  # firewall_apply.FirewallStatus


class BackupSource(Protocol):
    """patrd/state/offsite.py's BackupStats."""

    runs_ok: int
    runs_failed: int
    deployment_failures: int
    last_run_at: float | None
    last_success_at: float | None
    last_duration_s: float | None


@dataclass
class Sources:
    store: EventSource
    instances: InstanceSource | None = None
    sampler: SampleSource | None = None
    proxy: ProxySource | None = None
    autoscale: AutoscaleStats | None = None
    certs: CertSource | None = None  # (patrd/tls)
    firewall: FirewallSource | None = None  # (patrd/firewall/apply.py)
    backups: BackupSource | None = None  # off-site backups (patrd/state/offsite.py)


class PatrdCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self._s = sources
        self._records: list[Any] = []
        self._events: Counter[tuple[str, str]] = Counter()  # (deployment, kind)
        self._watermark: int | None = None
        self._firewall: dict[str, Any] = {}
        self._firewall_enabled = False
        self._labels = LabelCache()  # the per-instance label text (prometheus_text)
        self.started = time.time()

    async def prime(self) -> None:
        """Count events from now on (call once at start)."""
        self._watermark = await self._s.store.last_event_id()

    async def refresh(self) -> None:
        store = self._s.store
        if self._s.proxy is not None:
            # Worker processes report on request (patrd/proxy/workers.py).
            refresh_stats = getattr(self._s.proxy, "refresh_stats", None)
            if refresh_stats is not None:
                await refresh_stats()
        self._records = await store.list_deployments()
        if self._watermark is None:
            await self.prime()
        for _ in range(EVENT_PAGES):
            assert self._watermark is not None
            page = await store.events_since(self._watermark)
            for event_id, deployment, kind in page:
                self._events[(deployment, kind)] += 1
                self._watermark = event_id
            if len(page) < 1000:
                break
        if self._s.firewall is not None:
            try:
                status = await self._s.firewall.status()
            except PatrdError:
                status = None
            if status is not None:
                self._firewall = dict(status.counters)
                self._firewall_enabled = bool(status.enabled)

    def describe(self) -> Iterable[Metric]:
        return []  # no collect() at registration

    def collect(self) -> Iterable[Metric]:
        yield from self._head()
        if self._s.sampler is not None:
            samples = self._s.sampler.samples()
            yield from self._instances(samples)
            yield from self._sampler_gauges(samples)
        if self._s.instances is not None:
            yield from self._probes()
        yield from self._tail()

    def text(self) -> bytes:
        """What :meth:`collect` exposes, as ``generate_latest`` renders it; the
        per-instance families rendered by :mod:`patrd.observe.prometheus_text`."""
        parts = [generate_latest(_Families(self._head()))]
        if self._s.sampler is not None:
            samples = self._s.sampler.samples()
            parts.append(sample_families(samples, self._labels).encode())
            parts.append(generate_latest(_Families(self._sampler_gauges(samples))))
        if self._s.instances is not None:
            rows = probe_rows(self._records, self._s.instances.instances)
            parts.append(probe_families(rows, self._labels).encode())
        parts.append(generate_latest(_Families(self._tail())))
        self._labels.prune()
        return b"".join(parts)

    def _head(self) -> Iterable[Metric]:
        yield from self._daemon()
        yield from self._deployments()

    def _sampler_gauges(self, samples: Sequence[InstanceSample]) -> Iterable[Metric]:
        assert self._s.sampler is not None
        yield GaugeMetricFamily(
            "patrd_metrics_sample_duration_seconds",
            "how long the last sampling pass over all running instances took",
            value=self._s.sampler.last_tick_s,
        )
        yield GaugeMetricFamily(
            "patrd_metrics_sampled_instances",
            "instances with a sample in the last pass",
            value=len(samples),
        )

    def _tail(self) -> Iterable[Metric]:
        if self._s.proxy is not None:
            yield from self._proxy(self._s.proxy)
        yield from self._event_counters()
        if self._s.autoscale is not None:
            yield from self._autoscale(self._s.autoscale)
        yield from self._certificates()
        yield from self._firewall_counters()
        if self._s.backups is not None:
            yield from _backups(self._s.backups)

    # --- families -------------------------------------------------------------------

    def _daemon(self) -> Iterable[Metric]:
        info = GaugeMetricFamily("patrd_info", "patrd version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            "patrd_start_time_seconds", "when this daemon started (unix time)", value=self.started
        )

    def _deployments(self) -> Iterable[Metric]:
        status = GaugeMetricFamily(
            "patrd_deployment_status",
            "1 for the deployment's status",
            labels=["deployment", "status"],
        )
        replicas = GaugeMetricFamily(
            "patrd_deployment_replicas",
            "instances the deployment should run (autoscaler's count, else scale.min)",
            labels=["deployment"],
        )
        scale_min = GaugeMetricFamily(
            "patrd_deployment_scale_min", "scale.min", labels=["deployment"]
        )
        scale_max = GaugeMetricFamily(
            "patrd_deployment_scale_max", "scale.max", labels=["deployment"]
        )
        for r in self._records:
            status.add_metric([r.name, r.status.value], 1)
            replicas.add_metric([r.name], effective_replicas(r))
            scale_min.add_metric([r.name], r.spec.scale.min)
            scale_max.add_metric([r.name], r.spec.scale.max)
        yield from (status, replicas, scale_min, scale_max)

    def _instances(self, samples: Sequence[InstanceSample]) -> Iterable[Metric]:
        """The families of prometheus_text.sample_families, built by prometheus_client."""
        labels = ["deployment", "instance", "container"]
        for name, doc, kind, value_of in SAMPLE_FAMILIES:
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                name, doc, labels=labels
            )
            for s in samples:
                value = value_of(s)
                if value is not None:
                    family.add_metric(list(sample_key(s)), value)
            yield family

    def _probes(self) -> Iterable[Metric]:
        """The same families as prometheus_text.probe_families."""
        assert self._s.instances is not None
        labels = ["deployment", "instance", "container"]
        (ready, phase, liveness, restarts) = (
            GaugeMetricFamily(name, doc, labels=[*labels, "phase"] if i == 1 else labels)
            for i, (name, doc) in enumerate(PROBE_FAMILIES)
        )
        for key, is_ready, probe, failures, restart_count in probe_rows(
            self._records, self._s.instances.instances
        ):
            ready.add_metric(list(key), 1 if is_ready else 0)
            if probe:
                phase.add_metric([*key, probe], 1)
            liveness.add_metric(list(key), failures)
            restarts.add_metric(list(key), restart_count)
        yield from (ready, phase, liveness, restarts)

    def _proxy(self, proxy: ProxySource) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "patrd_proxy_requests",
            "requests the proxy answered for a deployment, by status class",
            labels=["deployment", "code"],
        )
        latency = HistogramMetricFamily(
            "patrd_proxy_request_duration_seconds",
            "time from routing a request to its last response byte",
            labels=["deployment"],
        )
        for name, c in sorted(proxy.deployment_stats.items()):
            for index, cls in enumerate(STATUS_CLASSES):
                if c.classes[index] or index in (2, 5):
                    requests.add_metric([name, cls], c.classes[index])
            cumulative = 0
            buckets = []
            for bound, n in zip((*map(str, LATENCY_BOUNDS), "+Inf"), c.buckets, strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            latency.add_metric([name], buckets, sum_value=c.latency_sum)
        yield requests
        yield latency
        yield CounterMetricFamily(
            "patrd_proxy_rate_limited_requests",
            "requests answered 429 by the per-client rate limit",
            value=proxy.limited_requests,
        )
        yield CounterMetricFamily(
            "patrd_proxy_refused_connections",
            "connections closed at once by a connection cap",
            value=proxy.refused_connections,
        )
        timeouts = CounterMetricFamily(
            "patrd_proxy_timeouts",
            "requests and websockets cut by a timeout after the request head, by kind "
            "(body: 408, upstream_header: 504, upstream_idle, send, websocket_idle)",
            labels=["kind"],
        )
        for kind, n in sorted(proxy.timeouts.items()):
            timeouts.add_metric([kind], n)
        yield timeouts
        yield GaugeMetricFamily(
            "patrd_proxy_active_requests", "requests in flight", value=proxy.active_requests
        )

    def _event_counters(self) -> Iterable[Metric]:
        restarts = CounterMetricFamily(
            "patrd_restarts",
            "instances restarted or replaced after a failure (since the daemon started)",
            labels=["deployment", "reason"],
        )
        rollouts = CounterMetricFamily(
            "patrd_rollouts", "finished rollouts by result", labels=["deployment", "result"]
        )
        probes = CounterMetricFamily(
            "patrd_probe_failures",
            "instances that failed a probe (startup: never ready; liveness: restarted)",
            labels=["deployment", "probe"],
        )
        events = CounterMetricFamily(
            "patrd_events", "deployment events by kind", labels=["deployment", "kind"]
        )
        for (deployment, kind), n in sorted(self._events.items()):
            events.add_metric([deployment, kind], n)
            if kind in _RESTART_KINDS:
                restarts.add_metric([deployment, _RESTART_KINDS[kind]], n)
            elif kind in _ROLLOUT_KINDS:
                rollouts.add_metric([deployment, _ROLLOUT_KINDS[kind]], n)
            elif kind in _PROBE_KINDS:
                probes.add_metric([deployment, _PROBE_KINDS[kind]], n)
        yield from (restarts, rollouts, probes, events)

    def _autoscale(self, stats: AutoscaleStats) -> Iterable[Metric]:
        decisions = CounterMetricFamily(
            "patrd_autoscale_decisions",
            "instance count changes made by the autoscaler",
            labels=["deployment", "direction"],
        )
        for (deployment, direction), n in sorted(stats.decisions.items()):
            decisions.add_metric([deployment, direction], n)
        usage = GaugeMetricFamily(
            "patrd_autoscale_cpu_usage_ratio",
            "mean CPU usage / allocation of the ready instances at the last evaluation",
            labels=["deployment"],
        )
        recommended = GaugeMetricFamily(
            "patrd_autoscale_recommended_replicas",
            "the HPA rule's instance count at the last evaluation",
            labels=["deployment"],
        )
        for deployment, decision in sorted(stats.last.items()):
            if decision.usage is not None:
                usage.add_metric([deployment], decision.usage)
            if decision.recommendation is not None:
                recommended.add_metric([deployment], decision.recommendation)
        yield from (decisions, usage, recommended)

    def _certificates(self) -> Iterable[Metric]:
        expiry = GaugeMetricFamily(
            "patrd_certificate_expiry_timestamp_seconds",
            "notAfter of the certificate served for the name (unix time)",
            labels=["domain", "issuer"],
        )
        failures = GaugeMetricFamily(
            "patrd_certificate_failures", "failed issuing attempts in a row", labels=["domain"]
        )
        if self._s.certs is not None:
            for cert in self._s.certs.statuses():
                if cert.not_after is not None:
                    expiry.add_metric([cert.domain, cert.issuer], cert.not_after)
                failures.add_metric([cert.domain], cert.failures)
        yield from (expiry, failures)

    def _firewall_counters(self) -> Iterable[Metric]:
        packets = CounterMetricFamily(
            "patrd_firewall_packets",
            "packets matched by patrd's nftables counters (drops: rate_limited, conn_limited, …)",
            labels=["counter"],
        )
        octets = CounterMetricFamily(
            "patrd_firewall_bytes", "bytes matched by patrd's nftables counters", labels=["counter"]
        )
        for name, value in sorted(self._firewall.items()):
            packets.add_metric([name], value.packets)
            octets.add_metric([name], value.bytes)
        yield GaugeMetricFamily(
            "patrd_firewall_enabled", "1 when firewall.enabled", value=int(self._firewall_enabled)
        )
        yield from (packets, octets)


def _backups(stats: BackupSource) -> Iterable[Metric]:
    runs = CounterMetricFamily(
        "patrd_backup_runs", "off-site backup runs since the daemon started", labels=["result"]
    )
    runs.add_metric(["ok"], stats.runs_ok)
    runs.add_metric(["failed"], stats.runs_failed)
    yield runs
    yield CounterMetricFamily(
        "patrd_backup_deployment_failures",
        "deployments whose backup failed (hook or volume) since the daemon started",
        value=stats.deployment_failures,
    )
    for name, doc, value in (
        ("last_success", "start of the last fully successful backup run", stats.last_success_at),
        ("last_run", "start of the last backup run", stats.last_run_at),
    ):
        if value is not None:
            yield GaugeMetricFamily(
                f"patrd_backup_{name}_timestamp_seconds", f"{doc} (unix time)", value=value
            )
    if stats.last_duration_s is not None:
        yield GaugeMetricFamily(
            "patrd_backup_last_duration_seconds",
            "how long the last backup run took",
            value=stats.last_duration_s,
        )


class Exposition:
    """The registry of one daemon: its collector, then the other parts' (:meth:`add`)."""

    def __init__(self, sources: Sources) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = PatrdCollector(sources)
        self.registry.register(self.collector)
        self._others: list[Collector] = []

    def add(self, collector: Collector) -> None:
        """Expose another part's families (disk guard, notifications, node health)."""
        self.registry.register(collector)
        self._others.append(collector)

    async def render(self) -> bytes:
        """What ``generate_latest(self.registry)`` would answer, the per-instance
        families rendered the cheaper way (:meth:`PatrdCollector.text`)."""
        await self.collector.refresh()
        others = (family for c in self._others for family in c.collect())
        return self.collector.text() + generate_latest(_Families(others))


class _Families(Collector):
    """Some of the collector's families, for generate_latest."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families
