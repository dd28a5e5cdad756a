"""Whose fault a failed start is, and what the executor does about it. Pure.

Starting a container fails for the app's own reasons (its entrypoint is
missing, its user does not exist: the crash count and backoff judge those)
and for the engine's: Docker is unreachable or going down, or it kept stale
state of this very container from before a restart (a containerd task, a
network endpoint named after the container). Those are not the app's crash
and never count towards a crash loop (docs/design.md, "Starts that fail
because of the engine").
"""

from __future__ import annotations

import re
from enum import StrEnum


class StartFault(StrEnum):
    APP = "app"  # the container's own problem: counts as a failed start
    ENGINE_AWAY = "engine_away"  # Docker unreachable or shutting down: try again later
    ENGINE_STALE = "engine_stale"  # Docker kept stale state of this container


class StartRepair(StrEnum):
    COUNT = "count"  # a crash of the app: crash count and backoff
    RETRY = "retry"  # not counted; the pass backs off and tries again
    REPLACE = "replace"  # remove the container; the next pass creates a fresh one


# The same stale-state error this many times in a row on one container: starting
# it again will not help (a leftover containerd task stays), a new container does
# (a new id and a new name, so a new task and a new endpoint).
STALE_REPEATS_BEFORE_REPLACE = 2

_AWAY = (
    "unreachable",  # patrd/engine/docker.py: the socket did not answer
    "cannot connect to docker engine",  # aiodocker: nothing listens on the socket
    "transport is closing",  # containerd going down under dockerd
    "connection refused",
    "failed to update store for object type",  # libnetwork's store, closed at shutdown
    "error creating overlay mount",  # the layer store, unmounted at shutdown
)
_STALE = (
    re.compile(r"task [0-9a-f]+:? already exists"),  # containerd kept the old task
    re.compile(r"endpoint with name \S+ already exists in network"),  # libnetwork's leftover
)


def classify_start_error(message: str) -> StartFault:
    """What an engine error message from ``start`` (or create + start) says about whose fault."""
    text = message.lower()
    if any(p.search(text) for p in _STALE):
        return StartFault.ENGINE_STALE
    if any(marker in text for marker in _AWAY):
        return StartFault.ENGINE_AWAY
    return StartFault.APP


def start_repair(fault: StartFault, stale_repeats: int) -> StartRepair:
    """The repair for a failed start; ``stale_repeats``: stale-state failures of this
    container in a row, this one included."""
    if fault is StartFault.APP:
        return StartRepair.COUNT
    if fault is StartFault.ENGINE_STALE and stale_repeats >= STALE_REPEATS_BEFORE_REPLACE:
        return StartRepair.REPLACE
    return StartRepair.RETRY
