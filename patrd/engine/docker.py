"""The engine adapter: everything patrd asks of Docker goes through here.

Controllers speak of instances and networks; this adapter turns that into
Docker Engine API calls over aiodocker and is the only place that sees
aiodocker's errors (they leave as ``EngineError``). It implements the
``Engine`` protocol (patrd/engine/protocol.py), as the Swarm adapter does.

``DockerEngine`` is one object to its callers, written as one part per kind
of Docker object; the parts share only :class:`DockerBase` (the client, the
owner label, the hardening):

* docker_containers.py: instances and one-offs, start/stop/remove, events
* docker_images.py: pulls, digests, image removal (GC, disk guard)
* docker_networks.py: per-deployment bridges and their subnets
* docker_volumes.py: deployment volumes, labelled and never shared
* docker_exec.py: logs, stats, exec and attached exec streams
"""

from __future__ import annotations

from patrd.engine.docker_containers import DockerContainers
from patrd.engine.docker_exec import DockerExec
from patrd.engine.docker_images import DockerImages
from patrd.engine.docker_networks import DockerNetworks
from patrd.engine.docker_volumes import DockerVolumes


class DockerEngine(DockerContainers, DockerImages, DockerNetworks, DockerVolumes, DockerExec):
    """``Engine`` over the local Docker daemon; the API version is negotiated."""
