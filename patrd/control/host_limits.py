"""Host limits that bite at a thousand instances: the kernel's neighbour table.

The proxy and the readiness probes reach every instance by its address on
its deployment's bridge network, so the host keeps an ARP (neighbour) entry
per instance it talks to. Linux caps that table at
``net.ipv4.neigh.default.gc_thresh3`` (1024 by default); past it, new
connections time out ("neighbor table overflow" in the kernel log). Measured
on this project's bench: at 1,000 instances a daemon restart re-checks every
instance at once and half the probes timed out. The daemon does not change
host sysctls; it says so once, early. ``scripts/install`` writes
``/etc/sysctl.d/60-patrd-neighbour.conf`` (gc_thresh3 = 16384) so an
installed patrd does not meet this.
"""

from __future__ import annotations

from pathlib import Path

GC_THRESH3 = Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
HEADROOM = 2  # entries wanted per instance (the proxy, the probes, other containers)


def read_gc_thresh3(path: Path = GC_THRESH3) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def neighbour_table_warning(instances: int, gc_thresh3: int | None) -> str | None:
    """A sentence for the log when ``instances`` come near the host's cap; None if fine."""
    if gc_thresh3 is None or instances * HEADROOM <= gc_thresh3:
        return None
    wanted = 1 << max(10, (instances * HEADROOM * 2 - 1).bit_length())
    return (
        f"{instances} instances and net.ipv4.neigh.default.gc_thresh3 = {gc_thresh3}: "
        "connections to instances may time out (neighbor table overflow); raise it, e.g. "
        f"sysctl -w net.ipv4.neigh.default.gc_thresh3={wanted} "
        f"net.ipv4.neigh.default.gc_thresh2={wanted // 2}"
    )
