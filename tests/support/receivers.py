"""Local notification receivers for tests: an HTTP endpoint and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """Records every POST; answers ``status`` after ``delay_s``."""

    status: int = 200
    delay_s: float = 0.0
    got: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def __aenter__(self) -> HttpReceiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.got.append(Received(request.path, dict(request.headers), body))
        self.arrived.set()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.Response(status=self.status, text="ok")

    async def wait(self, count: int, timeout: float) -> list[Received]:
        async with asyncio.timeout(timeout):
            while len(self.got) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.got


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, Message]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        raw = content if isinstance(content, bytes) else (content or "").encode()
        self.messages.append((envelope, message_from_bytes(raw)))
        return "250 OK"


class SmtpReceiver:
    """aiosmtpd on a free loopback port (its own thread); ``messages`` as they arrive.

    With ``login=(user, password)`` it offers AUTH (over plain loopback:
    ``auth_require_tls=False``) and records each attempt in ``logins``.
    """

    def __init__(self, login: tuple[str, str] | None = None) -> None:
        self.port = free_port()
        self._box = _Mailbox()
        self.logins: list[tuple[str, bool]] = []
        extra: dict[str, Any] = {}
        if login is not None:
            expected = (login[0].encode(), login[1].encode())

            def check(
                server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
            ) -> AuthResult:
                ok = isinstance(data, LoginPassword) and (data.login, data.password) == expected
                self.logins.append((data.login.decode(), ok))
                return AuthResult(success=ok, handled=False)  # False: send the 535

            extra = {
                "authenticator": check,
                "auth_require_tls": False,
            }
        self._controller = Controller(self._box, hostname="127.0.0.1", port=self.port, **extra)

    @property
    def messages(self) -> list[tuple[Envelope, Message]]:
        return self._box.messages

    def __enter__(self) -> SmtpReceiver:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()
