"""Docker volumes of deployment volumes: created labelled, refused when someone else's."""

from __future__ import annotations

import json

import aiodocker
import aiohttp

from patrd.engine.docker_base import DockerBase, translate
from patrd.engine.labels import (
    LABEL_DEPLOYMENT,
    LABEL_INSTANCE,
    LABEL_OWNER,
    LABEL_VOLUME,
    volume_labels,
)
from patrd.model.errors import EngineError
from patrd.model.instances import VolumeInfo


class DockerVolumes(DockerBase):
    """Named volumes of deployment volumes, labelled deployment/volume/slot."""

    async def ensure_volume(
        self, name: str, deployment: str, volume: str, slot: int, *, adopt: str = ""
    ) -> str:
        """The Docker volume of one instance's volume: its name (idempotent).

        An existing volume called ``name`` is used only if its labels say it
        is this deployment's ``volume`` of ``slot``; anything else is refused,
        never shared. ``adopt``: an older name the volume may have (see
        patrd/model/naming.py); it is used as it is when its labels match.
        """
        labels = volume_labels(self._owner, deployment, volume, slot)
        existing = await self._volume_labels(name)
        if existing is not None:
            mismatch = sorted(k for k, v in labels.items() if existing.get(k) != v)
            if mismatch:
                raise EngineError(
                    f"volume {name} exists but is not {deployment}'s {volume} of instance "
                    f"{slot} (labels {', '.join(mismatch)} differ); refusing to use it"
                )
            return name
        if adopt:
            older = await self._volume_labels(adopt)
            if older is not None and all(older.get(k) == v for k, v in labels.items()):
                self._log.info("volume_adopted", volume=adopt, deployment=deployment)
                return adopt
        config = {"Name": name, "Driver": "local", "Labels": labels}
        async with translate(f"create volume {name}"):
            await self.docker._query_json("volumes/create", method="POST", data=json.dumps(config))
        return name

    async def _volume_labels(self, name: str) -> dict[str, str] | None:
        try:
            data = await self.docker._query_json(f"volumes/{name}")
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return None
            raise EngineError(f"inspect volume {name}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"inspect volume {name}: Docker unreachable: {exc}") from exc
        return {str(k): str(v) for k, v in (data.get("Labels") or {}).items()}

    async def list_volumes(self, deployment: str) -> list[VolumeInfo]:
        filters = json.dumps(
            {"label": [f"{LABEL_OWNER}={self._owner}", f"{LABEL_DEPLOYMENT}={deployment}"]}
        )
        async with translate("list volumes"):
            data = await self.docker._query_json("volumes", params={"filters": filters})
        found = []
        for item in data.get("Volumes") or []:
            labels = item.get("Labels") or {}
            try:
                slot = int(labels[LABEL_INSTANCE])
            except (KeyError, ValueError):
                continue
            found.append(
                VolumeInfo(
                    name=item["Name"],
                    deployment=labels.get(LABEL_DEPLOYMENT, ""),
                    volume=labels.get(LABEL_VOLUME, ""),
                    slot=slot,
                    mountpoint=item.get("Mountpoint", ""),
                )
            )
        return sorted(found, key=lambda v: (v.volume, v.slot))

    async def remove_volume(self, name: str) -> None:
        try:
            await self.docker._query_json(f"volumes/{name}", method="DELETE")
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return
            raise EngineError(f"remove volume {name}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"remove volume {name}: Docker unreachable: {exc}") from exc
