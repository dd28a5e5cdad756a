"""disk.min_free parsing, the refusal verdict (pure), and where Docker keeps its data."""

from __future__ import annotations

from pathlib import Path

import pytest

from patrd.engine.diskguard import (
    DiskGuard,
    DiskReading,
    MinFree,
    docker_data_root,
    guarded_paths,
    parse_min_free,
    verdict,
)
from patrd.model.errors import ConfigError, EngineError
from patrd.notify.config import NodeConfig
from patrd.observe.nodehealth import node_config
from patrd.settings import config

GIB = 1024**3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2GiB", MinFree(size=2 * GIB)),
        ("500MB", MinFree(size=500_000_000)),
        ("1048576", MinFree(size=1048576)),
        ("5%", MinFree(percent=5.0)),
        ("2GiB or 5%", MinFree(size=2 * GIB, percent=5.0)),
        ("100%", MinFree(percent=100.0)),
    ],
)
def test_parse(text: str, expected: MinFree) -> None:
    assert parse_min_free(text, "disk.min_free") == expected


@pytest.mark.parametrize("text", ["", "lots", "5 %%", "101%", "2GiB or 3GiB", "-1GiB", "2XB"])
def test_refused(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_min_free(text, "disk.min_free")
    assert err.value.key == "disk.min_free"


def test_the_smaller_part_counts() -> None:
    both = MinFree(size=2 * GIB, percent=5.0)
    assert both.threshold(10 * GIB) == GIB // 2  # small disk: 5%
    assert both.threshold(1000 * GIB) == 2 * GIB  # big disk: 2 GiB


def test_verdict_names_the_disk_and_the_threshold() -> None:
    low = DiskReading("docker", "/var/lib/docker", total=100 * GIB, free=GIB)
    ok = DiskReading("data_dir", "/var/lib/patrd", total=100 * GIB, free=50 * GIB)
    min_free = parse_min_free("2GiB or 5%", "disk.min_free")
    assert verdict([ok], min_free) is None
    reason = verdict([ok, low], min_free)
    assert reason is not None
    assert "1.0GiB free on /var/lib/docker (docker)" in reason
    assert "disk.min_free 2.0GiB or 5% (2.0GiB)" in reason


def test_config_keys() -> None:
    parsed = config.parse(
        {
            "images": {"keep_releases": 3},
            "disk": {"min_free": "10%"},
            "proxy": {"pause_timeout_s": 5},
        },
        base_dir=Path("."),
    )
    assert parsed.images.keep_releases == 3
    assert parsed.disk.min_free == MinFree(percent=10.0)
    assert parsed.proxy.pause_timeout_s == 5.0
    defaults = config.parse({}, base_dir=Path("."))
    assert defaults.images.keep_releases == 5
    assert defaults.disk.min_free == MinFree(size=2 * GIB, percent=5.0)
    assert defaults.proxy.pause_timeout_s == 30.0
    with pytest.raises(ConfigError) as err:
        config.parse({"images": {"keep_releases": 0}}, base_dir=Path("."))
    assert err.value.key == "images.keep_releases"
    with pytest.raises(ConfigError) as err:
        config.parse({"disk": {"min_free": "huge"}}, base_dir=Path("."))
    assert err.value.key == "disk.min_free"


async def test_guard_reads_the_real_disk_and_wakes_the_collector_when_low(tmp_path: Path) -> None:
    woken: list[bool] = []

    async def paths() -> list[tuple[str, str]]:
        return [("data_dir", str(tmp_path))]

    low = DiskGuard(paths, parse_min_free("100%", "disk.min_free"), lambda: woken.append(True))
    reason = await low.refusal()
    assert reason is not None and f"on {tmp_path} (data_dir)" in reason
    assert woken == [True]
    [reading] = low.readings
    assert 0 < reading.free <= reading.total
    fine = DiskGuard(paths, parse_min_free("1MiB", "disk.min_free"), lambda: woken.append(True))
    assert await fine.refusal() is None
    assert woken == [True]


class DockerAnswers:
    """``data_root`` of the engine: fails ``down`` times, then answers ``root``."""

    def __init__(self, root: str, down: int = 0) -> None:
        self.root, self.down, self.asked = root, down, 0

    async def data_root(self) -> str:
        self.asked += 1
        if self.asked <= self.down:
            raise EngineError("docker info: connection refused")
        return self.root


async def test_docker_data_root_is_none_while_docker_is_down() -> None:
    engine = DockerAnswers("/srv/docker", down=1)
    assert await docker_data_root(engine) is None
    assert await docker_data_root(engine) == "/srv/docker"


async def test_guarded_paths_ask_docker_until_it_answers_then_keep_it(tmp_path: Path) -> None:
    engine = DockerAnswers("/srv/docker", down=1)
    paths = guarded_paths(engine, str(tmp_path))
    assert await paths() == [("data_dir", str(tmp_path))]
    assert await paths() == [("docker", "/srv/docker"), ("data_dir", str(tmp_path))]
    assert await paths() == [("docker", "/srv/docker"), ("data_dir", str(tmp_path))]
    assert engine.asked == 2


async def test_node_config_asks_docker_only_when_docker_root_is_unset(tmp_path: Path) -> None:
    engine = DockerAnswers("/srv/docker")
    assert (await node_config(NodeConfig(), engine)).docker_root == Path("/srv/docker")
    assert await node_config(NodeConfig(docker_root=tmp_path), engine) == NodeConfig(
        docker_root=tmp_path
    )
    assert engine.asked == 1
    assert await node_config(NodeConfig(), DockerAnswers("", down=1)) == NodeConfig()
