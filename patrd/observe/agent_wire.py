"""What the node agent and the manager say to each other (pure), and the token file.

The agent (patrd/observe/agent.py) answers ``GET /v1/agent/tasks`` with a
*report*: its node's running patrd task containers, each with the cumulative
counters of its cgroup (:class:`~patrd.observe.counters.Counters`). The
manager (patrd/observe/agent_client.py) turns two reports into rates exactly
as it does local readings: ``at`` is the agent's monotonic clock, and the
manager only ever subtracts two readings of one task, which live on one node.

Every request carries ``Authorization: Bearer <token>``; the token is the
content of a file the manager writes once (``<data_dir>/agent.token``, mode
0600) and the operator copies to each node. :func:`authorized` compares in
constant time; a missing or wrong token is a 401 and the token is never
logged.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from patrd.observe.counters import Counters

TOKEN_FILE = "agent.token"  # noqa: S105 (a file name) in the manager's data dir
DEFAULT_PORT = 7950
TASKS_PATH = "/v1/agent/tasks"
_FIELDS = {f.name for f in fields(Counters)}
_INTS = ("cpu_ns", "memory_bytes")


def authorized(header: str | None, token: str) -> bool:
    """Does an ``Authorization`` header carry ``token`` (constant-time compare)?"""
    if not token or not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def counters_json(counters: Counters) -> dict[str, Any]:
    return asdict(counters)


def counters_from_json(body: Mapping[str, Any]) -> Counters:
    """A report's counters; ``ValueError`` when a required figure is missing or not a number."""
    values = {k: v for k, v in body.items() if k in _FIELDS}
    for key in ("at", *_INTS):
        if not isinstance(values.get(key), int | float) or isinstance(values.get(key), bool):
            raise ValueError(f"counters: {key} must be a number")
    for key, value in values.items():
        if key != "source" and value is not None and not isinstance(value, int | float):
            raise ValueError(f"counters: {key} must be a number or null")
    values["cpu_ns"] = int(values["cpu_ns"])
    values["memory_bytes"] = int(values["memory_bytes"])
    values["source"] = str(values.get("source", "cgroup"))
    return Counters(**values)


def report(node_id: str, tasks: Iterable[tuple[str, str, Counters]]) -> dict[str, Any]:
    """The agent's answer: (task ID, container ID, counters) of each task it could read."""
    return {
        "node": node_id,
        "tasks": [
            {"task": task, "container": container, "counters": counters_json(counters)}
            for task, container, counters in tasks
        ],
    }


def parse_report(body: Any) -> dict[str, Counters]:
    """Task ID → counters; ``ValueError`` for a body that is not a report."""
    if not isinstance(body, Mapping) or not isinstance(body.get("tasks"), list):
        raise ValueError("not an agent report (no tasks list)")
    found: dict[str, Counters] = {}
    for item in body["tasks"]:
        if not isinstance(item, Mapping) or not isinstance(item.get("task"), str):
            raise ValueError("agent report: a task without its ID")
        counters = item.get("counters")
        if not isinstance(counters, Mapping):
            raise ValueError(f"agent report: task {item['task']} without counters")
        found[item["task"]] = counters_from_json(counters)
    return found


def task_of(instance_id: str) -> str:
    """The task ID in a swarm instance ID ``SERVICE.TASK`` ("" for a plain container)."""
    return instance_id.partition(".")[2]


def merge(
    ids: Sequence[str], reports: Iterable[Mapping[str, Counters]]
) -> dict[str, Counters | None]:
    """Instance ID → counters for every swarm instance among ``ids`` (None: no node
    reported it: its agent is away, or it stopped meanwhile). Plain containers
    (no task) are left out: the sampler reads those itself."""
    by_task: dict[str, Counters] = {}
    for one in reports:
        by_task.update(one)
    return {cid: by_task.get(task_of(cid)) for cid in ids if task_of(cid)}


def relabel(found: Mapping[str, Counters], via: str) -> dict[str, Counters]:
    """The same counters with ``source`` saying where they came from (``cgroup v1 via agent``)."""
    return {
        task: Counters(**{**asdict(c), "source": f"{c.source} via {via}"})
        for task, c in found.items()
    }


def read_token(path: Path) -> str:
    """The token in ``path`` (stripped); ``ValueError`` when empty, ``OSError`` when unreadable."""
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"{path} is empty")
    return token


def ensure_token(path: Path) -> str:
    """The manager's token: read, or made (random, 0600) the first time."""
    with contextlib.suppress(FileNotFoundError):
        return read_token(path)
    token = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, path)
    return token
