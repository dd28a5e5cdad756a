"""The proxy as the daemon holds it: one process or N workers, one interface.

:func:`build_proxy` is the one place that decides: ``proxy.workers = 0``
runs :class:`ProxyServer` on the daemon's own event loop; ``N`` ≥ 1 (or
"auto") runs :class:`ProxyWorkers`, N processes on ``proxy.event_loop``.
Both satisfy :class:`Proxy`. The benchmark (scripts/bench/proxy) builds the
proxy through here too, so it measures what the daemon runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from patrd.proxy.router import RoutingTable
from patrd.proxy.runtime import EventLoop, ProxyRuntime, loop_factory, run_event_loop
from patrd.proxy.server import ProxyOptions, ProxyServer
from patrd.proxy.stats import DeploymentCounters
from patrd.proxy.workers import CertSource, ChallengeSource, ProxyWorkers
from patrd.tls.certstore import CertStore

__all__ = [
    "EventLoop",
    "Proxy",
    "ProxyRuntime",
    "build_proxy",
    "loop_factory",
    "run_event_loop",
]


class Proxy(Protocol):
    """What the daemon, the controller (routes, drain) and ``/metrics`` use."""

    https_bound: list[tuple[str, int]]

    def set_table(self, table: RoutingTable) -> None: ...

    def outstanding(self, host: str, port: int) -> int: ...

    @property
    def deployment_stats(self) -> dict[str, DeploymentCounters]: ...

    @property
    def active_requests(self) -> int: ...

    @property
    def limited_requests(self) -> int: ...

    @property
    def refused_connections(self) -> int: ...

    @property
    def timeouts(self) -> dict[str, int]: ...

    async def refresh_stats(self) -> None: ...

    async def start(
        self, listens: Sequence[tuple[str, int]], tls_listens: Sequence[tuple[str, int]] = ()
    ) -> list[tuple[str, int]]: ...

    async def stop(self, timeout: float | None = None) -> None: ...  # noqa: ASYNC109


def build_proxy(
    options: ProxyOptions,
    runtime: ProxyRuntime,
    *,
    certs: CertStore,
    challenges: ChallengeSource | None,
    log_level: str = "info",
    log_format: str = "logfmt",
) -> Proxy:
    """The daemon's proxy: in-process (``workers == 0``) or worker processes."""
    if runtime.resolved_workers() == 0:
        return ProxyServer(
            options,
            challenges=challenges.tokens if challenges is not None else None,
            has_certificate=certs.has,
            ssl_context=certs.listener_context(),
        )
    source: CertSource = certs
    return ProxyWorkers(
        options,
        runtime,
        certs=source,
        challenges=challenges,
        log_level=log_level,
        log_format=log_format,
    )
