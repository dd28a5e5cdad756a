"""Docker images: pull, inspect, digests, and removal for the image GC and disk guard."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import aiodocker
import aiohttp

from patrd.engine.docker_base import DockerBase, translate
from patrd.model.errors import EngineError, ImageNotFound, PullRefused
from patrd.model.instances import ImageResult, ProgressCallback, RegistryAuth


class DockerImages(DockerBase):
    """Images: pulls (with credentials, never logged), digests, removal."""

    async def ensure_image(
        self,
        ref: str,
        *,
        always_pull: bool,
        progress: ProgressCallback | None = None,
        auth: RegistryAuth | None = None,
        refuse_pull: str = "",
    ) -> ImageResult:
        """The local image id of ``ref``, pulled if missing (or always, ``always_pull``).

        ``refuse_pull``: a pull would be needed but must not happen (the disk
        guard's reason): a local copy is used with a warning, else
        ``PullRefused``. ``fresh``: the pull brought an image id that was not
        here under ``ref`` before (patrd may collect it later, patrd/engine/imagegc.py).
        """
        local = await self._inspect_image(ref)
        if local is not None and not always_pull:
            return ImageResult(image_id=local, pulled=False, warning=None)
        if refuse_pull:
            if local is not None:
                return ImageResult(image_id=local, pulled=False, warning=refuse_pull)
            raise PullRefused(refuse_pull)
        if local is None and ref.startswith("sha256:"):
            raise ImageNotFound(f"image {ref[:19]} is not on this node (an id cannot be pulled)")
        try:
            await self._pull(ref, progress, auth)
        except EngineError as exc:
            if local is not None:
                return ImageResult(image_id=local, pulled=False, warning=f"{exc}; using local copy")
            raise ImageNotFound(str(exc)) from exc
        pulled = await self._inspect_image(ref)
        if pulled is None:
            raise ImageNotFound(f"image {ref} not present after pull")
        return ImageResult(image_id=pulled, pulled=True, warning=None, fresh=pulled != local)

    async def remote_digest(self, ref: str, auth: RegistryAuth | None = None) -> str:
        """The registry's manifest digest for ``ref``, without pulling (Docker asks it)."""
        headers = {}
        if auth is not None:
            payload = json.dumps(
                {"username": auth.username, "password": auth.password, "serveraddress": auth.server}
            )
            headers["X-Registry-Auth"] = base64.urlsafe_b64encode(payload.encode()).decode()
        async with translate(f"distribution {ref}"):
            data = await self.docker._query_json(f"distribution/{ref}/json", headers=headers)
        digest = (data.get("Descriptor") or {}).get("digest")
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise EngineError(f"distribution {ref}: no digest in the answer")
        return digest

    async def repo_digests(self, image: str) -> list[str]:
        """``repo@sha256:…`` names the registry knows this local image by."""
        async with translate(f"inspect image {image}"):
            info = await self.docker.images.inspect(image)
        return [str(d) for d in info.get("RepoDigests") or []]

    # --- image garbage collection and the disk guard (patrd/engine/imagegc.py, diskguard.py) ---

    async def data_root(self) -> str:
        """Where Docker keeps images and volumes (``DockerRootDir``)."""
        async with translate("info"):
            info = await self.docker.system.info()
        return str(info.get("DockerRootDir") or "/var/lib/docker")

    async def images_in_use(self) -> set[str]:
        """Image ids of every container on the engine, patrd's or not, running or not."""
        async with translate("list containers"):
            containers = await self.docker.containers.list(all=True)
        return {str(c._container.get("ImageID", "")) for c in containers} - {""}

    async def image_exists(self, image_id: str) -> bool:
        return await self._inspect_image(image_id) is not None

    async def remove_image(self, image_id: str) -> str:
        """Remove an image by id (never forced): "removed", "gone", or why it stays."""
        try:
            await self.docker._query_json(
                f"images/{image_id}", method="DELETE", params={"force": "false", "noprune": "false"}
            )
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return "gone"
            if exc.status == 409:  # used by a container, or tagged in other repositories
                return exc.message
            raise EngineError(f"remove image {image_id[:19]}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"remove image {image_id[:19]}: Docker unreachable: {exc}") from exc
        return "removed"

    async def exposed_ports(self, ref: str) -> list[str] | None:
        """The image's ``ExposedPorts`` (``80/tcp``), pulling it if missing; None if no image."""
        try:
            await self.ensure_image(ref, always_pull=False)
        except EngineError:
            return None
        async with translate(f"inspect image {ref}"):
            info = await self.docker.images.inspect(ref)
        exposed = (info.get("Config") or {}).get("ExposedPorts") or {}
        return [str(port) for port in exposed]

    async def _inspect_image(self, ref: str) -> str | None:
        try:
            info = await self.docker.images.inspect(ref)
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise EngineError(f"inspect image {ref}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"inspect image {ref}: Docker unreachable: {exc}") from exc
        return str(info["Id"])

    async def _pull(
        self, ref: str, progress: ProgressCallback | None, auth: RegistryAuth | None
    ) -> None:
        last_report = 0.0
        credentials = None
        if auth is not None:  # sent as X-Registry-Auth; never logged
            credentials = {
                "username": auth.username,
                "password": auth.password,
                "serveraddress": auth.server,
            }
        try:
            async for item in self.docker.images.pull(ref, stream=True, auth=credentials):
                if "error" in item:
                    raise EngineError(f"pull {ref}: {item['error']}")
                now = time.monotonic()
                if progress is not None and (now - last_report > 1.0 or "Status:" in str(item)):
                    last_report = now
                    await progress(_progress_line(item))
        except aiodocker.DockerError as exc:
            raise EngineError(f"pull {ref}: {exc.message}") from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"pull {ref}: {exc!r}") from exc


def _progress_line(item: dict[str, Any]) -> str:
    parts = [str(item.get(k)) for k in ("id", "status", "progress") if item.get(k)]
    return " ".join(parts)[:200]
