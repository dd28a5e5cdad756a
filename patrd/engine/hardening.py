"""Container hardening defaults: the part of a container's HostConfig that fences it.

Pure data and a pure function; ``engine.py`` merges :func:`host_config` into
every container it creates. The reasons for each default are in
``docs/design.md`` ("Fences"); how to change them is in the README's
Security section.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from patrd.model.capabilities import KNOWN_CAPABILITIES

__all__ = [
    "DEFAULT_CAPABILITIES",
    "DEFAULT_PIDS_LIMIT",
    "KNOWN_CAPABILITIES",
    "Hardening",
    "host_config",
    "refuse_docker_socket",
]

# Kept from Docker's default set: what typical web images need to start as
# root, bind a port below 1024, chown their data and cache directories and
# drop to their own user (nginx, httpd, postgres/redis entrypoints with gosu
# or su-exec). Dropped from Docker's default set: NET_RAW (raw sockets: ARP
# and ICMP spoofing on the bridge), MKNOD, SETFCAP, SETPCAP, SYS_CHROOT,
# AUDIT_WRITE.
DEFAULT_CAPABILITIES: Final = (
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "NET_BIND_SERVICE",
    "SETGID",
    "SETUID",
)
# Processes + threads per container: a fork bomb stops here. JVMs and thread
# pools of a few hundred threads fit.
DEFAULT_PIDS_LIMIT: Final = 1024

# Linux capability names (without CAP_), as Docker accepts them: patrd/model/capabilities.py.

DOCKER_SOCKETS: Final = ("/var/run/docker.sock", "/run/docker.sock")


@dataclass(frozen=True, slots=True)
class Hardening:
    """What every container gets; the operator changes it in ``[docker]``."""

    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    pids_limit: int = DEFAULT_PIDS_LIMIT  # 0: no limit
    no_new_privileges: bool = True

    def __post_init__(self) -> None:
        unknown = [c for c in self.capabilities if c not in KNOWN_CAPABILITIES]
        if unknown:
            raise ValueError(f"unknown capabilities: {', '.join(unknown)}")
        if self.pids_limit < 0:
            raise ValueError("pids_limit must not be negative")


def host_config(h: Hardening) -> dict[str, Any]:
    """The HostConfig keys patrd sets on every container."""
    config: dict[str, Any] = {
        # Start from nothing and add back the listed capabilities.
        "CapDrop": ["ALL"],
        "CapAdd": sorted(set(h.capabilities)),
    }
    if h.no_new_privileges:
        # setuid binaries and file capabilities cannot raise privileges.
        config["SecurityOpt"] = ["no-new-privileges:true"]
    if h.pids_limit:
        config["PidsLimit"] = h.pids_limit
    return config


def refuse_docker_socket(host: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` if a HostConfig would mount the Docker socket.

    Whoever holds the socket is root on the host. patrd mounts nothing of the
    host today; this guard keeps it so when volumes arrive.
    """
    sources: list[str] = []
    binds: Sequence[str] = host.get("Binds") or ()
    sources += [b.split(":", 1)[0] for b in binds]
    mounts: Sequence[Mapping[str, Any]] = host.get("Mounts") or ()
    sources += [str(m.get("Source", "")) for m in mounts]
    for source in sources:
        path = source.rstrip("/")
        if path in DOCKER_SOCKETS or path.endswith("/docker.sock") or path in ("/run", "/var/run"):
            raise ValueError(f"refusing to mount {source} into a container: it exposes Docker")
