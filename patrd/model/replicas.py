"""How many instances a deployment runs: its scale range and the autoscaler's count. Pure.

``scale.min`` unless the deployment is autoscaled (a range, no volumes) and
the autoscaler stored a count (``DeploymentRecord.replicas``, patrd/control/
autoscale.py); a stored count is clamped to ``[scale.min, scale.max]`` when
read, so a narrowed range applies at once.
"""

from __future__ import annotations

from patrd.model.deployment import DeploymentRecord
from patrd.model.spec import DeploymentSpec, Scale


def eligible(spec: DeploymentSpec) -> bool:
    """Autoscaled at all: a scale range and no volumes (the seed's rule)."""
    return spec.scale.max > spec.scale.min and not spec.volumes


def clamp(scale: Scale, replicas: int) -> int:
    return min(max(replicas, scale.min), scale.max)


def effective_replicas(record: DeploymentRecord) -> int:
    """How many instances the planner runs: the autoscaler's count, clamped, else min."""
    if record.replicas is None or not eligible(record.spec):
        return record.spec.scale.min
    return clamp(record.spec.scale, record.replicas)


def volume_slots(record: DeploymentRecord) -> int:
    """Slots whose volumes may exist: ``scale.min``, or more if a stored count was higher."""
    return max(record.spec.scale.min, record.replicas or 0)
