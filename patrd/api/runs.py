"""What the exec, run and jobs routes need from the daemon, and their small shared helpers."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from aiohttp import web

from patrd.engine.docker_exec import ExecSession
from patrd.model.instances import Instance
from patrd.run.jobs import JobScheduler
from patrd.run.oneoff import OneOffRunner
from patrd.state.store import Store

EXEC_ATTACH_WITHIN_S = 60.0  # a created exec must be attached within this long


class ExecEngine(Protocol):
    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]: ...
    async def exec_create(
        self, container_id: str, command: tuple[str, ...], *, tty: bool, stdin: bool
    ) -> str: ...
    async def exec_start(self, exec_id: str) -> ExecSession: ...


@dataclass(frozen=True, slots=True)
class PendingExec:
    deployment_id: str
    exec_id: str
    instance: str
    tty: bool
    stdin: bool
    expires: float


@dataclass
class ExecSessions:
    """Created execs waiting for their attach; each can be attached once."""

    ttl_s: float = EXEC_ATTACH_WITHIN_S
    _pending: dict[str, PendingExec] = field(default_factory=dict)

    def add(
        self, deployment_id: str, exec_id: str, instance: str, *, tty: bool, stdin: bool
    ) -> str:
        now = time.monotonic()
        for token in [t for t, p in self._pending.items() if p.expires < now]:
            del self._pending[token]
        token = secrets.token_urlsafe(18)
        self._pending[token] = PendingExec(
            deployment_id, exec_id, instance, tty, stdin, now + self.ttl_s
        )
        return token

    def take(self, token: str, deployment_id: str) -> PendingExec | None:
        pending = self._pending.get(token)
        if pending is None or pending.deployment_id != deployment_id:
            return None
        del self._pending[token]
        return pending if pending.expires >= time.monotonic() else None


@dataclass
class Runs:
    store: Store
    engine: ExecEngine
    runner: OneOffRunner
    jobs: JobScheduler | None = None
    sessions: ExecSessions = field(default_factory=ExecSessions)


RUNS = web.AppKey("patrd.runs", Runs)


def runs_of(request: web.Request) -> Runs:
    parts = request.app.get(RUNS)
    if parts is None:
        raise web.HTTPServiceUnavailable(text="exec, run and jobs are not wired in this daemon")
    return parts


def rfc3339(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
