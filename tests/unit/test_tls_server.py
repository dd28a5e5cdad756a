"""The proxy's own TLS layer (patrd/proxy/tls_server.py), over real loopback sockets.

Each test runs on the stdlib loop and on uvloop (``proxy.event_loop``), with
the proxy's listener context (SNI dispatch, patrd's server settings) and a
certificate from patrd's local CA.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from patrd.proxy.deadlines import Deadlines
from patrd.proxy.tls_server import TLSConnection, TLSListener
from patrd.tls.certstore import generate_key
from patrd.tls.localca import LocalCA
from patrd.tls.sni import SniContexts, server_context

NAME = "tls-server.localhost"  # inside the local CA's name constraints

Runner = Callable[[Coroutine[Any, Any, None]], None]
RUNNERS = [pytest.param(asyncio.run, id="asyncio"), pytest.param(uvloop.run, id="uvloop")]


class _App(asyncio.Protocol):
    """An HTTP protocol's stand-in: records what its transport tells it."""

    def __init__(self, on_data: Callable[[_App, bytes], None] | None = None) -> None:
        self.transport: TLSConnection | None = None
        self.received = bytearray()
        self.chunks: list[int] = []
        self.eof = False
        self.lost = asyncio.get_running_loop().create_future()
        self.write_paused = 0
        self.write_resumed = 0
        self.on_data = on_data

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, TLSConnection)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        self.received += data
        self.chunks.append(len(data))
        if self.on_data is not None:
            self.on_data(self, data)

    def eof_received(self) -> bool:
        self.eof = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self.write_paused += 1

    def resume_writing(self) -> None:
        self.write_resumed += 1


class _Rig:
    """A listener on loopback whose connections' apps are kept, and a client context."""

    def __init__(
        self, tmp_path: Path, handshake_timeout: float = 5.0, max_handshaking: int = 0
    ) -> None:
        ca = LocalCA(tmp_path / "ca")
        key = generate_key()
        pem = tmp_path / "site.pem"
        pem.write_bytes(key + ca.issue(NAME, key))
        self.named = server_context()
        self.named.load_cert_chain(pem)
        sni = SniContexts()
        sni.contexts = {NAME: self.named}
        self.context = sni.listener_context()
        self.client = ssl.create_default_context(cafile=str(ca.cert_path))
        self.timeout = handshake_timeout
        self.max_handshaking = max_handshaking
        self.apps: list[_App] = []
        self.on_data: Callable[[_App, bytes], None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.deadlines = Deadlines(loop)
        self.listener = TLSListener(
            self.context, self._app, self.deadlines, self.timeout, self.max_handshaking
        )
        self.server = await loop.create_server(self.listener, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])

    def _app(self) -> _App:
        app = _App(self.on_data)
        self.apps.append(app)
        return app

    async def stop(self) -> None:
        self.server.close()
        self.listener.abort_handshakes()
        for app in self.apps:
            if app.transport is not None:
                app.transport.abort()
        self.deadlines.close()

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=self.client, server_hostname=NAME
        )


def _echo_upper(app: _App, data: bytes) -> None:
    assert app.transport is not None
    app.transport.write(data.upper())
    if data.endswith(b"bye\n"):
        app.transport.close()


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2], ids=["tls1.3", "tls1.2"]
)
@pytest.mark.parametrize("run", RUNNERS)
def test_keep_alive_exchanges_sni_and_a_clean_close(
    tmp_path: Path, run: Runner, version: ssl.TLSVersion
) -> None:
    async def main() -> None:
        rig = _Rig(tmp_path)
        rig.client.minimum_version = rig.client.maximum_version = version
        rig.on_data = _echo_upper
        await rig.start()
        reader, writer = await rig.open()
        try:
            for word in (b"one\n", b"two\n"):
                writer.write(word)
                assert await asyncio.wait_for(reader.readline(), 5) == word.upper()
            (app,) = rig.apps
            transport = app.transport
            assert transport is not None
            assert transport.get_extra_info("sslcontext") is rig.named  # picked by SNI
            assert (
                transport.get_extra_info("ssl_object").version()
                == {
                    ssl.TLSVersion.TLSv1_3: "TLSv1.3",
                    ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                }[version]
            )
            assert transport.get_extra_info("peername") == writer.get_extra_info("sockname")
            assert transport.get_extra_info("cipher") is not None
            assert not transport.is_closing() and transport.is_reading()
            writer.write(b"bye\n")
            assert await asyncio.wait_for(reader.readline(), 5) == b"BYE\n"
            # close() sent close_notify: the client sees a clean EOF, not a TLS error.
            assert await asyncio.wait_for(reader.read(), 5) == b""
            assert await asyncio.wait_for(app.lost, 5) is None
            assert transport.is_closing()
            transport.write(b"dropped")  # after close: ignored, as asyncio's TLS transport does
        finally:
            writer.close()
            await rig.stop()

    run(main())


def _blocking_exchange(
    port: int, client: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[bool, ssl.SSLSession | None, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        # suppress_ragged_eofs=False: an EOF without close_notify raises SSLEOFError.
        with client.wrap_socket(
            raw, server_hostname=NAME, session=session, suppress_ragged_eofs=False
        ) as tls:
            tls.sendall(b"bye\n")
            answer = b""
            while True:
                chunk = tls.recv(100)
                if not chunk:
                    break
                answer += chunk
            return bool(tls.session_reused), tls.session, answer


@pytest.mark.parametrize("run", RUNNERS)
def test_close_sends_close_notify_and_the_session_resumes(tmp_path: Path, run: Runner) -> None:
    """Without close_notify, OpenSSL clients such as wrk drop the session (no resumption)."""

    async def main() -> None:
        rig = _Rig(tmp_path)
        rig.on_data = _echo_upper
        await rig.start()
        try:
            first = await asyncio.to_thread(_blocking_exchange, rig.port, rig.client, None)
            assert first == (False, first[1], b"BYE\n")
            second = await asyncio.to_thread(_blocking_exchange, rig.port, rig.client, first[1])
            assert second[0] is True and second[2] == b"BYE\n"
        finally:
            await rig.stop()

    run(main())


@pytest.mark.parametrize("run", RUNNERS)
def test_paused_reading_keeps_decrypted_data_until_resumed(tmp_path: Path, run: Runner) -> None:
    payload = bytes(range(256)) * 1024  # 256 KiB: sixteen 16 KiB records

    def pause_first(app: _App, data: bytes) -> None:
        assert app.transport is not None
        if len(app.chunks) == 1:
            app.transport.pause_reading()
            assert not app.transport.is_reading()

    async def main() -> None:
        rig = _Rig(tmp_path)
        rig.on_data = pause_first
        await rig.start()
        _reader, writer = await rig.open()
        try:
            writer.write(payload)
            await writer.drain()
            await asyncio.sleep(0.3)
            (app,) = rig.apps
            assert app.chunks == [app.chunks[0]] and app.chunks[0] <= 64 * 1024
            assert app.transport is not None
            app.transport.resume_reading()
            for _ in range(100):  # bounded: 5 s
                if len(app.received) == len(payload):
                    break
                await asyncio.sleep(0.05)
            assert bytes(app.received) == payload
        finally:
            writer.close()
            await rig.stop()

    run(main())


class _RecordClient:
    """A blocking client that sends records of its choice in one TCP write."""

    def __init__(self, port: int, client: ssl.SSLContext) -> None:
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = client.wrap_bio(self.incoming, self.outgoing, server_hostname=NAME)
        for _ in range(20):  # bounded: a handshake is a few flights
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.raw.sendall(self.outgoing.read())
                self.incoming.write(self.raw.recv(65536))
        self.raw.sendall(self.outgoing.read())

    def send_records(self, *records: bytes) -> None:
        for record in records:
            self.tls.write(record)
        self.raw.sendall(self.outgoing.read())  # all of them in one segment

    def close(self) -> None:
        self.raw.close()


@pytest.mark.parametrize("run", RUNNERS)
def test_records_already_received_are_delivered_on_resume(tmp_path: Path, run: Runner) -> None:
    """The second record is in the connection's buffer, not the socket: resuming delivers it."""

    def pause_first(app: _App, data: bytes) -> None:
        assert app.transport is not None
        if len(app.chunks) == 1:
            app.transport.pause_reading()

    async def main() -> None:
        rig = _Rig(tmp_path)
        rig.on_data = pause_first
        await rig.start()
        client = await asyncio.to_thread(_RecordClient, rig.port, rig.client)
        try:
            await asyncio.to_thread(client.send_records, b"first", b"second")
            await asyncio.sleep(0.3)
            (app,) = rig.apps
            assert bytes(app.received) == b"first"
            assert app.transport is not None
            app.transport.resume_reading()
            await asyncio.sleep(0.3)
            assert bytes(app.received) == b"firstsecond"
        finally:
            client.close()
            await rig.stop()

    run(main())


@pytest.mark.parametrize("run", RUNNERS)
def test_a_large_answer_is_flow_controlled_and_arrives_whole(tmp_path: Path, run: Runner) -> None:
    answer = hashlib.sha256(b"seed").digest() * (4 * 1024 * 1024 // 32)  # 4 MiB

    def send_answer(app: _App, data: bytes) -> None:
        assert app.transport is not None
        app.transport.set_write_buffer_limits(high=64 * 1024)
        for at in range(0, len(answer), 256 * 1024):
            app.transport.write(answer[at : at + 256 * 1024])
        assert app.transport.get_write_buffer_size() > 0

    async def main() -> None:
        rig = _Rig(tmp_path)
        rig.on_data = send_answer
        await rig.start()
        reader, writer = await rig.open()
        try:
            writer.write(b"go\n")
            await asyncio.sleep(0.3)  # not reading yet: the server's buffer fills
            got = await asyncio.wait_for(reader.readexactly(len(answer)), 20)
            assert hashlib.sha256(got).digest() == hashlib.sha256(answer).digest()
            (app,) = rig.apps
            assert app.write_paused >= 1 and app.write_resumed >= 1
        finally:
            writer.close()
            await rig.stop()

    run(main())


@pytest.mark.parametrize("run", RUNNERS)
def test_a_silent_connection_is_dropped_at_the_handshake_timeout(
    tmp_path: Path, run: Runner
) -> None:
    async def main() -> None:
        rig = _Rig(tmp_path, handshake_timeout=0.3)
        await rig.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", rig.port)
        try:
            await asyncio.sleep(0.05)
            assert len(rig.listener.handshaking) == 1 and len(rig.deadlines) == 1
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            assert 0.2 <= loop.time() - t0 <= 3
            await asyncio.sleep(0.05)
            assert not rig.listener.handshaking and len(rig.deadlines) == 0
            assert rig.apps == []  # no HTTP protocol without a handshake
        finally:
            writer.close()
            await rig.stop()

    run(main())


@pytest.mark.parametrize("run", RUNNERS)
def test_plain_http_on_the_tls_port_is_closed_without_an_app(tmp_path: Path, run: Runner) -> None:
    async def main() -> None:
        rig = _Rig(tmp_path)
        await rig.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", rig.port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)
            assert not answer.startswith(b"HTTP")  # an alert at most
            await asyncio.sleep(0.05)
            assert rig.apps == [] and not rig.listener.handshaking and len(rig.deadlines) == 0
        finally:
            writer.close()
            await rig.stop()

    run(main())


@pytest.mark.parametrize("run", RUNNERS)
def test_an_unknown_name_is_refused_in_the_handshake(tmp_path: Path, run: Runner) -> None:
    async def main() -> None:
        rig = _Rig(tmp_path)
        await rig.start()
        try:
            with pytest.raises(ssl.SSLError, match=r"UNRECOGNIZED_NAME|unrecognized name"):
                await asyncio.open_connection(
                    "127.0.0.1", rig.port, ssl=rig.client, server_hostname="other.localhost"
                )
            await asyncio.sleep(0.05)
            assert rig.apps == [] and not rig.listener.handshaking
        finally:
            await rig.stop()

    run(main())


@pytest.mark.parametrize("run", RUNNERS)
def test_the_client_s_close_notify_is_its_eof(tmp_path: Path, run: Runner) -> None:
    def close_notify(port: int, client: ssl.SSLContext) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client.wrap_socket(raw, server_hostname=NAME) as tls:
                tls.sendall(b"last words\n")
                tls.unwrap()  # sends close_notify, waits for the server's

    async def main() -> None:
        rig = _Rig(tmp_path)
        await rig.start()
        try:
            await asyncio.wait_for(asyncio.to_thread(close_notify, rig.port, rig.client), 10)
            (app,) = rig.apps
            assert await asyncio.wait_for(app.lost, 5) is None
            assert app.eof and bytes(app.received) == b"last words\n"
        finally:
            await rig.stop()

    run(main())


@pytest.mark.parametrize("run", RUNNERS)
def test_stopping_drops_connections_still_in_their_handshake(tmp_path: Path, run: Runner) -> None:
    async def main() -> None:
        rig = _Rig(tmp_path, handshake_timeout=60)
        await rig.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", rig.port)
        try:
            await asyncio.sleep(0.05)
            assert len(rig.listener.handshaking) == 1
            rig.listener.abort_handshakes()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            assert not rig.listener.handshaking and len(rig.deadlines) == 0
        finally:
            writer.close()
            await rig.stop()

    run(main())


@pytest.mark.parametrize("run", RUNNERS)
def test_connections_past_the_handshake_bound_are_dropped(tmp_path: Path, run: Runner) -> None:
    """Silent connections cannot pile up in their handshake: past the bound, closed at once."""

    async def main() -> None:
        rig = _Rig(tmp_path, handshake_timeout=60, max_handshaking=2)
        rig.on_data = _echo_upper
        await rig.start()
        silent = [await asyncio.open_connection("127.0.0.1", rig.port) for _ in range(3)]
        try:
            await asyncio.sleep(0.1)
            assert len(rig.listener.handshaking) == 2
            third = silent[2][0]
            assert await asyncio.wait_for(third.read(), 5) == b""  # dropped, not waiting 60 s
            for _, writer in silent[:2]:
                writer.close()
            await asyncio.sleep(0.1)
            assert not rig.listener.handshaking
            reader, writer = await rig.open()  # room again
            writer.write(b"bye\n")
            assert await asyncio.wait_for(reader.readline(), 5) == b"BYE\n"
            writer.close()
        finally:
            for _, writer in silent:
                writer.close()
            await rig.stop()

    run(main())


class _ClosingApp(_App):
    """Answers and closes, or aborts, in connection_made (the proxy's refusal or drain)."""

    def __init__(self, abort: bool) -> None:
        super().__init__()
        self.abort = abort

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        if self.abort:
            self.transport.abort()
        else:
            self.transport.write(b"REFUSED\n")
            self.transport.close()


@pytest.mark.parametrize("abort", [False, True], ids=["close", "abort"])
@pytest.mark.parametrize("run", RUNNERS)
def test_an_app_that_closes_at_once_flushes_or_drops_cleanly(
    tmp_path: Path, run: Runner, abort: bool
) -> None:
    """The session tickets wait for the app's first flush: close sends them, abort drops them."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        rig = _Rig(tmp_path)

        def closing_app() -> _App:
            app = _ClosingApp(abort)
            rig.apps.append(app)
            return app

        rig._app = closing_app  # type: ignore[method-assign]
        await rig.start()
        try:
            answers = []
            session = None
            for _ in range(2):
                answer = await asyncio.wait_for(
                    asyncio.to_thread(_read_until_closed, rig.port, rig.client, session, not abort),
                    10,
                )
                answers.append(answer)
                session = answer[1]
            for app in rig.apps:
                assert await asyncio.wait_for(app.lost, 5) is None or abort
            if abort:
                assert [a[2] for a in answers] == [b"", b""]
            else:
                assert [a[2] for a in answers] == [b"REFUSED\n", b"REFUSED\n"]
                assert answers[1][0] is True  # the tickets went out before close_notify
            assert errors == []
        finally:
            await rig.stop()

    run(main())


def _read_until_closed(
    port: int, client: ssl.SSLContext, session: ssl.SSLSession | None, strict: bool
) -> tuple[bool, ssl.SSLSession | None, bytes]:
    """Connect, read until the server closes: resumed, session, bytes.

    ``strict``: the close must be a clean close_notify (an EOF without one raises).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            tls = client.wrap_socket(
                raw, server_hostname=NAME, session=session, suppress_ragged_eofs=not strict
            )
        except (ssl.SSLError, OSError):
            if strict:
                raise
            return False, None, b""  # dropped in the handshake
        with tls:
            answer = b""
            try:
                while chunk := tls.recv(65536):
                    answer += chunk
            except (ssl.SSLError, OSError):
                if strict:
                    raise
            return bool(tls.session_reused), tls.session, answer
