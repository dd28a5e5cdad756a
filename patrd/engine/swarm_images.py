"""Images on every swarm node: the reference a task pulls and the credential it sends.

The controller resolves a revision's image on the manager (the manager's own
engine pulls it, with the deployment's credential) and hands the Swarm
backend the *image ID*. An ID cannot be pulled: a worker that lacks the image
would reject the task ("No such image"). So the backend creates each service
with the manager's ``repo@sha256:…`` of that image, which every node pulls by
itself at task start, and sends the same credential as the service's
``X-Registry-Auth`` (``docker service create --with-registry-auth``): Swarm
keeps it with the service and hands it to the node that runs the task.

The registry in that reference is the one the manager pulled from, so it
must be reachable *by that name* from every node: for the node registry
(``registry: "local"``) that is ``[registry] listen`` on an address of the
cluster network (README, "Swarm: images on every node"), or the name
``registry.swarm_address`` gives (:func:`for_nodes`). A node that still
cannot pull rejects the task with "No such image": :func:`recent_failure`
turns that into a reason naming the node (the executor records it as an
``engine_error`` event). Pure functions.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from patrd.model.instances import RegistryAuth

NO_SUCH_IMAGE = "No such image:"
FAILED_TASK_STATES = frozenset({"failed", "rejected", "orphaned"})  # Task.Status.State


@dataclass(frozen=True, slots=True)
class PullSource:
    """How nodes get an image the manager holds: the repository it came from
    (None: asked for by image ID only) and the credential it was pulled with."""

    repository: str | None
    auth: RegistryAuth | None

    def __repr__(self) -> str:
        return f"PullSource(repository={self.repository!r}, auth={self.auth!r})"


def is_image_id(ref: str) -> bool:
    return ref.startswith("sha256:")


def repository_of(ref: str) -> str | None:
    """``host:5000/app`` of ``host:5000/app:v1`` or ``host:5000/app@sha256:…``; None for an ID."""
    if is_image_id(ref):
        return None
    if "@" in ref:
        return ref.split("@", 1)[0]
    head, _, last = ref.rpartition("/")
    if ":" in last:
        last = last.rsplit(":", 1)[0]
    return f"{head}/{last}" if head else last


def registry_of(ref: str) -> str | None:
    """The registry host of a reference (``host:5000``), None for Docker Hub names."""
    first, slash, _ = ref.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


def remember(previous: PullSource | None, ref: str, auth: RegistryAuth | None) -> PullSource:
    """What an ``ensure_image(ref, auth=…)`` teaches about the image it resolved to.

    An image asked for by ID keeps the repository learnt before (if any).
    """
    repository = repository_of(ref)
    if repository is None and previous is not None:
        repository = previous.repository
    return PullSource(repository=repository, auth=auth)


def node_reference(image: str, repo_digests: Iterable[str], source: PullSource | None) -> str:
    """The reference a service names so that any node can pull ``image``.

    ``image`` other than an ID is returned as it is (a tag or a digest
    reference: SwarmEngine pins a tag itself). For an ID: the manager's
    ``repo@sha256:…`` of the repository it was resolved from, else one of the
    credential's registry, else the first; the ID itself when the image has
    no registry digest at all (built on the manager: only the manager runs it).
    """
    if not is_image_id(image):
        return image
    digests = sorted(str(d) for d in repo_digests if "@sha256:" in str(d))
    if not digests:
        return image
    if source is not None and source.repository is not None:
        for digest in digests:
            if digest.split("@", 1)[0] == source.repository:
                return digest
    if source is not None and source.auth is not None:
        for digest in digests:
            if registry_of(digest) == source.auth.server:
                return digest
    return digests[0]


def for_nodes(
    ref: str, auth: RegistryAuth | None, local: str, nodes: str
) -> tuple[str, RegistryAuth | None]:
    """``ref`` and ``auth`` with the node registry's ``local`` name (how the manager
    pulls it) replaced by ``nodes`` (how every node reaches it: ``registry.swarm_address``)."""
    if not local or not nodes or nodes == local:
        return ref, auth
    if registry_of(ref) == local:
        ref = nodes + ref[len(local) :]
    if auth is not None and auth.server == local:
        auth = replace(auth, server=nodes)
    return ref, auth


def loopback_registry(nodes: str) -> bool:
    """Is ``host[:port]`` a loopback name (which no other node reaches)?"""
    if nodes.startswith("["):
        host = nodes[1:].split("]", 1)[0]
    else:
        host = nodes.rsplit(":", 1)[0] if nodes.count(":") == 1 else nodes
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def registry_auth_header(auth: RegistryAuth) -> str:
    """``X-Registry-Auth``: base64url of the auth config JSON (never logged)."""
    payload = json.dumps(
        {"username": auth.username, "password": auth.password, "serveraddress": auth.server}
    )
    return base64.urlsafe_b64encode(payload.encode()).decode()


def task_error_reason(error: str, node: str) -> str:
    """A task's error as a status reason; a failed pull says where to look."""
    if NO_SUCH_IMAGE in error:
        ref = error.split(NO_SUCH_IMAGE, 1)[1].strip()
        return (
            f"node {node or '?'} could not pull {ref}: its registry is unreachable from that "
            "node or refused the credential (README: Swarm: images on every node)"
        )
    return f"task failed on node {node or '?'}: {error}"


def recent_failure(tasks: Iterable[Mapping[str, Any]], addresses: Mapping[str, str]) -> str:
    """The newest failed or rejected task's error as a status reason ("" if none):
    Swarm replaces such a task at once, so the current one rarely shows it."""
    ordered = sorted(tasks, key=lambda t: (t.get("Version") or {}).get("Index", 0), reverse=True)
    for task in ordered:
        status = task.get("Status") or {}
        if status.get("State") in FAILED_TASK_STATES and status.get("Err"):
            node = addresses.get(str(task.get("NodeID") or ""), "")
            return task_error_reason(str(status["Err"]), node)
    return ""
