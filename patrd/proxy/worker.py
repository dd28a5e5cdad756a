"""A proxy worker process: ``python -m patrd.proxy.worker <control fd>``.

Started by the daemon (``workers.py``) with its listening sockets and one
end of a ``socketpair`` inherited. It runs a :class:`ProxyServer` on those
sockets and applies what the daemon sends (``wire.py``): each routing table,
certificate bundle or challenge map replaces the previous one in one
assignment, between two protocol callbacks, so a request sees one whole
state. It reports its counters back: at once after each table (the daemon's
``outstanding`` waits for that), every :data:`REPORT_S` while the
outstanding counts or the limit counters change, the latency statistics at
most every :data:`STATS_S`, whenever asked, and at least every
:data:`HEARTBEAT_S` (the daemon restarts a worker that stays silent).

It stops (drain, then exit 0) on the daemon's ``stop``, on SIGTERM, or
when the control socket closes (the daemon is gone). SIGINT is ignored: a
Ctrl-C in a terminal reaches the whole process group, and the daemon
drains its workers itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import sys
from typing import Any, Final

import structlog

from patrd.kit import log_setup as logs
from patrd.proxy import wire
from patrd.proxy.runtime import run_event_loop
from patrd.proxy.server import ProxyServer
from patrd.tls.sni import SniContexts, server_context
from patrd.tls.tickets import set_ticket_key

REPORT_S: Final = 0.1  # outstanding counts, when they changed
STATS_S: Final = 1.0  # per-deployment statistics, when they changed
HEARTBEAT_S: Final = 2.0  # a report at least this often


class Worker:
    """The worker's side of the control channel."""

    def __init__(self, init: dict[str, Any], control: socket.socket) -> None:
        self._init = init
        self._control = control
        self._sni = SniContexts()
        self._loaded: dict[str, tuple[str, int, ssl.SSLContext]] = {}  # name → file, serial
        self._challenges: dict[str, bytes] = {}
        self._set_challenges(init["challenges"])
        self._log = structlog.get_logger("patrd.proxy.worker")
        listener = self._sni.listener_context()
        if not set_ticket_key(listener, bytes.fromhex(init["ticket_key"])):
            # Tickets still work, on the worker that issued them only.
            self._log.warning("proxy.worker_ticket_key_not_shared")
        self._server = ProxyServer(
            wire.options_from(init["options"]),
            wire.table_from(init["table"]),
            challenges=self._challenges if init["answer_challenges"] else None,
            has_certificate=self._sni.has,
            ssl_context=listener,
        )
        self._table_version: int = init["table_version"]
        self._writer: asyncio.StreamWriter | None = None
        self._sent_quick: tuple[list[list[Any]], int, int, dict[str, int]] | None = None
        self._sent_at = 0.0
        self._sent_count = -1
        self._stats_at = 0.0
        self._stop = asyncio.Event()
        self._stop_timeout: float | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        self._load_certs(self._init["certs"])
        listeners = [(scheme, socket.socket(fileno=fd)) for scheme, fd in self._init["listeners"]]
        await self._server.start(
            [s for scheme, s in listeners if scheme == "http"],
            [s for scheme, s in listeners if scheme == "https"],
        )
        reader, self._writer = await asyncio.open_unix_connection(sock=self._control)
        self._send({"op": "ready", "pid": os.getpid()})
        self._report(stats=True)
        control = loop.create_task(self._read(reader))
        reporter = loop.create_task(self._reporter())
        stop = loop.create_task(self._stop.wait())
        await asyncio.wait([control, stop], return_when=asyncio.FIRST_COMPLETED)
        reporter.cancel()
        await self._server.stop(self._stop_timeout)
        self._report(stats=True)  # the last requests' statistics
        control.cancel()
        stop.cancel()
        for task in (control, reporter, stop):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(ConnectionError):
            await self._writer.drain()
        self._writer.close()
        return 0

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                message = await wire.read(reader)
            except (wire.WireError, ConnectionError) as exc:
                self._log.error("proxy.worker_control_failed", error=str(exc))
                return
            if message is None:
                return  # the daemon is gone: drain and exit
            op = message["op"]
            if op == "table":
                self._server.set_table(wire.table_from(message["routes"]))
                self._table_version = message["version"]
                self._report()
            elif op == "certs":
                self._load_certs(message["certs"])
                self._send({"op": "ack", "what": "certs", "version": message["version"]})
            elif op == "challenges":
                self._set_challenges(message["tokens"])
                self._send({"op": "ack", "what": "challenges", "version": message["version"]})
            elif op == "report":
                self._report(stats=True, seq=message.get("seq"))
            elif op == "stop":
                self._stop_timeout = message.get("timeout")
                return
            else:
                self._log.warning("proxy.worker_unknown_message", op=op)

    # --- state from the daemon ---

    def _load_certs(self, certs: dict[str, list[Any]]) -> None:
        """Load new or changed pairs; swap the whole name → context map in one assignment."""
        contexts: dict[str, ssl.SSLContext] = {}
        loaded: dict[str, tuple[str, int, ssl.SSLContext]] = {}
        for name, (path, serial) in certs.items():
            known = self._loaded.get(name)
            if known is not None and known[0] == path and known[1] == serial:
                ctx = known[2]
            else:
                ctx = server_context()
                try:
                    ctx.load_cert_chain(path)
                except (OSError, ssl.SSLError) as exc:
                    self._log.error("proxy.worker_cert_unusable", name=name, error=str(exc))
                    if known is None:
                        continue
                    ctx = known[2]  # keep serving the previous pair
            contexts[name] = ctx
            loaded[name] = (path, serial, ctx)
        self._loaded = loaded
        self._sni.contexts = contexts

    def _set_challenges(self, tokens: dict[str, str]) -> None:
        # The server holds this dict: changed in place, between two callbacks.
        self._challenges.clear()
        self._challenges.update({k: v.encode("ascii") for k, v in tokens.items()})

    # --- reports ---

    async def _reporter(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(REPORT_S)
            snapshot = self._server.snapshot()
            now = loop.time()
            count = sum(c.count for c in snapshot.deployment_stats.values())
            stats = count != self._sent_count and now - self._stats_at >= STATS_S
            quick = (
                [[h, p, n] for (h, p), n in snapshot.outstanding.items()],
                snapshot.limited_requests,
                snapshot.refused_connections,
                snapshot.timeouts,
            )
            if stats or quick != self._sent_quick or now - self._sent_at >= HEARTBEAT_S:
                self._report(stats=stats)

    def _report(self, stats: bool = False, seq: int | None = None) -> None:
        snapshot = self._server.snapshot()
        message = wire.snapshot_to(snapshot, with_stats=stats)
        message["op"] = "report"
        message["table_version"] = self._table_version
        if seq is not None:
            message["seq"] = seq
        self._sent_quick = (
            message["outstanding"],
            message["limited"],
            message["refused"],
            message["timeouts"],
        )
        self._sent_at = asyncio.get_running_loop().time()
        if stats:
            self._sent_count = sum(c.count for c in snapshot.deployment_stats.values())
            self._stats_at = asyncio.get_running_loop().time()
        self._send(message)

    def _send(self, message: dict[str, Any]) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(wire.encode(message))


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m patrd.proxy.worker <control fd>", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = socket.socket(fileno=int(argv[1]))
    init = wire.read_blocking(control)
    if init is None or init["op"] != "init":
        return 1  # the daemon went away before saying anything
    control.setblocking(False)
    logs.configure(init["log_level"], init["log_format"])
    structlog.contextvars.bind_contextvars(worker=init["index"])
    return run_event_loop(Worker(init, control).run(), init["event_loop"])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
