"""Made-up observations for the observe tests: a deployment record, an instance sample."""

from __future__ import annotations

from typing import Any

from patrd.model.deployment import DeploymentRecord, Intent, Status
from patrd.model.spec import parse_create
from patrd.observe.counters import Counters, InstanceSample


def deployment_record(body: dict[str, Any], replicas: int | None = None) -> DeploymentRecord:
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


def sample(t: float, instance: str, cores: float, cid: str = "") -> InstanceSample:
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
