"""Whose fault a failed start is (patrd/control/start_faults.py): a table."""

from __future__ import annotations

import pytest

from patrd.control.start_faults import (
    StartFault,
    StartRepair,
    classify_start_error,
    start_repair,
)

CLASSIFIED = [
    # What CI saw after a dockerd restart (test_dockerd_restart_traffic_resumes...).
    (
        "start 3fd19010aa: failed to create task for container: task "
        "3fd19010aabbccdd: already exists: unknown",
        StartFault.ENGINE_STALE,
    ),
    (
        "start 3fd19010aa: endpoint with name patrd-web-r1-0-12ef already exists "
        "in network patrd-web",
        StartFault.ENGINE_STALE,
    ),
    # Measured on a private dockerd: starts sent while it shuts down.
    (
        "start 3fd19010aa: failed to update store for object type *libnetwork.endpoint: "
        "open : no such file or directory",
        StartFault.ENGINE_AWAY,
    ),
    (
        "start 3fd19010aa: error creating overlay mount to /d/overlay2/x/merged: invalid argument",
        StartFault.ENGINE_AWAY,
    ),
    (
        "start 3fd19010aa: Cannot connect to Docker Engine via unix://localhost "
        "[Cannot connect to unix socket /tmp/pd/docker.sock [No such file or directory]]",
        StartFault.ENGINE_AWAY,
    ),
    (
        "start 3fd19010aa: Docker unreachable: [Errno 111] Connection refused",
        StartFault.ENGINE_AWAY,
    ),
    ("start 3fd19010aa: connection error: desc = transport is closing", StartFault.ENGINE_AWAY),
    # The app's own problems: they count.
    (
        "start 3fd19010aa: OCI runtime create failed: container_linux.go:380: starting "
        'container process caused: exec: "/app": stat /app: no such file or directory',
        StartFault.APP,
    ),
    (
        "start 3fd19010aa: unable to find user nobody2: no matching entries in passwd file",
        StartFault.APP,
    ),
    ("start 3fd19010aa: exec format error", StartFault.APP),
    # A volume or file "already exists" is not the engine's stale task or endpoint.
    ("start 3fd19010aa: mkdir /data: file already exists", StartFault.APP),
]


@pytest.mark.parametrize(("message", "fault"), CLASSIFIED)
def test_classify_start_error(message: str, fault: StartFault) -> None:
    assert classify_start_error(message) is fault


REPAIRS = [
    (StartFault.APP, 0, StartRepair.COUNT),
    (StartFault.ENGINE_AWAY, 0, StartRepair.RETRY),
    (StartFault.ENGINE_STALE, 1, StartRepair.RETRY),  # the engine may still be settling
    (StartFault.ENGINE_STALE, 2, StartRepair.REPLACE),  # it did not: a new container
    (StartFault.ENGINE_STALE, 5, StartRepair.REPLACE),
]


@pytest.mark.parametrize(("fault", "repeats", "repair"), REPAIRS)
def test_start_repair(fault: StartFault, repeats: int, repair: StartRepair) -> None:
    assert start_repair(fault, repeats) is repair
