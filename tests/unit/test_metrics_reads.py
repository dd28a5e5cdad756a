"""What the cgroup reader opens on which read, and that its figures are those of a
reader that opens and parses every file on every read (patrd/observe/counters.py)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from patrd.observe.counters import (
    CgroupReader,
    Counters,
    flat_value,
    parse_blkio,
    parse_cpu_max,
    parse_flat_keyed,
    parse_io_stat,
    parse_memory_limit,
    parse_net_dev,
    parse_v1_quota,
    refresh_due,
    working_set,
)

NET_DEV = (
    "Inter-|   Receive |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets\n"
    "    lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n"
    "  eth0: {rx} 10 0 0 0 0 0 0 {tx} 9 0 0 0 0 0 0\n"
)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _v2(root: Path, cid: str, k: int, pid: int = 4242) -> str:
    """A v2 container whose moving counters depend on ``k``; returns its directory."""
    scope = f"sys/system.slice/docker-{cid}.scope"
    _write(
        root,
        {
            "sys/cgroup.controllers": "cpu io memory\n",
            f"{scope}/cpu.stat": f"usage_usec {1000 + k * 250}\nuser_usec 7\n",
            f"{scope}/cpu.max": "150000 100000\n",
            f"{scope}/memory.current": f"{100_000 + k * 10}\n",
            f"{scope}/memory.stat": f"anon 1\nactive_file 9\ninactive_file {k * 3}\nslab 2\n",
            f"{scope}/memory.max": "268435456\n",
            f"{scope}/io.stat": f"8:0 rbytes={k} wbytes={2 * k} rios=1 wios=1\n",
            f"{scope}/cgroup.procs": f"{pid}\n{pid + 1}\n",
            f"proc/{pid}/net/dev": NET_DEV.format(rx=100 * k, tx=50 * k),
        },
    )
    return str(root / scope)


def _everything_v2(d: str, proc: Path) -> Counters:
    """The reference: every file opened and parsed in full, every time."""

    def text(path: str) -> str:
        return Path(path).read_text()

    pid = text(f"{d}/cgroup.procs").splitlines()[0]
    rx, tx = parse_net_dev(text(f"{proc}/{pid}/net/dev"))
    read, written = parse_io_stat(text(f"{d}/io.stat"))
    return Counters(
        at=0.0,
        cpu_ns=parse_flat_keyed(text(f"{d}/cpu.stat"))["usage_usec"] * 1000,
        memory_bytes=working_set(
            int(text(f"{d}/memory.current")), parse_flat_keyed(text(f"{d}/memory.stat")), True
        ),
        memory_limit=parse_memory_limit(text(f"{d}/memory.max")),
        cpu_limit=parse_cpu_max(text(f"{d}/cpu.max")),
        rx_bytes=rx,
        tx_bytes=tx,
        read_bytes=read,
        write_bytes=written,
        source="cgroup v2",
    )


def _same(a: Counters | None, b: Counters) -> bool:
    return a is not None and dataclasses.replace(a, at=0.0) == b


def test_refresh_due_every_nth_read() -> None:
    assert [k for k in range(30) if refresh_due(k, 12)] == [0, 12, 24]
    assert all(refresh_due(k, 1) for k in range(5))
    assert refresh_due(0, 0)  # never divides by zero


def test_flat_value_takes_one_key() -> None:
    data = b"usage_usec 2500\nuser_usec 2000\n"
    assert flat_value(data, b"usage_usec") == 2500 and flat_value(data, b"user_usec") == 2000
    stat = b"active_file 5\ninactive_file 7\ntotal_inactive_file 9"
    assert flat_value(stat, b"inactive_file") == 7  # not active_file's, not a suffix match
    assert flat_value(stat, b"total_inactive_file") == 9  # last line, no newline
    assert flat_value(b"anon 1\n", b"inactive_file", 0) == 0
    assert flat_value(b"inactive_file x\n", b"inactive_file", 0) == 0  # as parse_flat_keyed
    with pytest.raises(ValueError, match="usage_usec"):
        flat_value(b"user_usec 1\n", b"usage_usec")


def test_v2_files_opened_per_read(tmp_path: Path) -> None:
    """Five files a read; the limits and the pid's cgroup.procs every 12th read and at a restart."""
    cid = "a" * 64
    _v2(tmp_path, cid, 0)
    reader = CgroupReader(tmp_path / "sys", proc=tmp_path / "proc")
    opened = []
    for k in range(26):
        _v2(tmp_path, cid, k + 1)
        before = reader.files_read
        assert reader.read(cid) is not None
        opened.append(reader.files_read - before)
    # cpu.stat, memory.current, memory.stat, io.stat, /proc/<pid>/net/dev
    # + memory.max, cpu.max, cgroup.procs on reads 0, 12, 24
    assert opened == [8 if k % 12 == 0 else 5 for k in range(26)]
    _v2(tmp_path, cid, 0)  # the CPU counter went back: a restart
    before = reader.files_read
    assert reader.read(cid) is not None and reader.files_read - before == 8


def test_v2_figures_equal_reading_everything(tmp_path: Path) -> None:
    cid = "b" * 64
    proc = tmp_path / "proc"
    _v2(tmp_path, cid, 0)
    reader = CgroupReader(tmp_path / "sys", proc=proc)
    for k in range(15):
        d = _v2(tmp_path, cid, k)
        assert _same(reader.read(cid), _everything_v2(d, proc))
    # Restarted: new pid, the old one gone, counters back near zero.
    shutil.rmtree(proc / "4242")
    d = _v2(tmp_path, cid, 0, pid=5000)
    c = reader.read(cid)
    assert _same(c, _everything_v2(d, proc)) and c is not None and c.rx_bytes == 0
    # The pid's process is gone between refreshes: the pid is read again at once.
    for k in range(1, 4):
        d = _v2(tmp_path, cid, k, pid=6000 + k)
        shutil.rmtree(proc / str(6000 + k - 1), ignore_errors=True)
        shutil.rmtree(proc / "5000", ignore_errors=True)
        assert _same(reader.read(cid), _everything_v2(d, proc))
    # No process (empty cgroup.procs): no network figures, as before.
    (Path(d) / "cgroup.procs").write_text("")
    shutil.rmtree(proc)
    c = reader.read(cid)
    assert c is not None and c.rx_bytes is None and c.memory_bytes == _everything_v2_mem(d)


def _everything_v2_mem(d: str) -> int:
    stat = parse_flat_keyed(Path(f"{d}/memory.stat").read_text())
    return working_set(int(Path(f"{d}/memory.current").read_text()), stat, True)


def test_v1_figures_equal_reading_everything(tmp_path: Path) -> None:
    cid = "d" * 64
    sys_root, proc = tmp_path / "sys", tmp_path / "proc"
    reader = CgroupReader(sys_root, proc=proc, limits_every=5)
    opened = []
    for k in range(12):
        files = {
            f"cpuacct/docker/{cid}/cpuacct.usage": f"{7_000_000 + k * 999}\n",
            f"cpu/docker/{cid}/cpu.cfs_quota_us": "50000\n",
            f"cpu/docker/{cid}/cpu.cfs_period_us": "100000\n",
            f"memory/docker/{cid}/memory.usage_in_bytes": f"{3_000_000 + k}\n",
            f"memory/docker/{cid}/memory.stat": f"inactive_file 1\ntotal_inactive_file {k * 7}\n",
            f"memory/docker/{cid}/memory.limit_in_bytes": "536870912\n",
            f"memory/docker/{cid}/cgroup.procs": "77\n",
            f"blkio/docker/{cid}/blkio.throttle.io_service_bytes": f"8:0 Read {k}\n8:0 Write 4\n",
        }
        _write(sys_root, files)
        _write(proc, {"77/net/dev": NET_DEV.format(rx=k, tx=2 * k)})
        before = reader.files_read
        c = reader.read(cid)
        opened.append(reader.files_read - before)
        text = {name.rsplit("/", 1)[1]: value for name, value in files.items()}
        read, written = parse_blkio(text["blkio.throttle.io_service_bytes"])
        assert _same(
            c,
            Counters(
                at=0.0,
                cpu_ns=int(text["cpuacct.usage"]),
                memory_bytes=working_set(
                    int(text["memory.usage_in_bytes"]),
                    parse_flat_keyed(text["memory.stat"]),
                    False,
                ),
                memory_limit=parse_memory_limit(text["memory.limit_in_bytes"]),
                cpu_limit=parse_v1_quota(text["cpu.cfs_quota_us"], text["cpu.cfs_period_us"]),
                rx_bytes=k,
                tx_bytes=2 * k,
                read_bytes=read,
                write_bytes=written,
                source="cgroup v1",
            ),
        )
    # First read: the recursive blkio file is tried first (missing), then the one there.
    assert opened[0] == 10 and opened[5] == 9 and opened[1:5] == [5, 5, 5, 5]
