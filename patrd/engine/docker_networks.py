"""Docker networks: one bridge per deployment, its subnet from ``docker.network_pool``."""

from __future__ import annotations

from typing import Any

import aiodocker
import aiohttp

from patrd.engine.docker_base import DockerBase, translate
from patrd.engine.labels import LABEL_DEPLOYMENT_ID, LABEL_OWNER, deployment_labels
from patrd.engine.subnets import pick_subnet
from patrd.model.errors import EngineError
from patrd.model.instances import NetworkInfo


class DockerNetworks(DockerBase):
    """One bridge network per deployment, labelled with the owner."""

    async def list_networks(self) -> list[NetworkInfo]:
        async with translate("list networks"):
            networks = await self.docker.networks.list(
                filters={"label": [f"{LABEL_OWNER}={self._owner}"]}
            )
        return [
            NetworkInfo(
                name=n["Name"],
                deployment_id=(n.get("Labels") or {}).get(LABEL_DEPLOYMENT_ID, ""),
                bridge=_bridge_name(n),
            )
            for n in networks
        ]

    async def ensure_network(self, name: str, deployment: str, deployment_id: str) -> None:
        async with translate(f"inspect network {name}"):
            existing = await self.docker.networks.list(filters={"name": [name]})
        if any(n["Name"] == name for n in existing):
            return
        config = {
            "Name": name,
            "Driver": "bridge",
            "CheckDuplicate": True,
            "Labels": deployment_labels(self._owner, deployment, deployment_id),
        }
        async with self._network_lock:
            await self._create_network(name, config)

    async def _create_network(self, name: str, config: dict[str, Any]) -> None:
        pool, prefix = self._network_pool
        tried: list[str] = []
        for _ in range(8):  # another network may take the subnet we picked meanwhile
            if pool:
                subnet = pick_subnet(pool, prefix, [*await self._subnets_in_use(), *tried])
                if subnet is None:
                    raise EngineError(
                        f"create network {name}: docker.network_pool {pool} has no free "
                        f"/{prefix} left; enlarge it or delete unused deployments"
                    )
                tried.append(subnet)
                config["IPAM"] = {"Driver": "default", "Config": [{"Subnet": subnet}]}
            try:
                await self.docker.networks.create(config)
                return
            except aiodocker.DockerError as exc:
                if exc.status == 409:  # created concurrently
                    return
                if pool and "overlap" in exc.message.lower():
                    continue
                raise EngineError(f"create network {name}: {exc.message}") from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise EngineError(f"create network {name}: Docker unreachable: {exc}") from exc
        raise EngineError(f"create network {name}: no free subnet after {len(tried)} tries")

    async def _subnets_in_use(self) -> list[str]:
        async with translate("list networks"):
            networks = await self.docker.networks.list()
        return [
            str(c["Subnet"])
            for n in networks
            for c in ((n.get("IPAM") or {}).get("Config") or [])
            if c.get("Subnet")
        ]

    async def remove_network(self, name: str) -> None:
        try:
            network = await self.docker.networks.get(name)
            await network.delete()
        except aiodocker.DockerError as exc:
            if exc.status == 404:
                return
            raise EngineError(f"remove network {name}: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError(f"remove network {name}: Docker unreachable: {exc}") from exc


def _bridge_name(network: dict[str, Any]) -> str:
    """The Linux interface of a bridge network: its option, else Docker's ``br-<id[:12]>``."""
    if network.get("Driver") != "bridge":
        return ""
    options = network.get("Options") or {}
    return str(options.get("com.docker.network.bridge.name") or f"br-{network['Id'][:12]}")
