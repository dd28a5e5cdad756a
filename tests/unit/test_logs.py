"""Logs (patrd/observe/logs.py): frames, timestamps, kept logs and their queries."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from patrd.model.instances import ContainerState, Instance
from patrd.observe.logs import LogKeeper, LogLine, LogQuery, format_ts, parse_frame, parse_ts
from patrd.settings.config import LogsConfig

# --- logs ------------------------------------------------------------------------------------


def test_docker_timestamps() -> None:
    assert parse_ts(b"2024-05-01T12:34:56.123456789Z") == 1714566896123456789
    assert parse_ts(b"2024-05-01T12:34:56.1Z") == 1714566896100000000
    assert parse_ts(b"2024-05-01T12:34:56Z") == 1714566896000000000
    assert parse_ts(b"2024-05-01T14:34:56.5+02:00") == 1714566896500000000
    assert format_ts(1714566896000000001) == "2024-05-01T12:34:56.000000001Z"
    with pytest.raises(ValueError):
        parse_ts(b"yesterday")


INST = Instance(
    container_id="f" * 64,
    container_name="patrd-web-r2-1-abcd",
    deployment_id="dep1",
    deployment="web",
    revision=2,
    slot=1,
    state=ContainerState.RUNNING,
    ip="10.0.0.2",
    exit_code=None,
)


def test_parse_frame_tags_the_line() -> None:
    line = parse_frame("stderr", b"2024-05-01T12:34:56.5Z oops \xff\n", INST)
    assert line == LogLine(1714566896500000000, "web-1", "f" * 12, 2, "stderr", "oops \ufffd")
    assert line.to_json()["t"] == "2024-05-01T12:34:56.500000000Z"
    assert parse_frame("stdout", b"no-timestamp", INST) is None
    q = LogQuery(instance="web-1", since_ns=1, until_ns=2)
    assert q.wants("web-1", "zzz") and not q.wants("web-0", "a")
    assert LogQuery(instance="fff").wants("web-0", "fffff")  # a container id prefix
    assert q.in_range(1) and q.in_range(2) and not q.in_range(3)


class _Engine:
    """A stand-in engine for the keeper (unit test of its file handling only)."""

    def __init__(self, frames: list[tuple[str, bytes]]) -> None:
        self.frames = frames
        self.stopped: list[str] = []

    async def stop(self, container_id: str, stop_timeout_s: int) -> None:
        self.stopped.append(container_id)

    async def logs(self, container_id: str, **_: Any):
        for frame in self.frames:
            yield frame

    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]:
        return []


async def test_keeper_keeps_the_newest_bytes_and_trims(tmp_path: Path) -> None:
    frames = [("stdout", f"2024-05-01T12:00:{i:02d}.0Z line {i}".encode()) for i in range(50)]
    engine = _Engine(frames)
    keeper = LogKeeper(engine, tmp_path / "logs", LogsConfig(keep_bytes_per_instance=600), 5)
    await keeper.on_remove(INST)
    assert engine.stopped == [INST.container_id]
    (kept,) = await keeper.read("dep1", LogQuery(tail=None))
    assert 0 < len(kept) < 50 and kept[-1].text == "line 49"  # the newest survive
    assert all(x.kept and x.instance == "web-1" and x.revision == 2 for x in kept)
    (file,) = (tmp_path / "logs" / "dep1").iterdir()
    assert file.stat().st_size <= 600 + 200 and file.stat().st_mode & 0o777 == 0o600
    assert await keeper.read("dep1", LogQuery(tail=3, instance="web-0")) == []
    # retention: an old file goes; a deleted deployment's folder goes
    old = time.time() - 10 * 24 * 3600
    os.utime(file, (old, old))
    assert await keeper.trim({"dep1"}) == 1
    await keeper.on_remove(INST)
    assert await keeper.trim(set()) == 1 and not (tmp_path / "logs" / "dep1").exists()


async def test_keeper_total_cap_drops_oldest_first(tmp_path: Path) -> None:
    frames = [("stdout", f"2024-05-01T12:00:{i:02d}.0Z {'x' * 80}".encode()) for i in range(10)]
    keeper = LogKeeper(_Engine(frames), tmp_path, LogsConfig(keep_bytes_total=3000), 5)
    for n in range(3):
        await keeper.on_remove(INST)
        path = max((tmp_path / "dep1").iterdir(), key=lambda p: p.name)
        os.utime(path, (time.time() - 100 + n, time.time() - 100 + n))
        time.sleep(0.002)  # distinct file names (ms)
    assert len(list((tmp_path / "dep1").iterdir())) == 3
    assert await keeper.trim({"dep1"}) == 1
    assert len(list((tmp_path / "dep1").iterdir())) == 2
