"""The ``capacity`` block of a deployment answer, and the node-fit refusal.

``committed`` counts only instances that run (Docker state ``running``) of
the other deployments; ``required`` is this deployment at its instance count
(the autoscaler's, else ``scale.min``) when it is meant to run. The warning is
set only on the answer of the change that over-commits the node
(``patrd.observe.node_fit.overcommit_warning``); a GET never repeats it.
"""

from __future__ import annotations

import functools

from patrd.model.deployment import DeploymentRecord, Intent
from patrd.model.replicas import effective_replicas
from patrd.model.spec import DeploymentSpec
from patrd.model.view_shapes import CapacityJson
from patrd.model.views import ControllerView
from patrd.observe import cost, node_fit
from patrd.state.store import Store


@functools.cache
def this_node() -> cost.Node:
    return cost.node_capacity()


def refuse_impossible(parsed: DeploymentSpec, node: cost.Node | None = None) -> None:
    """422 ``resources.cpu`` / ``resources.memory_mb`` when this node can never run one instance."""
    res = parsed.resources
    node_fit.refuse_impossible(res.cpu, res.memory_mb, node or this_node())


def running_load(
    spec: DeploymentSpec, controller: ControllerView, deployment_id: str
) -> node_fit.Load:
    count = sum(1 for i in controller.instances(deployment_id) if i.state == "running")
    return node_fit.load_of(spec.resources.cpu, spec.resources.memory_mb, count)


async def others_load(
    store: Store, controller: ControllerView, exclude: str | None
) -> node_fit.Load:
    return node_fit.total(
        running_load(r.spec, controller, r.id)
        for r in await store.list_deployments()
        if r.id != exclude
    )


def wanted_load(record: DeploymentRecord) -> node_fit.Load:
    count = effective_replicas(record) if record.intent is Intent.RUN else 0
    res = record.spec.resources
    return node_fit.load_of(res.cpu, res.memory_mb, count)


async def capacity_json(
    store: Store,
    controller: ControllerView,
    record: DeploymentRecord,
    *,
    before: node_fit.Load | None = None,
) -> CapacityJson:
    """``before``: the node-wide load before this change (None: no change, no warning)."""
    node = this_node()
    others = await others_load(store, controller, record.id)
    required = wanted_load(record)
    after = others + required
    warning = None if before is None else node_fit.overcommit_warning(before, after, node)
    return {
        "fits": after.fits(node),
        "node": {"cpu": node.cpus, "memory_mb": node.memory_mb},
        "required": {"cpu": required.cpu, "memory_mb": required.memory_mb},
        "committed": {"cpu": others.cpu, "memory_mb": others.memory_mb},
        "warning": warning,
    }
