"""TLS for the proxy's HTTPS listeners: one ``ssl.SSLObject`` on a plain transport.

Why not ``loop.create_server(ssl=...)``: uvloop's ``SSLProtocol`` allocates a
256 KiB read buffer per connection (an ``mmap``/``munmap`` pair per
connection at that size) and a state machine of several objects beside it.
Measured on this box with the same context and client (a bare server that
answers 200, 3,000 idle connections, then ``wrk`` with ``Connection:
close``): 25.2 KB per idle TLS connection and 0.34-0.41 ms of CPU per
resumed handshake with uvloop's, 18.0 KB and 0.25-0.27 ms with this one.

A connection here is both the protocol of the TCP transport and the
transport its HTTP protocol (``_Client``) sees: ciphertext goes through two
``ssl.MemoryBIO``s, plaintext is decrypted into one buffer per listener and
copied out once. The HTTP protocol is made when the handshake is done, as
with ``create_server(ssl=...)``; until then the connection has a deadline
(the handshake timeout) in the proxy's :class:`~patrd.proxy.deadlines.Deadlines`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterable
from typing import Any, cast

from patrd.proxy.deadlines import Deadlines, Queue

__all__ = ["TLSConnection", "TLSListener"]

_READ_CHUNK = 64 * 1024  # at most this much plaintext per data_received

_HANDSHAKE = 0
_OPEN = 1
_CLOSING = 2  # close() or abort() was called, or the handshake failed
_LOST = 3


class TLSListener:
    """What the connections of one HTTPS listener share; its protocol factory."""

    __slots__ = (
        "app_factory",
        "buffer",
        "context",
        "deadlines",
        "handshaking",
        "loop",
        "max_handshaking",
        "timeout",
        "view",
    )

    def __init__(
        self,
        context: ssl.SSLContext,
        app_factory: Callable[[], asyncio.Protocol],
        deadlines: Deadlines,
        handshake_timeout: float,
        max_handshaking: int = 0,
    ) -> None:
        self.context = context
        # Connections in their handshake are not the HTTP protocol's yet, so its
        # caps do not count them: this bounds them (0: no bound).
        self.max_handshaking = max_handshaking
        self.app_factory = app_factory
        self.deadlines = deadlines
        self.timeout = handshake_timeout
        self.loop = asyncio.get_running_loop()
        self.buffer = bytearray(_READ_CHUNK)
        self.view = memoryview(self.buffer)
        self.handshaking: set[TLSConnection] = set()

    def __call__(self) -> TLSConnection:
        return TLSConnection(self)

    def abort_handshakes(self) -> None:
        """Drop the connections still in their handshake (the proxy is stopping)."""
        for conn in list(self.handshaking):
            conn.abort()


class TLSConnection(asyncio.Protocol, asyncio.Transport):
    """One TLS connection: the TCP transport's protocol, the HTTP protocol's transport."""

    __slots__ = (
        "_app",
        "_eof",
        "_incoming",
        "_listener",
        "_outgoing",
        "_paused",
        "_raw",
        "_ssl",
        "_state",
        "deadline_queue",
    )

    def __init__(self, listener: TLSListener) -> None:
        # asyncio.Transport.__init__ is not called: it would make an extra dict per connection.
        self._listener = listener
        self._raw: asyncio.Transport | None = None
        self._app: asyncio.Protocol | None = None
        self._state = _HANDSHAKE
        self._paused = False  # the HTTP protocol paused reading
        self._eof: bool | None = None  # the peer's EOF: what the HTTP protocol answered
        self.deadline_queue: Queue | None = None  # the handshake's (set by Deadlines)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl: ssl.SSLObject | None = listener.context.wrap_bio(
            self._incoming, self._outgoing, server_side=True
        )

    # --- the TCP transport's protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._raw = transport  # type: ignore[assignment]
        listener = self._listener
        if listener.max_handshaking and len(listener.handshaking) >= listener.max_handshaking:
            self._state = _CLOSING
            transport.abort()  # type: ignore[attr-defined]
            return
        listener.handshaking.add(self)
        listener.deadlines.set(self, listener.timeout)

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state == _OPEN:
            self._incoming.write(data)
            self._read()
        elif state == _HANDSHAKE:
            self._incoming.write(data)
            self._handshake()

    def eof_received(self) -> bool:
        if self._state != _OPEN or self._app is None:
            return False
        if self._eof is None:  # no close_notify came first
            self._eof = bool(self._app.eof_received())
        return self._eof

    def connection_lost(self, exc: Exception | None) -> None:
        if self._app is None:
            self._done_handshaking()
        self._state = _LOST
        app, self._app = self._app, None  # the HTTP protocol holds this transport
        self._ssl = None  # OpenSSL's SSL goes now, not when the HTTP protocol goes
        self._raw = None
        if app is not None:
            app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None:
            self._app.resume_writing()

    def deadline_passed(self) -> None:
        """The handshake took longer than the handshake timeout."""
        if self._state == _HANDSHAKE:
            self.abort()

    # --- TLS ---

    def _handshake(self) -> None:
        sslobj = self._ssl
        assert sslobj is not None and self._raw is not None
        try:
            sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError:  # not TLS, no shared version or suite, unknown name...
            self._flush()  # OpenSSL's alert, if it wrote one
            self._state = _CLOSING
            self._done_handshaking()
            self._raw.close()
            return
        self._done_handshaking()
        self._state = _OPEN
        app = self._app = self._listener.app_factory()
        app.connection_made(self)
        if self._state != _OPEN:
            return  # the HTTP protocol closed it (close() flushed) or aborted it
        if self._incoming.pending:  # the first request came with the client's Finished
            self._read()  # ends with a flush: the session tickets go with what it answers
        else:
            self._flush()  # the session tickets (TLS 1.3 sends them after the handshake)

    def _done_handshaking(self) -> None:
        listener = self._listener
        listener.handshaking.discard(self)
        listener.deadlines.clear(self)

    def _read(self) -> None:
        sslobj = self._ssl
        app = self._app
        assert sslobj is not None and app is not None
        listener = self._listener
        buffer, view = listener.buffer, listener.view
        incoming = self._incoming
        while self._state == _OPEN and not self._paused:
            try:
                n = cast(int, sslobj.read(_READ_CHUNK, buffer))  # typeshed: bytes, but a count
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                n = 0
            except ssl.SSLError:  # a record that does not decrypt, an alert...
                self._flush()
                self._state = _CLOSING
                assert self._raw is not None
                self._raw.close()
                return
            if not n:  # the peer's close_notify
                self._flush()
                if self._eof is None:
                    self._eof = bool(app.eof_received())
                    if not self._eof:
                        self.close()
                return
            app.data_received(view[:n].tobytes())
            if not incoming.pending and not sslobj.pending():
                # Nothing left to decrypt: another read would only raise
                # SSLWantReadError (an exception made and caught per read).
                break
        self._flush()  # what reading answered (a key update)

    def _flush(self) -> None:
        outgoing = self._outgoing
        if outgoing.pending:
            assert self._raw is not None
            self._raw.write(outgoing.read())

    def _read_buffered(self) -> None:
        if self._state == _OPEN and not self._paused and self._ssl is not None:
            self._read()

    # --- the HTTP protocol's transport ---

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._state != _OPEN or not data:
            return  # as asyncio's TLS transport: writing after close() is dropped
        assert self._ssl is not None
        try:
            self._ssl.write(data)
        except ssl.SSLError:
            self._state = _CLOSING
            assert self._raw is not None
            self._raw.abort()
            return
        self._flush()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def close(self) -> None:
        if self._state >= _CLOSING:
            return
        was_open = self._state == _OPEN
        self._state = _CLOSING
        raw = self._raw
        if raw is None:
            return
        if was_open and self._ssl is not None:
            try:  # noqa: SIM105 - contextlib.suppress costs three calls per connection
                self._ssl.unwrap()
            except ssl.SSLError:  # the peer's close_notify is not waited for
                pass
            self._flush()
        else:
            self._done_handshaking()
        raw.close()

    def abort(self) -> None:
        if self._state == _HANDSHAKE:
            self._done_handshaking()
        if self._state < _CLOSING:
            self._state = _CLOSING
        if self._raw is not None:
            self._raw.abort()

    def is_closing(self) -> bool:
        return self._state != _OPEN

    def can_write_eof(self) -> bool:
        return False  # as asyncio's TLS transport: no half-close (write_eof is not overridden)

    def pause_reading(self) -> None:
        if not self._paused:
            self._paused = True
            if self._raw is not None:
                self._raw.pause_reading()

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if self._raw is not None and self._state == _OPEN:
                self._raw.resume_reading()
                sslobj = self._ssl
                if sslobj is not None and (self._incoming.pending or sslobj.pending()):
                    self._listener.loop.call_soon(self._read_buffered)

    def is_reading(self) -> bool:
        return not self._paused and self._state == _OPEN

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size() if self._raw is not None else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._raw.get_write_buffer_limits() if self._raw is not None else (0, 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high, low)

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._app is not None
        return self._app

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._app = protocol  # type: ignore[assignment]

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sslobj = self._ssl
        if name == "ssl_object":
            return sslobj
        if sslobj is not None:
            if name == "sslcontext":
                return sslobj.context
            if name == "peercert":
                return sslobj.getpeercert()
            if name == "cipher":
                return sslobj.cipher()
            if name == "compression":
                return sslobj.compression()
        if self._raw is None:
            return default
        return self._raw.get_extra_info(name, default)
