"""A TCP forwarder: ``127.0.0.1:<free port>`` (or another local address) → ``host:port``.

For a registry on a test bridge address: the machine's Docker CLI pushes to a
loopback registry address without any ``insecure-registries`` setting (the
shared dockerd is never reconfigured), and the forwarder carries the bytes to
the registry where the swarm nodes pull it. Threads, bounded by the test.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Iterator


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def tcp_forward(host: str, port: int, bind: str = "127.0.0.1") -> Iterator[str]:
    """Forward a free port of ``bind`` (an address of this host) to ``host:port``;
    yields ``bind:<port>``."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            client: socket.socket = self.request
            with socket.create_connection((host, port), timeout=30) as upstream:
                upstream.settimeout(None)
                back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
                back.start()
                _pump(client, upstream)
                back.join(120)

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    with Server((bind, 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"{bind}:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join(10)
