"""``ports`` left out of a create: the one TCP port the image declares (``EXPOSE``).

As ``docker run -P`` and fly do: when the request has no ``ports`` and the
image (on this node, else pulled, within a bound) exposes exactly one TCP
port, that port is the deployment's HTTP port. Otherwise ``ports`` is still
required, and the 422 says what the image declares. The choice itself is
:func:`choose_port` (pure); the lookup is a one-method adapter the daemon
wires in (``DockerEngine.exposed_ports``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from aiohttp import web

from patrd.model.errors import EngineError, SpecError

LOOKUP_TIMEOUT_S = 20.0  # a pull on the create path: bounded, the CLI waits 30 s


class ImagePorts(Protocol):
    async def exposed_ports(self, ref: str) -> list[str] | None:
        """``["80/tcp", …]`` of the image (pulled if missing); None when it cannot be had."""
        ...


IMAGE_PORTS = web.AppKey("patrd.image_ports", ImagePorts)


def choose_port(ref: str, exposed: Iterable[str] | None) -> int:
    """The single TCP port ``exposed`` declares, else a SpecError on ``ports``."""
    if exposed is None:
        raise SpecError(
            "ports",
            f"is required: the image {ref} could not be inspected on this node to find its port",
        )
    tcp = sorted(
        {
            int(number)
            for number, _, proto in (p.partition("/") for p in exposed)
            if proto in ("tcp", "") and number.isdigit()
        }
    )
    if len(tcp) == 1 and 1 <= tcp[0] <= 65535:
        return tcp[0]
    if not tcp:
        raise SpecError("ports", f"is required: the image {ref} declares no TCP port (EXPOSE)")
    listed = ", ".join(str(p) for p in tcp)
    raise SpecError("ports", f"is required: the image {ref} declares several ports ({listed})")


async def fill_ports(
    request: web.Request, body: Any, ref_of: Callable[[dict[str, Any]], str]
) -> Any:
    """``body`` with ``ports`` from the image when it has none and a lookup is wired."""
    lookup = request.app.get(IMAGE_PORTS)
    if lookup is None or not isinstance(body, dict) or "ports" in body:
        return body
    ref = ref_of({**body, "ports": {"80": "http"}})  # validates everything else first
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT_S):
            exposed = await lookup.exposed_ports(ref)
    except (TimeoutError, EngineError):
        exposed = None
    return {**body, "ports": {str(choose_port(ref, exposed)): "http"}}
