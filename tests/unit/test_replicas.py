"""Replica arithmetic (patrd/model/replicas.py) and the naming scheme (patrd/model/naming.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from patrd.model.deployment import DeploymentRecord
from patrd.model.naming import (
    container_name,
    instance_name,
    network_name,
    oneoff_container_name,
    oneoff_hostname,
    volume_name,
    volume_names,
)
from patrd.model.replicas import clamp, effective_replicas, eligible, volume_slots
from patrd.model.spec import Scale
from tests.support.observed import deployment_record

VOLUME = {"data": {"path": "/data", "size_gb": 1}}


def _record(scale: dict[str, int], replicas: int | None, **extra: Any) -> DeploymentRecord:
    return deployment_record({"name": "web", "scale": scale, **extra}, replicas)


@pytest.mark.parametrize(
    ("scale", "replicas", "volumes", "eligible_", "effective", "slots"),
    [
        # fixed scale: the stored count is never used for instances
        ({"min": 1, "max": 1}, None, False, False, 1, 1),
        ({"min": 2, "max": 2}, 5, False, False, 2, 5),
        # a range: the autoscaler's count, clamped to [min, max]; none stored: min
        ({"min": 2, "max": 5}, None, False, True, 2, 2),
        ({"min": 2, "max": 5}, 4, False, True, 4, 4),
        ({"min": 2, "max": 5}, 5, False, True, 5, 5),
        ({"min": 2, "max": 3}, 9, False, True, 3, 9),
        ({"min": 2, "max": 3}, 1, False, True, 2, 2),
        ({"min": 1, "max": 4}, 0, False, True, 1, 1),
        # volumes: never autoscaled, whatever is stored
        ({"min": 2, "max": 2}, 5, True, False, 2, 5),
        ({"min": 3, "max": 3}, None, True, False, 3, 3),
    ],
)
def test_replica_table(
    scale: dict[str, int],
    replicas: int | None,
    volumes: bool,
    eligible_: bool,
    effective: int,
    slots: int,
) -> None:
    record = _record(scale, replicas, **({"volumes": VOLUME} if volumes else {}))
    assert eligible(record.spec) is eligible_
    assert effective_replicas(record) == effective
    assert volume_slots(record) == slots


@pytest.mark.parametrize(
    ("low", "high", "replicas", "expected"),
    [(1, 3, 0, 1), (1, 3, 1, 1), (1, 3, 2, 2), (1, 3, 3, 3), (1, 3, 7, 3), (2, 2, 1, 2)],
)
def test_clamp(low: int, high: int, replicas: int, expected: int) -> None:
    assert clamp(Scale(min=low, max=high), replicas) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (instance_name("web", 0), "web-0"),
        (instance_name("a-b", 12), "a-b-12"),
        (network_name("web"), "patrd-web"),
        (oneoff_container_name("web", "r1a2"), "patrd-web-r1a2"),
        (oneoff_hostname("web", "r1a2"), "web-r1a2"),
        (oneoff_hostname("w" * 60, "run123"), ("w" * 60 + "-ru")),
        (volume_name("db", "data", 1), "patrd.db.data.1"),
    ],
)
def test_names(name: str, expected: str) -> None:
    assert name == expected


def test_container_names_differ_per_creation() -> None:
    names = {container_name("web", 3, 1) for _ in range(20)}
    assert all(re.fullmatch(r"patrd-web-r3-1-[0-9a-f]{4}", n) for n in names)
    assert len(names) > 1  # a slot created again never meets its previous container


def test_volume_names_volume_by_volume() -> None:
    assert volume_names("db", ["data", "logs"], range(2)) == [
        "patrd.db.data.0",
        "patrd.db.data.1",
        "patrd.db.logs.0",
        "patrd.db.logs.1",
    ]
    assert volume_names("db", ["data"], range(0)) == []
