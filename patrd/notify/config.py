"""``[[notify]]`` and ``[node]`` of the daemon config (patrd/settings/config.py calls these).

``[node]`` holds the thresholds of the node's own health events
(patrd/observe/nodehealth.py): ``disk.low`` and ``memory.pressure``. The disk guard of
image pulls has its own ``disk.min_free``; these names stay apart on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patrd.model.errors import ConfigError, SpecError
from patrd.notify.targets import Target, parse_target


@dataclass(frozen=True)
class NodeConfig:
    interval_s: float = 15.0  # how often the node is sampled and thresholds checked
    disk_low_percent: float = 10.0  # disk.low when a watched mount has less free (0: off)
    memory_low_percent: float = 10.0  # memory.pressure when less is available (0: off)
    docker_root: Path | None = None  # Docker's data root; None: ask Docker (docker info)
    watch_paths: tuple[Path, ...] = ()  # more mounts to report and guard


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
    table = raw.get("node", {})
    if not isinstance(table, Mapping):
        raise ConfigError("node", "must be a table")
    keys = {"interval_s", "disk_low_percent", "memory_low_percent", "docker_root", "watch_paths"}
    for key in table:
        if key not in keys:
            raise ConfigError(f"node.{key}", f"unknown key; known: {', '.join(sorted(keys))}")
    interval = _number(table, "interval_s", NodeConfig.interval_s, low=1.0, high=3600.0)
    disk = _number(table, "disk_low_percent", NodeConfig.disk_low_percent, low=0.0, high=99.0)
    memory = _number(table, "memory_low_percent", NodeConfig.memory_low_percent, 0.0, 99.0)
    root = table.get("docker_root")
    if root is not None and (not isinstance(root, str) or not root):
        raise ConfigError("node.docker_root", "must be a path")
    paths = table.get("watch_paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise ConfigError("node.watch_paths", "must be a list of paths")
    return NodeConfig(
        interval_s=interval,
        disk_low_percent=disk,
        memory_low_percent=memory,
        docker_root=_resolve(root, base_dir) if root else None,
        watch_paths=tuple(_resolve(p, base_dir) for p in paths),
    )


def _resolve(text: str, base_dir: Path) -> Path:
    path = Path(text)
    return path if path.is_absolute() else (base_dir / path).resolve()


def _number(table: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"node.{key}", f"must be a number from {low:g} to {high:g}")
    return float(value)
