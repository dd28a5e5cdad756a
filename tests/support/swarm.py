"""A real multi-node Docker Swarm on this machine, for the Swarm engine's tests.

Each node is a :class:`~tests.support.private_docker.PrivateDocker` (its own
dockerd, data root, exec root, socket and pidfile, ``--bridge=none``) in its
own network namespace. The plumbing is done with pyroute2, never ``ip``:

* a bridge in the root namespace holding ``10.250.X.1/24`` (X from the pid,
  moved on if that subnet is already routed here);
* per node a namespace, a veth pair with one end on the bridge and the other
  in the namespace as ``10.250.X.(10+i)/24``, ``lo`` up, default route via
  the bridge address;
* ``iptables -I FORWARD -i BR -o BR -j ACCEPT`` in the root namespace:
  Docker's FORWARD policy there is DROP, which would drop node-to-node
  traffic crossing the bridge (``swarm join`` then times out).

Node 1 runs ``swarm init``, the others join as workers; the test images are
copied into every node (``docker save | docker -H … load``) unless a test
leaves that to a registry: ``insecure_registry`` starts every dockerd with
``--insecure-registry <subnet>`` so the nodes pull over plain HTTP from a
registry listening on the bridge address (the manager's node registry). The root
namespace reaches every node address directly (the bridge is on-link), so a
test — or patrd's proxy on the manager — dials ``node_addr:published_port``.

:func:`swarm_cluster` always tears everything down (dockerds, mounts, data
dirs, namespaces, veths, the bridge, the iptables rule), also after a failed
start or test; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute, NetNS, netns

from tests.support.private_docker import PrivateDocker
from tests.support.waits import until_sync

T = TypeVar("T")

# dockerd and swarm operations on a loaded 2-core machine: generous bounds.
DOCKERD_START_S = 120.0
SWARM_OP_S = 120.0


@dataclass
class SwarmNode:
    index: int  # 1-based
    address: str  # on the bridge, reachable from the root namespace
    engine: PrivateDocker
    node_id: str = ""
    veth_host: str = ""

    @property
    def url(self) -> str:
        return self.engine.url

    def docker(self, *args: str, timeout: float = SWARM_OP_S) -> str:
        return self.engine.docker(*args, timeout=timeout).stdout.strip()


@dataclass
class Swarm:
    """N dockerds in N namespaces on one bridge, swarm-joined (node 1 manages)."""

    size: int = 3
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    subnet: ipaddress.IPv4Network = field(
        default_factory=lambda: ipaddress.IPv4Network(f"10.250.{os.getpid() % 250 + 1}.0/24")
    )
    nodes: list[SwarmNode] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # Start every node's dockerd with ``--insecure-registry <subnet>``: the nodes pull
    # over plain HTTP from a registry on the bridge (the manager's node registry).
    insecure_registry: bool = False
    _bridge_up: bool = False
    _rule_added: bool = False

    @property
    def bridge(self) -> str:
        return f"psw{self.tag}"  # <= 15 characters (IFNAMSIZ)

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def manager(self) -> SwarmNode:
        return self.nodes[0]

    # --- bring up ----------------------------------------------------------------

    def up(self, images: tuple[str, ...] = ()) -> None:
        started = time.monotonic()
        self._pick_subnet()
        self._plumb()
        mark = time.monotonic()
        self.timings["network_s"] = mark - started
        _parallel([partial(n.engine.start, DOCKERD_START_S) for n in self.nodes])
        self.timings["dockerd_s"] = time.monotonic() - mark
        mark = time.monotonic()
        self._form_swarm()
        self.timings["swarm_s"] = time.monotonic() - mark
        mark = time.monotonic()
        _parallel([partial(n.engine.load_image, r) for n in self.nodes for r in images])
        self.timings["images_s"] = time.monotonic() - mark
        self.timings["total_s"] = time.monotonic() - started

    def _pick_subnet(self) -> None:
        """Move on from the pid-derived subnet while anything here routes into it."""
        with IPRoute() as ipr:
            routed = [
                ipaddress.IPv4Network(f"{r.get('dst')}/{r['dst_len']}", strict=False)
                for r in ipr.get_routes(family=2)
                if r.get("dst")
            ]
        third = self.subnet.network_address.packed[2]
        for step in range(250):
            candidate = ipaddress.IPv4Network(f"10.250.{(third + step) % 250 + 1}.0/24")
            if not any(candidate.overlaps(r) for r in routed):
                self.subnet = candidate
                return
        raise RuntimeError("no free 10.250.X.0/24 subnet for the test swarm")

    def _plumb(self) -> None:
        hosts = list(self.subnet.hosts())
        with IPRoute() as ipr:
            ipr.link("add", ifname=self.bridge, kind="bridge")
            self._bridge_up = True
            (br,) = ipr.link_lookup(ifname=self.bridge)
            ipr.addr("add", index=br, address=self.gateway, prefixlen=self.subnet.prefixlen)
            ipr.link("set", index=br, state="up")
            flags = ["--bridge=none"]
            if self.insecure_registry:
                flags.append(f"--insecure-registry={self.subnet}")
            for i in range(1, self.size + 1):
                engine = PrivateDocker(netns=f"psw{self.tag}n{i}", extra_args=tuple(flags))
                node = SwarmNode(index=i, address=str(hosts[9 + i]), engine=engine)
                node.veth_host = f"psw{self.tag}v{i}"
                self.nodes.append(node)
                netns.create(engine.netns)
                inner = f"psw{self.tag}i{i}"
                ipr.link("add", ifname=node.veth_host, kind="veth", peer=inner)
                (host_end,) = ipr.link_lookup(ifname=node.veth_host)
                (inner_end,) = ipr.link_lookup(ifname=inner)
                ipr.link("set", index=host_end, master=br, state="up")
                ipr.link("set", index=inner_end, net_ns_fd=engine.netns)
                with NetNS(engine.netns) as ns:
                    (lo,) = ns.link_lookup(ifname="lo")
                    ns.link("set", index=lo, state="up")
                    (eth,) = ns.link_lookup(ifname=inner)
                    ns.addr("add", index=eth, address=node.address, prefixlen=self.subnet.prefixlen)
                    ns.link("set", index=eth, state="up")
                    ns.route("add", dst="0.0.0.0/0", gateway=self.gateway)
        _iptables("-I", "FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT")
        self._rule_added = True

    def _form_swarm(self) -> None:
        manager = self.manager
        manager.docker("swarm", "init", "--advertise-addr", manager.address)
        token = manager.docker("swarm", "join-token", "-q", "worker")
        for node in self.nodes[1:]:
            node.docker(
                "swarm",
                "join",
                "--advertise-addr",
                node.address,
                "--token",
                token,
                f"{manager.address}:2377",
            )
        for node in self.nodes:
            node.node_id = node.docker("info", "--format", "{{.Swarm.NodeID}}")
        self.wait_ready(SWARM_OP_S)

    def wait_ready(self, timeout: float) -> None:
        def all_ready() -> bool:
            states = self.manager.docker("node", "ls", "--format", "{{.ID}} {{.Status}}")
            ready = [line for line in states.splitlines() if line.endswith(" Ready")]
            return len(ready) == self.size

        until_sync(all_ready, timeout, "every swarm node Ready", interval=0.5)

    def crash_report(self) -> str:
        """Each node whose dockerd died on its own, with its exit code and what its
        log says of it (and the kernel's word on it: the OOM killer, a segfault)."""
        report = "\n".join(
            f"swarm node {n.index} dockerd died (exit {n.engine.proc.returncode}):\n"
            f"{n.engine.crash_lines(40)}"
            for n in self.nodes
            if n.engine.crashed() and n.engine.proc is not None
        )
        return f"{report}\n{_kernel_kills()}" if report else ""

    def revive(self) -> str:
        """Start again every dockerd that died on its own (so one crash fails one test,
        not every later test on this swarm); the crash report, empty when none died."""
        report = self.crash_report()
        crashed = [n for n in self.nodes if n.engine.crashed()]
        try:
            _parallel([partial(n.engine.start, DOCKERD_START_S) for n in crashed])
            if crashed:
                self.wait_ready(SWARM_OP_S)
        except Exception as exc:  # the crash is the news, not only that the restart failed
            raise AssertionError(f"{report}\n\nstarting it again failed: {exc}") from exc
        return report

    def node_by_address(self, address: str) -> SwarmNode:
        return next(n for n in self.nodes if n.address == address)

    # --- tear down -----------------------------------------------------------------

    def down(self) -> None:
        """Remove everything this swarm made; never raises."""
        errors: list[str] = []
        with contextlib.suppress(Exception):
            if self.nodes and self.manager.engine.pid() is not None:
                ids = self.manager.engine.docker("service", "ls", "-q", check=False, timeout=60)
                if ids.stdout.split():
                    self.manager.engine.docker(
                        "service", "rm", *ids.stdout.split(), check=False, timeout=60
                    )
        _parallel([n.engine.destroy for n in reversed(self.nodes)], errors)
        with IPRoute() as ipr:
            for node in self.nodes:
                with contextlib.suppress(Exception):
                    ipr.link("del", ifname=node.veth_host)
            if self._bridge_up:
                with contextlib.suppress(Exception):
                    ipr.link("del", ifname=self.bridge)
        for node in self.nodes:
            if node.engine.netns in netns.listnetns():
                with contextlib.suppress(Exception):
                    netns.remove(node.engine.netns)
        if self._rule_added:
            _iptables("-D", "FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT")
            self._rule_added = False
        for node in self.nodes:
            shutil.rmtree(node.engine.root, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What :meth:`down` failed to remove (empty when clean)."""
        found: list[str] = []
        with IPRoute() as ipr:
            if ipr.link_lookup(ifname=self.bridge):
                found.append(f"bridge {self.bridge}")
            found += [
                f"veth {n.veth_host}" for n in self.nodes if ipr.link_lookup(ifname=n.veth_host)
            ]
        found += [f"netns {ns}" for ns in netns.listnetns() if ns.startswith(f"psw{self.tag}")]
        found += [f"dir {n.engine.root}" for n in self.nodes if Path(n.engine.root).exists()]
        if _iptables("-C", "FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT") == 0:
            found.append("iptables FORWARD rule")
        return found


def _kernel_kills() -> str:
    """The kernel log's lines about killed or crashed processes, if it can be read."""
    with contextlib.suppress(Exception):
        log = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10).stdout
        words = ("oom", "killed process", "segfault", "dockerd")
        return "\n".join(
            line for line in log.splitlines()[-2000:] if any(w in line.lower() for w in words)
        )[-3000:]
    return ""


def _iptables(*args: str) -> int:
    return subprocess.run(
        ["iptables", "-w", "30", *args], capture_output=True, check=False, timeout=60
    ).returncode


def _parallel(calls: list[Callable[[], T]], errors: list[str] | None = None) -> list[T]:
    """Run blocking calls in threads; raise the first error unless ``errors`` collects them."""
    if not calls:
        return []
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
    results: list[T] = []
    for future in futures:
        exc = future.exception()
        if exc is None:
            results.append(future.result())
        elif errors is None:
            raise exc
        else:
            errors.append(repr(exc))
    return results


@contextlib.contextmanager
def swarm_cluster(
    size: int = 3, images: tuple[str, ...] = (), *, insecure_registry: bool = False
) -> Iterator[Swarm]:
    swarm = Swarm(size=size, insecure_registry=insecure_registry)
    try:
        swarm.up(images)
        yield swarm
    finally:
        swarm.down()
