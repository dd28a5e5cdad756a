"""What every part of ``DockerEngine`` shares: the client, the owner, the error translation.

``DockerEngine`` (patrd/engine/docker.py) is the sum of its parts, one module
per kind of Docker object (containers, images, networks, volumes, exec and
logs); each part subclasses :class:`DockerBase`, so each reads the same
attributes and is checked on its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiodocker
import aiohttp
import structlog

from patrd.engine.hardening import Hardening
from patrd.model.errors import EngineError


def docker_client(url: str) -> aiodocker.Docker:
    """An API client that opens a fresh connection per request on a unix socket.

    dockerd, told to stop, unlinks its socket and then stops its containers,
    but keeps serving connections that are already open: over a kept-alive one
    a ``start`` sent on the container's ``die`` event runs inside a half shut
    down engine and leaves stale state behind (a network endpoint, a
    containerd task: "task ... already exists" after the restart). A fresh
    connection fails at once instead ("Cannot connect"), which is the truth.
    A connect on a unix socket costs microseconds (docs/design.md,
    "Starts that fail because of the engine").
    """
    if url.startswith("unix://"):
        connector = aiohttp.UnixConnector(url.removeprefix("unix://"), force_close=True)
        return aiodocker.Docker(url="unix://localhost", connector=connector)
    return aiodocker.Docker(url=url)


async def close_client(client: aiodocker.Docker) -> None:
    """aiodocker leaves a connector it did not create open."""
    await client.close()
    if not client.connector.closed:
        await client.connector.close()


class DockerClient:
    """A lazily opened Docker API client: both adapters hold their connection this way."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._docker: aiodocker.Docker | None = None

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = docker_client(self._url)
        return self._docker

    async def close(self) -> None:
        if self._docker is not None:
            await close_client(self._docker)
            self._docker = None


class DockerBase(DockerClient):
    """The connection to the local Docker daemon; the API version is negotiated."""

    def __init__(
        self,
        url: str,
        owner: str,
        hardening: Hardening | None = None,
        network_pool: tuple[str, int] = ("", 24),
    ) -> None:
        super().__init__(url)
        self._owner = owner
        self._network_pool = network_pool
        self._hardening = hardening if hardening is not None else Hardening()
        # Subnets are picked and taken one network at a time: deployments
        # created together would otherwise all pick the same first free one.
        self._network_lock = asyncio.Lock()
        self._log = structlog.get_logger("patrd.engine.docker")

    async def ping(self) -> str:
        async with translate("ping"):
            info = await self.docker.version()
        return f"{info.get('Version', '?')} (API {info.get('ApiVersion', '?')})"


class translate:
    """``async with translate("what")``: aiodocker/aiohttp errors → EngineError."""

    def __init__(self, what: str) -> None:
        self._what = what

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, aiodocker.DockerError):
            raise EngineError(f"{self._what}: {exc.message}") from exc
        if isinstance(exc, aiohttp.ClientError | OSError):
            raise EngineError(f"{self._what}: Docker unreachable: {exc}") from exc
        return False
