"""Startup and liveness probes: a pure state machine and a tiny HTTP checker.

The daemon probes instances itself (over the deployment's network), so any
image works: nothing has to be installed inside it.

Startup: the instance gets no traffic until a probe passes. Probes are sent
every ``min(period_s, 1 s)`` so a rollout is not slowed by a long period; the
budget is ``failure_threshold * period_s`` seconds from the container's start,
after which the instance counts as a failed start. Without a startup probe,
"passes" means the first HTTP port accepts a TCP connection, within
``docker.ready_timeout_s``.

Liveness: only after startup passed; every ``period_s``; after
``failure_threshold`` consecutive failures the instance is unhealthy (taken
out of the pool, then restarted). One pass resets the count.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, replace
from enum import StrEnum

STARTUP_POLL_MAX_S = 1.0
TCP_POLL_S = 0.05


class Phase(StrEnum):
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"  # startup budget spent: a failed start
    UNHEALTHY = "unhealthy"  # liveness threshold reached: restart


@dataclass(frozen=True, slots=True)
class ProbeStatus:
    phase: Phase
    started_at: float
    startup_attempts: int = 0
    liveness_failures: int = 0
    last_ok: bool | None = None
    last_detail: str = ""  # "200", "connection refused", "timeout after 3s"
    checked_at: float | None = None


def starting(now: float) -> ProbeStatus:
    return ProbeStatus(phase=Phase.STARTING, started_at=now)


def startup_step(
    status: ProbeStatus, ok: bool, detail: str, now: float, budget_s: float
) -> ProbeStatus:
    """One startup probe result → the next status."""
    if status.phase is not Phase.STARTING:
        return status
    checked = replace(
        status,
        startup_attempts=status.startup_attempts + 1,
        last_ok=ok,
        last_detail=detail,
        checked_at=now,
    )
    if ok:
        return replace(checked, phase=Phase.READY)
    if now - status.started_at >= budget_s:
        return replace(checked, phase=Phase.FAILED)
    return checked


def liveness_step(
    status: ProbeStatus, ok: bool, detail: str, now: float, threshold: int
) -> ProbeStatus:
    """One liveness probe result → the next status (only once ready)."""
    if status.phase is not Phase.READY:
        return status
    failures = 0 if ok else status.liveness_failures + 1
    checked = replace(
        status, liveness_failures=failures, last_ok=ok, last_detail=detail, checked_at=now
    )
    if failures >= threshold:
        return replace(checked, phase=Phase.UNHEALTHY)
    return checked


def startup_interval(period_s: float) -> float:
    return min(period_s, STARTUP_POLL_MAX_S)


def passed(status_code: int) -> bool:
    return 200 <= status_code <= 399


async def http_probe(host: str, port: int, path: str, timeout_s: float) -> tuple[bool, str]:
    """GET ``path``; (passed, detail). Never raises for network trouble."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "User-Agent: patrd-probe\r\nConnection: close\r\n\r\n".encode("latin-1")
            )
            await writer.drain()
            line = await reader.readline()
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            return False, "malformed response"
        code = int(parts[1])
        return passed(code), str(code)
    except TimeoutError:
        return False, f"timeout after {timeout_s:g}s"
    except OSError as exc:
        return False, _describe(exc)
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def tcp_probe(host: str, port: int, timeout_s: float = 1.0) -> tuple[bool, str]:
    """Does ``host:port`` accept a connection?"""
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return False, f"timeout after {timeout_s:g}s"
    except OSError as exc:
        return False, _describe(exc)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, "accepted"


def _describe(exc: OSError) -> str:
    """'Connection refused', 'No route to host': short, stable, no addresses."""
    if exc.errno:
        return os.strerror(exc.errno)
    return exc.strerror or type(exc).__name__
