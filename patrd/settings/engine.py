"""``[engine]``: which container engine runs the instances.

``backend = "docker"`` (the default): containers on this node's Docker engine.
``backend = "swarm"``: one Swarm service per instance slot, placed across the
nodes of the swarm this node manages (patrd/engine/swarm.py). The Docker
socket is ``docker.socket`` either way: with ``swarm`` it must be a manager's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from patrd.model.errors import ConfigError

BACKENDS = ("docker", "swarm")


@dataclass(frozen=True)
class EngineConfig:
    backend: str = "docker"

    @property
    def swarm(self) -> bool:
        return self.backend == "swarm"


def parse_engine(raw: Mapping[str, Any]) -> EngineConfig:
    table = raw.get("engine", {})
    if not isinstance(table, Mapping):
        raise ConfigError("engine", "must be a table")
    for key in table:
        if key != "backend":
            raise ConfigError(f"engine.{key}", "unknown key; known: backend")
    backend = table.get("backend", EngineConfig.backend)
    if backend not in BACKENDS:
        raise ConfigError("engine.backend", f"must be one of {', '.join(BACKENDS)}")
    return EngineConfig(backend=str(backend))
