"""The proxy as N worker processes fed by the daemon (the control plane stays one process).

Shape:

* The daemon binds every listener **N times** with ``SO_REUSEPORT`` (one
  socket per worker and address) and keeps its copies: a worker that dies
  leaves its socket bound, and its replacement takes the same one. A probe
  bind without ``SO_REUSEPORT`` first makes "address in use" fail as before,
  instead of silently joining someone else's group. A classic BPF program
  (``steer.py``) picks the worker by client address, so per-client limits
  stay exact; exempt and trusted addresses are spread by the kernel's hash.
* Each worker (``worker.py``, ``python -m patrd.proxy.worker``) runs the
  same :class:`~patrd.proxy.server.ProxyServer` as the single-process mode,
  on its own event loop (uvloop by default).
* **Updates are whole values, versioned, one message each** (``wire.py``):
  ``set_table`` sends the whole table; a change in the certificate store sends
  the whole bundle (name → file, serial; a worker reloads only what changed);
  a published ACME token sends the whole challenge map and **waits** until
  every worker has it (the ACME thread blocks, the CA is asked to validate
  only after). A worker swaps each in with one assignment.
* **Counters come back as reports.** ``outstanding(host, port)`` (the
  controller's instance drain) sums the workers' last reports and answers
  at least 1 while any live worker has not yet reported the newest table:
  after that report no new request can reach a backend that left the table,
  so a 0 is final. Statistics are reported every second while they change,
  and ``refresh_stats`` (before a ``/metrics`` render) asks for fresh ones.
  A dead worker's last statistics are kept, so counters never go back.
* **Stop:** every worker drains (``ProxyServer.stop``: close listeners,
  finish in-flight requests up to the timeout, abort the rest) and exits; the
  daemon closes its listener copies, waits, and kills what is left.
  A worker that dies unexpectedly is restarted with backoff.

Beside this module: ``spawn.py`` (the ``SO_REUSEPORT`` socket groups and the
worker processes) and ``worker_state.py`` (the record of one worker, its
reports, the counters summed over live and gone workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, Protocol

import structlog

from patrd.kit.backoff import Backoff, BackoffState
from patrd.proxy import steer, wire
from patrd.proxy.router import RoutingTable
from patrd.proxy.runtime import ProxyRuntime
from patrd.proxy.server import ProxyOptions
from patrd.proxy.spawn import ProxyWorkerError, bind_groups, spawn, wait_exit
from patrd.proxy.stats import DeploymentCounters
from patrd.proxy.worker_state import Tally, WorkerState, apply_report
from patrd.tls.tickets import new_ticket_key

__all__ = ["CertSource", "ChallengeSource", "ProxyWorkerError", "ProxyWorkers"]

READY_TIMEOUT_S: Final = 30.0  # a worker starting (imports, certificates) before it listens
ACK_TIMEOUT_S: Final = 5.0  # an ACME token reaching every worker
REPORT_TIMEOUT_S: Final = 1.0  # refresh_stats
RESPAWN_FIRST_S: Final = 0.5
RESPAWN_MAX_S: Final = 30.0
STABLE_S: Final = 60.0  # a worker that lived this long restarts without backoff
RESPAWN_BACKOFF: Final = Backoff(
    initial_s=RESPAWN_FIRST_S, cap_s=RESPAWN_MAX_S, reset_after_s=STABLE_S
)
KILL_GRACE_S: Final = 5.0  # after the drain timeout, before SIGKILL
HUNG_S: Final = 30.0  # no report for this long (workers send one every 2 s): killed, restarted


class CertSource(Protocol):
    """The certificate store as the workers need it (patrd/tls/certstore.py)."""

    def bundle(self) -> dict[str, tuple[Path, int]]: ...  # name → (file, serial)

    def subscribe(self, listener: Callable[[], None]) -> None: ...


class ChallengeSource(Protocol):
    """ACME HTTP-01 tokens (patrd/tls/acme_client.py ChallengeTokens)."""

    tokens: dict[str, bytes]

    def subscribe(self, listener: Callable[[], None]) -> None: ...


class ProxyWorkers:
    """N proxy worker processes behind one daemon-side object with the proxy's API."""

    def __init__(
        self,
        options: ProxyOptions,
        runtime: ProxyRuntime,
        *,
        certs: CertSource | None = None,
        challenges: ChallengeSource | None = None,
        log_level: str = "info",
        log_format: str = "logfmt",
        hung_after_s: float = HUNG_S,
    ) -> None:
        self._options = options
        self._hung_after_s = hung_after_s
        self._watchdog: asyncio.Task[None] | None = None
        self._runtime = runtime
        self._count = runtime.resolved_workers()
        if self._count < 1:
            raise ValueError("ProxyWorkers needs at least one worker")
        self._certs = certs
        self._challenges = challenges
        # One session-ticket key for all workers: a client resumes on any of them.
        self._ticket_key = new_ticket_key()
        self._log_level = log_level
        self._log_format = log_format
        self._log = structlog.get_logger("patrd.proxy")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: list[WorkerState] = []
        self._table = RoutingTable()
        self._table_version = 0
        self._certs_version = 0
        self._certs_pending = False
        self._challenges_version = 0
        self._acked = asyncio.Event()
        self._report_seq = 0
        self._report_waiters: dict[int, tuple[asyncio.Future[None], set[int]]] = {}
        self._tally = Tally()  # the workers' counters, gone ones included
        self._steered = False
        self._stopping = False
        self._stopped: asyncio.Event | None = None
        self.https_bound: list[tuple[str, int]] = []
        if certs is not None:
            certs.subscribe(self._certs_changed)
        if challenges is not None:
            challenges.subscribe(self._challenges_changed)

    # --- the proxy's API (what the daemon, controller and /metrics use) ---

    @property
    def workers(self) -> int:
        return self._count

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return [w.pid for w in self._workers if w.live and w.pid]

    @property
    def synced(self) -> bool:
        """Every live worker has reported the newest routing table."""
        return all(w.table_version == self._table_version for w in self._workers if w.live)

    def worker_requests(self) -> list[int]:
        """Requests counted per live worker (as of their last reports)."""
        return [sum(c.count for c in w.stats.values()) for w in self._workers if w.live]

    @property
    def steered(self) -> bool:
        """Connections are steered by client address (per-client limits exact)."""
        return self._steered

    def set_table(self, table: RoutingTable) -> None:
        """Send the whole table to every worker; ``outstanding`` waits for their reports."""
        self._table = table
        self._table_version += 1
        frame = wire.encode(
            {"op": "table", "version": self._table_version, "routes": wire.table_to(table)}
        )
        for w in self._workers:
            w.send(frame)

    def outstanding(self, host: str, port: int) -> int:
        """Requests and websockets on backend ``host:port`` in all workers.

        At least 1 while a live worker has not reported the newest table yet:
        until then it may still send new requests to a backend that left it.
        """
        key = (host, port)
        total = 0
        stale = False
        for w in self._workers:
            if not w.live:
                continue  # a dead worker's requests died with it
            total += w.outstanding.get(key, 0)
            if w.table_version < self._table_version:
                stale = True
        return max(total, 1) if stale else total

    @property
    def deployment_stats(self) -> dict[str, DeploymentCounters]:
        return self._tally.deployment_stats(self._workers)

    @property
    def active_requests(self) -> int:
        return sum(w.active for w in self._workers if w.live)

    @property
    def limited_requests(self) -> int:
        return self._tally.limited(self._workers)

    @property
    def refused_connections(self) -> int:
        return self._tally.refused(self._workers)

    @property
    def timeouts(self) -> dict[str, int]:
        """Timeouts after the head that fired, by kind (server.TIMEOUT_KINDS)."""
        return self._tally.timeouts(self._workers)

    async def refresh_stats(self) -> None:
        """Ask every live worker for a report now; wait (bounded) for the answers."""
        live = [w for w in self._workers if w.live]
        if not live or self._loop is None:
            return
        self._report_seq += 1
        seq = self._report_seq
        done: asyncio.Future[None] = self._loop.create_future()
        self._report_waiters[seq] = (done, {w.index for w in live})
        frame = wire.encode({"op": "report", "seq": seq})
        for w in live:
            w.send(frame)
        try:
            await asyncio.wait_for(done, REPORT_TIMEOUT_S)
        except TimeoutError:
            self._log.warning("proxy.report_timeout")
        finally:
            self._report_waiters.pop(seq, None)

    async def start(
        self,
        listens: Sequence[tuple[str, int]],
        tls_listens: Sequence[tuple[str, int]] = (),
    ) -> list[tuple[str, int]]:
        """Bind every listener once per worker, start the workers, wait until they listen.

        Returns the bound plain-HTTP addresses (port 0 → real port); the HTTPS
        ones are in :attr:`https_bound`. An ``OSError`` from binding
        propagates; :class:`ProxyWorkerError` if a worker does not start.
        """
        if self._workers or self._stopped is not None:
            raise RuntimeError("the proxy was already started")
        self._loop = asyncio.get_running_loop()
        n = self._count
        per_worker: list[list[tuple[str, socket.socket]]] = [[] for _ in range(n)]
        bound: list[tuple[str, int]] = []
        opened: list[socket.socket] = []
        spread = (*self._options.rate_limit_exempt, *self._options.trusted_proxies)
        steer_code = None
        if n > 1 and (self._options.rate_limit_rps > 0 or self._options.max_connections_per_ip):
            steer_code = steer.program(n, spread)
        steered = True
        try:
            for scheme, group in (("http", listens), ("https", tls_listens)):
                for host, port in group:
                    for sockets in bind_groups(host, port, n):
                        opened.extend(sockets)
                        name = sockets[0].getsockname()
                        address = (str(name[0]), int(name[1]))
                        (bound if scheme == "http" else self.https_bound).append(address)
                        for i, sock in enumerate(sockets):
                            per_worker[i].append((scheme, sock))
                        if steer_code is not None:
                            try:
                                steer.attach(sockets[0], steer_code)
                            except OSError as exc:
                                steered = False
                                self._log.warning(
                                    "proxy.steering_unavailable",
                                    error=str(exc),
                                    note="per-client limits apply per worker",
                                )
        except BaseException:
            for sock in opened:
                sock.close()
            self.https_bound.clear()
            raise
        self._steered = steer_code is not None and steered
        self._workers = [WorkerState(i, per_worker[i]) for i in range(n)]
        for w in self._workers:
            w.ready = self._loop.create_future()
            w.supervisor = self._loop.create_task(
                self._supervise(w), name=f"proxy-worker-{w.index}"
            )
        try:
            await asyncio.wait_for(
                asyncio.gather(*(w.ready for w in self._workers if w.ready is not None)),
                READY_TIMEOUT_S,
            )
        except (TimeoutError, ProxyWorkerError) as exc:
            await self.stop(0.0)
            if isinstance(exc, ProxyWorkerError):
                raise
            raise ProxyWorkerError(
                f"proxy workers did not start within {READY_TIMEOUT_S:.0f}s"
            ) from None
        except BaseException:
            await self.stop(0.0)
            raise
        self._watchdog = self._loop.create_task(self._watch(), name="proxy-workers-watchdog")
        self._log.info(
            "proxy.started",
            listens=[f"{h}:{p}" for h, p in bound],
            https=[f"{h}:{p}" for h, p in self.https_bound],
            workers=n,
            event_loop=str(self._runtime.event_loop),
            steered=self._steered,
        )
        return bound

    async def stop(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - the API
        """Drain every worker (bounded by ``timeout``), then stop. Idempotent."""
        if self._stopped is not None:
            await self._stopped.wait()
            return
        self._stopped = asyncio.Event()
        self._stopping = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if timeout is None:
            timeout = self._options.drain_timeout_s
        frame = wire.encode({"op": "stop", "timeout": timeout})
        for w in self._workers:
            w.send(frame)
        # The daemon's copies of the listeners: once the workers close theirs,
        # the sockets are gone and new connections are refused.
        for w in self._workers:
            for _, sock in w.sockets:
                sock.close()
        supervisors = [w.supervisor for w in self._workers if w.supervisor is not None]
        if supervisors:
            _, pending = await asyncio.wait(supervisors, timeout=timeout + KILL_GRACE_S)
            for w in self._workers:
                if w.proc is not None and w.proc.poll() is None and w.supervisor in pending:
                    self._log.warning("proxy.worker_killed", worker=w.index, pid=w.pid)
                    w.proc.kill()
            if pending:
                await asyncio.wait(pending, timeout=KILL_GRACE_S)
            for task in pending:
                task.cancel()
        self._log.info("proxy.stopped", workers=len(self._workers))
        self._stopped.set()

    # --- workers ---

    async def _supervise(self, w: WorkerState) -> None:
        """Run worker ``w``; restart it with backoff if it dies while the proxy runs."""
        backoff = BackoffState(RESPAWN_BACKOFF)
        while True:
            try:
                await self._run_once(w)
            except ProxyWorkerError as exc:
                if w.ready is not None and not w.ready.done():
                    w.ready.set_exception(exc)
                    return
                self._log.error("proxy.worker_failed", worker=w.index, error=str(exc))
            if self._stopping:
                return
            if w.ready is not None and not w.ready.done():
                w.ready.set_exception(
                    ProxyWorkerError(f"proxy worker {w.index} exited before it was ready")
                )
                return
            backoff.started(w.started_at)  # a run of STABLE_S or more resets the count
            delay = backoff.failed(time.monotonic())
            self._log.error(
                "proxy.worker_died",
                worker=w.index,
                pid=w.pid,
                status=w.proc.returncode if w.proc is not None else None,
                restart_in_s=delay,
            )
            await asyncio.sleep(delay)
            if self._stopping:
                return

    async def _run_once(self, w: WorkerState) -> None:
        """Start the worker process, relay its messages until it exits."""
        parent, child = socket.socketpair()
        try:
            fds = [child.fileno(), *(sock.fileno() for _, sock in w.sockets)]
            w.proc = spawn(child.fileno(), fds)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        w.pid = w.proc.pid
        w.started_at = time.monotonic()
        try:
            reader, w.writer = await asyncio.open_unix_connection(sock=parent)
            w.live = True
            w.writer.write(wire.encode(self._init_message(w)))
            await self._relay(w, reader)
        finally:
            self._retire(w)
            proc = w.proc
            if proc.poll() is None and self._stopping:
                await asyncio.to_thread(
                    wait_exit, proc, self._options.drain_timeout_s + KILL_GRACE_S
                )
            if proc.poll() is None:
                proc.kill()  # broke its control channel: it cannot be fed any more
            await asyncio.to_thread(proc.wait)

    async def _watch(self) -> None:
        """Kill a worker that stopped reporting (a stuck loop); its supervisor restarts it."""
        period = min(5.0, self._hung_after_s / 3)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for w in self._workers:
                proc = w.proc
                if (
                    w.live
                    and proc is not None
                    and proc.poll() is None
                    and now - w.heard_at > self._hung_after_s
                ):
                    self._log.error(
                        "proxy.worker_hung", worker=w.index, pid=w.pid, silent_s=now - w.heard_at
                    )
                    proc.kill()

    async def _relay(self, w: WorkerState, reader: asyncio.StreamReader) -> None:
        w.heard_at = time.monotonic()
        while True:
            try:
                message = await wire.read(reader)
            except (wire.WireError, ConnectionError) as exc:
                if not self._stopping:
                    self._log.error("proxy.worker_channel_failed", worker=w.index, error=str(exc))
                return
            if message is None:
                return
            w.heard_at = time.monotonic()
            op = message["op"]
            if op == "report":
                self._on_report(w, message)
            elif op == "ack":
                w.acks[message["what"]] = message["version"]
                self._acked.set()
            elif op == "ready":
                w.pid = message["pid"]
                if w.ready is not None and not w.ready.done():
                    w.ready.set_result(None)

    def _on_report(self, w: WorkerState, message: dict[str, Any]) -> None:
        seq = apply_report(w, message)
        if seq is not None:
            waiter = self._report_waiters.get(seq)
            if waiter is not None:
                done, left = waiter
                left.discard(w.index)
                if not left and not done.done():
                    done.set_result(None)

    def _retire(self, w: WorkerState) -> None:
        """``w``'s process is gone: keep its counters, forget its load."""
        w.live = False
        if w.writer is not None:
            w.writer.close()
            w.writer = None
        self._tally.retire(w)
        for done, left in list(self._report_waiters.values()):
            left.discard(w.index)
            if not left and not done.done():
                done.set_result(None)
        self._acked.set()

    def _init_message(self, w: WorkerState) -> dict[str, Any]:
        options = self._options
        n = self._count
        if n > 1:
            options = replace(
                options,
                # The global cap is split; per-client limits are exact when
                # connections are steered by client, per worker otherwise.
                max_connections=math.ceil(options.max_connections / n),
                forwarded_share=n,
            )
        return {
            "op": "init",
            "index": w.index,
            "event_loop": str(self._runtime.event_loop),
            "log_level": self._log_level,
            "log_format": self._log_format,
            "options": wire.options_to(options),
            "listeners": [[scheme, sock.fileno()] for scheme, sock in w.sockets],
            "table": wire.table_to(self._table),
            "table_version": self._table_version,
            "certs": self._cert_bundle(),
            "challenges": self._challenge_map(),
            "answer_challenges": self._challenges is not None,
            "ticket_key": self._ticket_key.hex(),
        }

    # --- certificates and challenges ---

    def _cert_bundle(self) -> dict[str, list[Any]]:
        if self._certs is None:
            return {}
        return {name: [str(path), serial] for name, (path, serial) in self._certs.bundle().items()}

    def _challenge_map(self) -> dict[str, str]:
        if self._challenges is None:
            return {}
        return {k: v.decode("ascii") for k, v in dict(self._challenges.tokens).items()}

    def _certs_changed(self) -> None:
        """A certificate was installed or removed (any thread): push the bundle, coalesced."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # not started: the init message carries the bundle
        loop.call_soon_threadsafe(self._schedule_certs)

    def _schedule_certs(self) -> None:
        if not self._certs_pending:
            self._certs_pending = True
            asyncio.get_running_loop().call_soon(self._push_certs)

    def _push_certs(self) -> None:
        self._certs_pending = False
        self._certs_version += 1
        frame = wire.encode(
            {"op": "certs", "version": self._certs_version, "certs": self._cert_bundle()}
        )
        for w in self._workers:
            w.send(frame)

    def _challenges_changed(self) -> None:
        """A token was published or withdrawn: every worker has it when this returns.

        Called from the ACME thread (blocks it until the workers acknowledge,
        at most :data:`ACK_TIMEOUT_S`); from the event loop it only sends.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._push_challenges()
            return
        future = asyncio.run_coroutine_threadsafe(self._push_challenges_and_wait(), loop)
        try:
            future.result(ACK_TIMEOUT_S + 1.0)
        except TimeoutError:
            future.cancel()

    def _push_challenges(self) -> int:
        self._challenges_version += 1
        frame = wire.encode(
            {
                "op": "challenges",
                "version": self._challenges_version,
                "tokens": self._challenge_map(),
            }
        )
        for w in self._workers:
            w.send(frame)
        return self._challenges_version

    async def _push_challenges_and_wait(self) -> None:
        version = self._push_challenges()
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while any(w.live and w.acks.get("challenges", 0) < version for w in self._workers):
            left = deadline - time.monotonic()
            if left <= 0:
                self._log.warning("proxy.challenges_not_acknowledged", version=version)
                return
            self._acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), left)
