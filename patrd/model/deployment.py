"""A deployment and its revisions as patrd stores and reads them. Pure.

The Store (patrd/state/store.py) writes and returns these; the planner, the
API and the CLI read them. ``Intent`` is what the user asked for, ``Status``
what the controller last found.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from patrd.model.releases import Origin
from patrd.model.spec import DeploymentSpec


class Intent(StrEnum):
    """What the user wants the deployment to be doing."""

    RUN = "run"
    STOP = "stop"
    CREATED = "created"  # created with deploy_on_create=false, never started
    DELETE = "delete"  # tombstone until the reconciler has removed everything


class Status(StrEnum):
    CREATED = "created"
    DEPLOYING = "deploying"
    RUNNING = "running"
    STOPPED = "stopped"
    ERRORED = "errored"
    DELETING = "deleting"


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    id: str
    name: str
    revision: int
    spec: DeploymentSpec
    intent: Intent
    status: Status
    status_reason: str
    created_at: float
    updated_at: float
    stable_revision: int | None = None  # the last revision that finished rolling out
    pinned_image: str | None = None  # the target revision runs exactly this image id
    delete_volumes: bool = False  # chosen at delete: remove the volumes too
    replicas: int | None = (
        None  # set by the autoscaler (patrd/control/autoscale.py); None: scale.min
    )

    @property
    def template(self) -> str:
        return self.spec.instance_template(self.pinned_image)

    @property
    def in_rollout(self) -> bool:
        return self.stable_revision is not None and self.stable_revision != self.revision


class RevisionState(StrEnum):
    PENDING = "pending"  # not rolled out yet
    DEPLOYED = "deployed"  # what the deployment runs now
    SUPERSEDED = "superseded"  # deployed once, replaced since
    FAILED = "failed"  # its rollout failed; the deployment went back


@dataclass(frozen=True, slots=True)
class RevisionRecord:
    revision: int
    spec: DeploymentSpec
    state: RevisionState
    reason: str
    image_id: str | None
    pinned_image: str | None
    created_at: float
    deployed_at: float | None
    origin: str = Origin.CREATE.value  # releases.Origin: how it came by its image
    digest_ref: str | None = None  # repo@sha256:… it runs, when the registry knows it

    @property
    def release(self) -> bool:
        return self.origin != Origin.SETTINGS.value
