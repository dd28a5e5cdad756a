"""The manager's side of the node agents: figures of every swarm instance, wherever it runs.

On ``engine.backend = "swarm"`` the sampler (patrd/observe/metrics.py) hands
the instance IDs it wants (``SERVICE.TASK``) to :class:`SwarmFigures`, which

* reads this node's task containers in-process (the agent's own
  :class:`~patrd.observe.agent.NodeFigures`: no agent is needed on the manager),
* asks every other *ready* node's agent, at ``node address:engine.agent_port``,
  all at once, each bounded by ``timeout_s`` (a node whose agent is away costs
  at most that, never the other nodes' figures), and
* merges the reports by task ID (patrd/observe/agent_wire.py).

A node whose agent does not answer, refuses the token or answers nonsense is
*away*: logged once when it goes (``agent_away``, with why) and once when it
comes back (``agent_back``), and shown in ``GET /v1/nodes`` (``agent``,
:class:`WithAgents`); its
instances have no figures meanwhile (so no rates, and the autoscaler, which
reads rates, sees nothing of them rather than zeros).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

import aiohttp
import structlog

from patrd.engine.swarm import NodeInfo
from patrd.model.errors import EngineError
from patrd.model.instances import VolumeInfo
from patrd.observe.agent import NodeFigures
from patrd.observe.agent_volumes import VOLUMES_PATH, volume_from_json
from patrd.observe.agent_wire import TASKS_PATH, merge, parse_report, relabel, task_of
from patrd.observe.counters import Counters

AGENT_TIMEOUT_S = 2.0  # one agent's answer, connect included
Volumes = list[VolumeInfo]  # (AgentVolumes.list shadows the builtin in its class)
VOLUME_LIST_TIMEOUT_S = 5.0  # listing: the API's volume view and each scale-down wait on it
VOLUME_TIMEOUT_S = 30.0  # an agent removing a volume may wait for its container to go


class SwarmNodesSource(Protocol):
    async def agent_nodes(self) -> tuple[str, dict[str, str]]:
        """(this node's ID, ready node ID → address)."""
        ...


class SwarmFigures:
    """Readings of swarm instances: this node in-process, the others from their agents."""

    def __init__(
        self,
        nodes: SwarmNodesSource,
        local: NodeFigures,
        token: str,
        port: int,
        timeout_s: float = AGENT_TIMEOUT_S,
    ) -> None:
        self._nodes = nodes
        self._local = local
        self._token = token
        self._port = port
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self.away: dict[str, str] = {}  # node ID → why its agent gave no figures
        self.answered: set[str] = set()  # nodes whose agent answered the last time asked
        self.self_id = ""  # this node (read in-process), once known
        self._log = structlog.get_logger("patrd.observe.agent_client")

    async def read(self, ids: Sequence[str]) -> dict[str, Counters | None]:
        """Counters (None: none to be had) for the swarm instances among ``ids``."""
        tasks = [cid for cid in ids if task_of(cid)]
        if not tasks:
            return {}
        self_id, addresses = await self._nodes.agent_nodes()
        self.self_id = self_id
        others = {n: a for n, a in addresses.items() if n != self_id}
        reports = await asyncio.gather(
            self._read_local(), *(self._ask(node, address) for node, address in others.items())
        )
        for node in [n for n in self.away if n not in others]:
            del self.away[node]  # left the swarm or not ready: not the agent's fault
        self.answered &= set(others)
        return merge(tasks, reports)

    async def _read_local(self) -> dict[str, Counters]:
        try:
            return {t.task_id: c for t, c in await self._local.read()}
        except EngineError as exc:
            self._log.warning("local_figures_failed", error=str(exc))
            return {}

    async def _ask(self, node: str, address: str) -> Mapping[str, Counters]:
        url = f"http://{_host(address)}:{self._port}{TASKS_PATH}"
        try:
            async with self._client().get(
                url, headers={"Authorization": f"Bearer {self._token}"}
            ) as response:
                if response.status == 401:
                    raise ValueError("the agent refused patrd's token (copy agent.token again)")
                if response.status != 200:
                    raise ValueError(f"the agent answered HTTP {response.status}")
                found = parse_report(await response.json())
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            self.answered.discard(node)
            self._gone(node, address, str(exc) or type(exc).__name__)
            return {}
        self.answered.add(node)
        if self.away.pop(node, None) is not None:
            self._log.info("agent_back", node=node[:12], address=address)
        return relabel(found, "agent")

    def state(self, node_id: str) -> str:
        """``local`` (read here), ``ok``, ``away`` or ``unknown`` (not asked yet)."""
        if node_id == self.self_id:
            return "local"
        if node_id in self.away:
            return "away"
        return "ok" if node_id in self.answered else "unknown"

    def _gone(self, node: str, address: str, why: str) -> None:
        if self.away.get(node) != why:
            self._log.warning("agent_away", node=node[:12], address=address, error=why)
        self.away[node] = why

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                connector=aiohttp.TCPConnector(limit=0),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class AgentVolumes:
    """Deployment volumes on the other ready nodes, through their agents
    (patrd/observe/agent_volumes.py): ``SwarmBackend.node_volumes``.

    A node whose agent does not answer is left out of a listing (logged) and
    keeps its copy of a removed volume (logged: ``volume_not_removed``): the
    manager's own steps never wait on it longer than ``timeout_s``."""

    def __init__(
        self,
        nodes: SwarmNodesSource,
        token: str,
        port: int,
        owner: str,
        timeout_s: float = VOLUME_TIMEOUT_S,
    ) -> None:
        self._nodes = nodes
        self._token = token
        self._port = port
        self._owner = owner
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)  # a removal
        self._list_timeout = aiohttp.ClientTimeout(total=min(timeout_s, VOLUME_LIST_TIMEOUT_S))
        self._log = structlog.get_logger("patrd.observe.agent_client")

    async def _others(self) -> dict[str, str]:
        self_id, addresses = await self._nodes.agent_nodes()
        return {n: a for n, a in addresses.items() if n != self_id}

    async def list(self, deployment: str) -> Volumes:
        others = await self._others()
        found = await asyncio.gather(*(self._list(n, a, deployment) for n, a in others.items()))
        return [v for one in found for v in one]

    async def _list(self, node: str, address: str, deployment: str) -> Volumes:
        url = f"http://{_host(address)}:{self._port}{VOLUMES_PATH}"
        params = {"owner": self._owner, "deployment": deployment}
        try:
            async with (
                aiohttp.ClientSession(timeout=self._list_timeout) as http,
                http.get(url, params=params, headers=self._headers()) as resp,
            ):
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
                body = await resp.json()
            return [volume_from_json(v) for v in body["volumes"]]
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError, TypeError) as exc:
            self._log.warning(
                "volumes_not_listed", node=node[:12], address=address, error=str(exc) or repr(exc)
            )
            return []

    async def remove(self, name: str) -> None:
        others = await self._others()
        await asyncio.gather(*(self._remove(n, a, name) for n, a in others.items()))

    async def _remove(self, node: str, address: str, name: str) -> None:
        url = f"http://{_host(address)}:{self._port}{VOLUMES_PATH}/{name}"
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as http,
                http.delete(url, params={"owner": self._owner}, headers=self._headers()) as resp,
            ):
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
                if (await resp.json()).get("removed"):
                    self._log.info("volume_removed", volume=name, node=node[:12])
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, AttributeError) as exc:
            self._log.warning(
                "volume_not_removed",
                volume=name,
                node=node[:12],
                address=address,
                error=str(exc) or repr(exc),
            )

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}


class Nodes(Protocol):
    """patrd/api/nodes.py ``NodesView``."""

    async def list(self) -> list[NodeInfo]: ...
    async def drain(self, node: str) -> NodeInfo: ...
    async def activate(self, node: str) -> NodeInfo: ...


class WithAgents:
    """The node view with each node's agent state (``GET /v1/nodes``, ``agent``)."""

    def __init__(self, nodes: Nodes, figures: SwarmFigures) -> None:
        self._nodes = nodes
        self._figures = figures

    def _with_agent(self, node: NodeInfo) -> NodeInfo:
        return replace(node, agent=self._figures.state(node.node_id))

    async def list(self) -> list[NodeInfo]:
        return [self._with_agent(n) for n in await self._nodes.list()]

    async def drain(self, node: str) -> NodeInfo:
        return self._with_agent(await self._nodes.drain(node))

    async def activate(self, node: str) -> NodeInfo:
        return self._with_agent(await self._nodes.activate(node))


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
