"""The other records the Store keeps: secrets (never their value), events, job runs. Pure."""

from __future__ import annotations

from dataclasses import dataclass

JOB_RUNS_KEPT = 50  # per job: older runs (and their logs) are dropped


@dataclass(frozen=True, slots=True)
class SecretRecord:
    """A secret as anyone may see it: never the value."""

    name: str
    version: int
    created_at: float
    updated_at: float
    used_by: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    deployment_id: str
    at: float
    kind: str
    message: str
    revision: int | None


@dataclass(frozen=True, slots=True)
class JobRunRecord:
    id: int
    deployment_id: str
    job: str
    trigger: str  # schedule | manual
    started_at: float
    ended_at: float | None
    exit_code: int | None
    outcome: str  # running | ok | failed | timeout | interrupted | error
    message: str


@dataclass(frozen=True, slots=True)
class NodeEventRecord:
    """An event of the node itself (patrd/observe/nodehealth.py, patrd/notify/)."""

    id: int
    at: float
    kind: str
    message: str
