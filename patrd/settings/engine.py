"""``[engine]``: which container engine runs the instances.

``backend = "docker"`` (the default): containers on this node's Docker engine.
``backend = "swarm"``: one Swarm service per instance slot, placed across the
nodes of the swarm this node manages (patrd/engine/swarm.py). The Docker
socket is ``docker.socket`` either way: with ``swarm`` it must be a manager's.
``agent_port``: where the sampler reaches ``patrd agent`` on each swarm node
(patrd/observe/agent_client.py); its token is ``<data_dir>/agent.token``.
"""

from __future__ import annotations

from dataclasses import dataclass

from patrd.model import checks as c
from patrd.model.sections import setting

BACKENDS = ("docker", "swarm")


@dataclass(frozen=True)
class EngineConfig:
    backend: str = setting("docker", c.choice(BACKENDS), "docker (this node) or swarm (a manager)")
    agent_port: int = setting(
        7950, c.integer(1, 65535), "swarm: the port of `patrd agent` on every node"
    )

    @property
    def swarm(self) -> bool:
        return self.backend == "swarm"
