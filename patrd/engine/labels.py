"""The Docker labels patrd puts on what it creates (containers, networks, volumes).

Both adapters (patrd/engine/docker.py, swarm.py) write and read them; the
owner label keeps two daemons on one engine apart.
"""

from __future__ import annotations

LABEL_MANAGED = "patrd.managed"
LABEL_OWNER = "patrd.owner"
LABEL_DEPLOYMENT = "patrd.deployment"
LABEL_DEPLOYMENT_ID = "patrd.deployment-id"
LABEL_REVISION = "patrd.revision"
LABEL_INSTANCE = "patrd.instance"
LABEL_TEMPLATE = "patrd.template"
LABEL_VOLUME = "patrd.volume"
# A one-off container (``patrctl run``, a scheduled job run): it carries no
# instance label, so the reconciler never adopts, restarts or collects it.
LABEL_ONEOFF = "patrd.oneoff"


def deployment_labels(owner: str, deployment: str, deployment_id: str) -> dict[str, str]:
    """What marks a deployment's network (and starts its containers' labels)."""
    return {
        LABEL_MANAGED: "1",
        LABEL_OWNER: owner,
        LABEL_DEPLOYMENT: deployment,
        LABEL_DEPLOYMENT_ID: deployment_id,
    }


def instance_labels(
    owner: str, deployment: str, deployment_id: str, revision: int, slot: int, template: str
) -> dict[str, str]:
    """What marks one instance (a container, or a Swarm service and its tasks)."""
    return {
        **deployment_labels(owner, deployment, deployment_id),
        LABEL_REVISION: str(revision),
        LABEL_INSTANCE: str(slot),
        LABEL_TEMPLATE: template,
    }


def volume_labels(owner: str, deployment: str, volume: str, slot: int) -> dict[str, str]:
    """What marks one instance's volume (created by DockerEngine, or by a swarm node)."""
    return {
        LABEL_MANAGED: "1",
        LABEL_OWNER: owner,
        LABEL_DEPLOYMENT: deployment,
        LABEL_VOLUME: volume,
        LABEL_INSTANCE: str(slot),
    }


def named_volume_labels(owner: str, deployment: str, name: str, slot: int) -> dict[str, str]:
    """:func:`volume_labels` of the Docker volume ``patrd.<deployment>.<volume>.<slot>``
    (patrd/model/naming.py ``volume_name``)."""
    volume = name.removeprefix(f"patrd.{deployment}.").removesuffix(f".{slot}")
    return volume_labels(owner, deployment, volume, slot)
