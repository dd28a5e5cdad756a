"""``[[notify]]`` and ``[node]`` of the daemon config (patrd/settings/config.py composes them).

``[node]`` holds the thresholds of the node's own health events
(patrd/observe/nodehealth.py): ``disk.low`` and ``memory.pressure``. The disk guard of
image pulls has its own ``disk.min_free``; these names stay apart on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patrd.model import checks as c
from patrd.model.errors import ConfigError, SpecError
from patrd.model.sections import load_section, setting
from patrd.notify.targets import Target, parse_target


def _docker_root(value: Any, key: str, base_dir: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, "must be a path")
    return _resolve(value, base_dir)


def _watch_paths(value: Any, key: str, base_dir: Path) -> tuple[Path, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ConfigError(key, "must be a list of paths")
    return tuple(_resolve(p, base_dir) for p in value)


@dataclass(frozen=True)
class NodeConfig:
    """``[node]``: the node's own health events."""

    interval_s: float = setting(
        15.0, c.number_in(1.0, 3600.0), "how often the node is sampled and thresholds checked"
    )
    disk_low_percent: float = setting(
        10.0, c.number_in(0.0, 99.0), "disk.low when a watched mount has less free (0: off)"
    )
    memory_low_percent: float = setting(
        10.0, c.number_in(0.0, 99.0), "memory.pressure when less is available (0: off)"
    )
    docker_root: Path | None = setting(
        None, _docker_root, "Docker's data root; unset: ask Docker (docker info)"
    )
    watch_paths: tuple[Path, ...] = setting((), _watch_paths, "more mounts to report and guard")


def parse_notify(raw: Mapping[str, Any]) -> tuple[Target, ...]:
    value = raw.get("notify", [])
    if not isinstance(value, list):
        raise ConfigError("notify", "must be an array of tables ([[notify]])")
    targets: list[Target] = []
    for i, entry in enumerate(value):
        try:
            target = parse_target(entry, source="config")
        except SpecError as exc:
            raise ConfigError(f"notify[{i}].{exc.field}", exc.message) from None
        if any(t.name == target.name for t in targets):
            raise ConfigError(f"notify[{i}].name", f"{target.name!r} is used twice")
        targets.append(target)
    return tuple(targets)


def parse_node(raw: Mapping[str, Any], base_dir: Path) -> NodeConfig:
    return load_section(NodeConfig, raw, "node", base_dir)


def _resolve(text: str, base_dir: Path) -> Path:
    path = Path(text)
    return path if path.is_absolute() else (base_dir / path).resolve()
