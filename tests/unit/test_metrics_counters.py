"""Counters and rates (patrd/observe/counters.py): cgroup v1 and v2 fixture trees,
Docker stats, rates between two readings."""

from __future__ import annotations

import shutil
from pathlib import Path

from patrd.observe.counters import (
    CgroupReader,
    Counters,
    counters_from_docker_stats,
    parse_blkio,
    parse_cpu_max,
    parse_io_stat,
    parse_net_dev,
    rates,
)

# --- cgroup readers -----------------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    5000      10    0    0    0     0          0         0     5000      10    0    0    0     0       0          0
  eth0: 1234567    1000    0    0    0     0          0         0   765432     900    0    0    0     0       0          0
"""  # noqa: E501


def test_cgroup_v2_tree(tmp_path: Path) -> None:
    cid = "a" * 64
    scope = f"sys/system.slice/docker-{cid}.scope"
    _write(
        tmp_path,
        {
            "sys/cgroup.controllers": "cpu io memory pids\n",
            f"{scope}/cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
            f"{scope}/cpu.max": "150000 100000\n",
            f"{scope}/memory.current": "104857600\n",
            f"{scope}/memory.stat": "anon 50000000\nfile 60000000\ninactive_file 20971520\n",
            f"{scope}/memory.max": "268435456\n",
            f"{scope}/io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2\n"
            "8:16 rbytes=1000 wbytes=0 rios=1 wios=0\n",
            f"{scope}/cgroup.procs": "4242\n4243\n",
            "proc/4242/net/dev": NET_DEV,
        },
    )
    reader = CgroupReader(tmp_path / "sys", proc=tmp_path / "proc", limits_every=1)
    assert reader.v2 and reader.layout == "cgroup v2"
    c = reader.read(cid)
    assert c is not None
    assert c.cpu_ns == 2_500_000_000
    assert c.cpu_limit == 1.5
    assert c.memory_bytes == 104857600 - 20971520
    assert c.memory_limit == 268435456
    assert (c.read_bytes, c.write_bytes) == (5096, 8192)
    assert (c.rx_bytes, c.tx_bytes) == (1234567, 765432)
    assert c.source == "cgroup v2"
    (tmp_path / f"{scope}/cpu.max").write_text("max 100000\n")
    (tmp_path / f"{scope}/memory.max").write_text("max\n")
    c2 = reader.read(cid)
    assert c2 is not None and c2.cpu_limit is None and c2.memory_limit is None
    assert reader.read("b" * 64) is None  # not found: the sampler asks Docker instead


def test_cgroup_v2_cgroupfs_driver_path(tmp_path: Path) -> None:
    cid = "c" * 64
    _write(
        tmp_path,
        {
            "cgroup.controllers": "cpu memory\n",
            f"docker/{cid}/cpu.stat": "usage_usec 1\n",
            f"docker/{cid}/cpu.max": "max 100000\n",
            f"docker/{cid}/memory.current": "10\n",
            f"docker/{cid}/memory.stat": "inactive_file 4\n",
            f"docker/{cid}/memory.max": "max\n",
            f"docker/{cid}/cgroup.procs": "",
        },
    )
    c = CgroupReader(tmp_path).read(cid)
    assert c is not None and c.memory_bytes == 6 and c.rx_bytes is None and c.read_bytes is None


def test_cgroup_v1_tree(tmp_path: Path) -> None:
    cid = "d" * 64
    _write(
        tmp_path,
        {
            f"sys/cpuacct/docker/{cid}/cpuacct.usage": "7000000000\n",
            f"sys/cpu/docker/{cid}/cpu.cfs_quota_us": "50000\n",
            f"sys/cpu/docker/{cid}/cpu.cfs_period_us": "100000\n",
            f"sys/memory/docker/{cid}/memory.usage_in_bytes": "3000000\n",
            f"sys/memory/docker/{cid}/memory.stat": "cache 100\ntotal_inactive_file 1000000\n",
            f"sys/memory/docker/{cid}/memory.limit_in_bytes": "9223372036854771712\n",
            f"sys/memory/docker/{cid}/cgroup.procs": "77\n",
            f"sys/blkio/docker/{cid}/blkio.throttle.io_service_bytes": (
                "8:0 Read 300\n8:0 Write 700\n8:0 Sync 1000\n8:0 Total 1000\nTotal 1000\n"
            ),
            "proc/77/net/dev": NET_DEV,
        },
    )
    reader = CgroupReader(tmp_path / "sys", proc=tmp_path / "proc", limits_every=1)
    assert not reader.v2
    c = reader.read(cid)
    assert c is not None
    assert c.cpu_ns == 7_000_000_000 and c.cpu_limit == 0.5
    assert c.memory_bytes == 2_000_000 and c.memory_limit is None  # "unlimited"
    assert (c.read_bytes, c.write_bytes) == (300, 700)
    assert (c.rx_bytes, c.tx_bytes) == (1234567, 765432)
    (tmp_path / f"sys/cpu/docker/{cid}/cpu.cfs_quota_us").write_text("-1\n")
    c2 = reader.read(cid)
    assert c2 is not None and c2.cpu_limit is None


def test_parsers_edge_cases() -> None:
    assert parse_cpu_max("max 100000") is None and parse_cpu_max("200000 100000") == 2.0
    assert parse_io_stat("") == (0, 0)
    assert parse_blkio("Total 0\n") == (0, 0)
    assert parse_net_dev(NET_DEV.splitlines()[0] + "\n" + NET_DEV.splitlines()[1]) == (0, 0)


def test_docker_stats_fallback_v1_and_v2_shapes() -> None:
    v1 = {
        "cpu_stats": {"cpu_usage": {"total_usage": 5_000_000_000}},
        "memory_stats": {
            "usage": 10_000_000,
            "limit": 536870912,
            "stats": {"total_inactive_file": 2_000_000},
        },
        "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 20}},
        "blkio_stats": {
            "io_service_bytes_recursive": [
                {"op": "Read", "value": 5},
                {"op": "Write", "value": 7},
                {"op": "Total", "value": 12},
            ]
        },
    }
    c = counters_from_docker_stats(v1, 1.0)
    assert c is not None and c.cpu_ns == 5_000_000_000 and c.memory_bytes == 8_000_000
    assert (c.rx_bytes, c.tx_bytes, c.read_bytes, c.write_bytes) == (10, 20, 5, 7)
    v2 = {
        "cpu_stats": {"cpu_usage": {"total_usage": 1}},
        "memory_stats": {"usage": 100, "stats": {"inactive_file": 30}},
        "blkio_stats": {"io_service_bytes_recursive": [{"op": "read", "value": 3}]},
    }
    c2 = counters_from_docker_stats(v2, 1.0)
    assert c2 is not None and c2.memory_bytes == 70 and c2.read_bytes == 3 and c2.rx_bytes is None
    assert counters_from_docker_stats({}, 1.0) is None


def test_rates_are_cores_and_bytes_per_second() -> None:
    a = Counters(at=10.0, cpu_ns=1_000_000_000, memory_bytes=1, rx_bytes=0, tx_bytes=0)
    b = Counters(
        at=12.0, cpu_ns=3_000_000_000, memory_bytes=1, cpu_limit=2.0, rx_bytes=2000, tx_bytes=None
    )
    r = rates(a, b, allocation_fallback=1.0)
    assert r == (1.0, 2.0, 1000.0, None, None, None)  # one core of a 2-core allocation
    c = Counters(at=12.0, cpu_ns=3_000_000_000, memory_bytes=1)
    assert rates(a, c, allocation_fallback=0.5) == (1.0, 0.5, None, None, None, None)
    restarted = Counters(at=14.0, cpu_ns=10, memory_bytes=1)
    assert rates(b, restarted, 1.0) is None


def test_cgroup_limits_read_again_every_n_reads_and_moved_dirs_found(tmp_path: Path) -> None:
    """Limits cached for `limits_every` reads; a vanished directory looked up again."""
    cid = "e" * 64
    scope = f"system.slice/docker-{cid}.scope"
    files = {
        "cgroup.controllers": "cpu memory\n",
        f"{scope}/cpu.stat": "usage_usec 1\n",
        f"{scope}/cpu.max": "100000 100000\n",
        f"{scope}/memory.current": "10\n",
        f"{scope}/memory.stat": "inactive_file 4\n",
        f"{scope}/memory.max": "1000\n",
        f"{scope}/cgroup.procs": "",
    }
    _write(tmp_path, files)
    reader = CgroupReader(tmp_path, limits_every=3)
    first = reader.read(cid)
    assert first is not None and (first.cpu_limit, first.memory_limit) == (1.0, 1000)
    (tmp_path / f"{scope}/cpu.max").write_text("200000 100000\n")
    (tmp_path / f"{scope}/memory.max").write_text("2000\n")
    (tmp_path / f"{scope}/memory.current").write_text("20\n")
    for _ in range(2):  # the two reads the cache covers: usage fresh, limits not
        c = reader.read(cid)
        assert (
            c is not None and c.memory_bytes == 16 and (c.cpu_limit, c.memory_limit) == (1.0, 1000)
        )
    c = reader.read(cid)
    assert c is not None and (c.cpu_limit, c.memory_limit) == (2.0, 2000)
    # The container's cgroup moves (another driver path): found again in the same read.
    moved = {k.replace(scope, f"docker/{cid}"): v for k, v in files.items()}
    shutil.rmtree(tmp_path / "system.slice")
    _write(tmp_path, moved)
    c = reader.read(cid)
    assert c is not None and c.memory_bytes == 6
    shutil.rmtree(tmp_path / "docker")
    assert reader.read(cid) is None
