"""One sampling pass and one Prometheus scrape over N synthetic instances, old code vs new.

No containers: a fake cgroup v2 tree (``system.slice/docker-<id>.scope`` with the
files the reader opens, real-sized ``memory.stat``) and ``/proc/<pid>/net/dev``
in a temporary directory, read by the REAL :class:`~patrd.observe.metrics.Sampler`
pass (with its metrics history in a temporary ``metrics.db``) and rendered by the
REAL :class:`~patrd.observe.prometheus.Exposition`. The old code is this
repository's ``--old`` revision (default: the merge base with main) loaded from
``git show`` into temporary modules; old and new passes alternate on the same
tree so both see the same machine. CPU is the process's CPU time
(``time.process_time``: every thread, user + system); medians of ``--runs``.

The counters of a tmpfs file cost the kernel less than a real cgroup's (which it
generates on each read), so the CPU here is a floor; the files opened per
instance are the same as on a real host.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from patrd.model.instances import ContainerState, Instance
from patrd.observe import counters as new_counters
from patrd.observe import metrics as new_metrics
from patrd.observe import prometheus as new_prometheus
from patrd.observe.history import History
from scripts.bench.table import render
from tests.support.observed import deployment_record

REPO = Path(__file__).resolve().parents[2]
INTERVAL_S = 5.0  # metrics.interval_s's default

NET_DEV = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs"
    " drop fifo colls carrier compressed\n"
    "    lo:       0       0    0    0    0     0          0         0        0       0    0"
    "    0    0     0       0          0\n"
    "  eth0: {rx}    1000    0    0    0     0          0         0   {tx}     900    0    0"
    "    0     0       0          0\n"
)
MEMORY_STAT_KEYS = (
    "anon",
    "file",
    "kernel",
    "kernel_stack",
    "pagetables",
    "sec_pagetables",
    "percpu",
    "sock",
    "vmalloc",
    "shmem",
    "zswap",
    "zswapped",
    "file_mapped",
    "file_dirty",
    "file_writeback",
    "swapcached",
    "anon_thp",
    "file_thp",
    "shmem_thp",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "slab_reclaimable",
    "slab_unreclaimable",
    "slab",
    "workingset_refault_anon",
    "workingset_refault_file",
    "workingset_activate_anon",
    "workingset_activate_file",
    "workingset_restore_anon",
    "workingset_restore_file",
    "workingset_nodereclaim",
    "pgscan",
    "pgsteal",
    "pgscan_kswapd",
    "pgscan_direct",
    "pgsteal_kswapd",
    "pgsteal_direct",
    "pgfault",
    "pgmajfault",
    "pgrefill",
    "pgactivate",
    "pgdeactivate",
    "pglazyfree",
    "pglazyfreed",
    "thp_fault_alloc",
    "thp_collapse_alloc",
)


def container_id(n: int) -> str:
    return f"{n:064x}"


def build_tree(root: Path, count: int) -> None:
    """``root/sys``: a cgroup v2 mount with ``count`` containers; ``root/proc``: their pids."""
    sys_root, proc = root / "sys", root / "proc"
    sys_root.mkdir(parents=True)
    (sys_root / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma misc\n")
    for n in range(count):
        scope = sys_root / "system.slice" / f"docker-{container_id(n)}.scope"
        scope.mkdir(parents=True)
        pid = 10_000 + n
        stat = "".join(
            f"{key} {(n + 1) * (i + 7) * 4096}\n" for i, key in enumerate(MEMORY_STAT_KEYS)
        )
        files = {
            "cpu.stat": f"usage_usec {1_000_000 + n * 37}\nuser_usec 900000\nsystem_usec 100000\n"
            "core_sched.force_idle_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n"
            "nr_bursts 0\nburst_usec 0\n",
            "cpu.max": "max 100000\n" if n % 2 else "50000 100000\n",
            "memory.current": f"{40_000_000 + n * 4096}\n",
            "memory.stat": stat,
            "memory.max": "max\n" if n % 3 else "268435456\n",
            "io.stat": f"8:0 rbytes={n * 512} wbytes={n * 1024} rios=3 wios=4 dbytes=0 dios=0\n",
            "cgroup.procs": f"{pid}\n{pid + 100_000}\n",
        }
        for name, text in files.items():
            (scope / name).write_text(text)
        net = proc / str(pid) / "net"
        net.mkdir(parents=True)
        (net / "dev").write_text(NET_DEV.format(rx=n * 1000 + 5, tx=n * 700 + 3))


def tick_tree(root: Path, count: int, k: int) -> None:
    """Move the CPU counters on (else no rates after the first pass)."""
    for n in range(count):
        scope = root / "sys" / "system.slice" / f"docker-{container_id(n)}.scope"
        (scope / "cpu.stat").write_text(f"usage_usec {1_000_000 + n * 37 + k * 1000}\n")


@dataclass
class View:
    name: str
    container_id: str
    ready: bool = True
    probe: str = "ready"
    liveness_failures: int = 0
    restarts: int = 0


class Fleet:
    """The sampler's engine and store, the collector's store and instance views."""

    def __init__(self, count: int, per_deployment: int) -> None:
        self.records: list[Any] = []
        self.instances: list[Instance] = []
        for d in range(count // per_deployment):
            name = f"app{d:04d}"
            record = deployment_record({"name": name, "resources": {"cpu": 0.5}})
            record = dataclasses.replace(record, id=f"dep{d:04d}")
            self.records.append(record)
            for slot in range(per_deployment):
                n = d * per_deployment + slot
                self.instances.append(
                    Instance(
                        container_id=container_id(n),
                        container_name=f"patrd-{name}-{slot}",
                        deployment_id=record.id,
                        deployment=name,
                        revision=1,
                        slot=slot,
                        state=ContainerState.RUNNING,
                        ip=f"10.{n // 250}.{n % 250}.2",
                        exit_code=None,
                    )
                )
        self.views: dict[str, list[View]] = {}
        for i in self.instances:
            self.views.setdefault(i.deployment_id, []).append(
                View(f"{i.deployment}-{i.slot}", i.container_id)
            )

    async def list_instances(self, deployment_id: str | None = None) -> list[Instance]:
        return [i for i in self.instances if deployment_id in (None, i.deployment_id)]

    async def stats(self, container_id: str) -> dict[str, Any]:
        raise AssertionError("every container has a cgroup here")

    async def list_deployments(self) -> list[Any]:
        return self.records

    async def events_since(self, after_id: int, limit: int = 1000) -> list[tuple[int, str, str]]:
        return []

    async def last_event_id(self) -> int:
        return 0

    def instances_of(self, deployment_id: str) -> list[View]:
        return self.views.get(deployment_id, [])


class _Instances:
    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def instances(self, deployment_id: str) -> list[View]:
        return self._fleet.instances_of(deployment_id)


def old_modules(rev: str) -> tuple[ModuleType, ModuleType, ModuleType]:
    """counters, metrics and prometheus as of ``rev``, as modules of their own."""
    out = []
    for name in ("counters", "metrics", "prometheus"):
        text = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:patrd/observe/{name}.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        text = text.replace("from patrd.observe.counters import", "from _old_counters import")
        spec = importlib.util.spec_from_loader(f"_old_{name}", loader=None)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"_old_{name}"] = module
        exec(compile(text, f"<{rev}:{name}.py>", "exec"), module.__dict__)  # noqa: S102
        out.append(module)
    return out[0], out[1], out[2]


class Variant:
    def __init__(
        self,
        label: str,
        mods: tuple[ModuleType, ModuleType, ModuleType],
        root: Path,
        fleet: Fleet,
        history: History,
    ) -> None:
        counters, metrics, prometheus = mods
        self.label = label
        self.reader = counters.CgroupReader(root / "sys", proc=root / "proc")
        self.sampler = metrics.Sampler(fleet, fleet, self.reader, INTERVAL_S, history)
        self.exposition = prometheus.Exposition(
            prometheus.Sources(store=fleet, instances=_Instances(fleet), sampler=self.sampler)
        )
        self.pass_cpu: list[float] = []
        self.pass_wall: list[float] = []
        self.read_cpu: list[float] = []
        self.scrape_cpu: list[float] = []
        self.scrape_wall: list[float] = []
        self.scrape_bytes = 0
        self.text = b""
        read_all = self.sampler._read_all

        def timed_read_all(ids: list[str]) -> Any:  # the reader's share, in its thread
            cpu = time.thread_time()
            out = read_all(ids)
            self.read_cpu.append(time.thread_time() - cpu)
            return out

        self.sampler._read_all = timed_read_all

    async def one_pass(self) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        await self.sampler.tick()
        self.pass_cpu.append(time.process_time() - cpu)
        self.pass_wall.append(time.perf_counter() - wall)

    async def one_scrape(self) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        self.text = await self.exposition.render()
        self.scrape_cpu.append(time.process_time() - cpu)
        self.scrape_wall.append(time.perf_counter() - wall)
        self.scrape_bytes = len(self.text)

    def row(self, count: int) -> dict[str, Any]:
        def ms(values: list[float]) -> float:
            return round(statistics.median(values) * 1000, 1)

        pass_cpu = statistics.median(self.pass_cpu)
        return {
            "code": self.label,
            "instances": count,
            "pass_cpu_ms": ms(self.pass_cpu),
            "pass_wall_ms": ms(self.pass_wall),
            "reader_cpu_ms": ms(self.read_cpu),
            "reader_us_per_instance": round(statistics.median(self.read_cpu) / count * 1e6, 1),
            "idle_cpu_pct": round(pass_cpu / INTERVAL_S * 100, 2),
            "scrape_cpu_ms": ms(self.scrape_cpu),
            "scrape_wall_ms": ms(self.scrape_wall),
            "scrape_kib": round(self.scrape_bytes / 1024, 1),
        }


async def run(count: int, per_deployment: int, runs: int, rev: str, tmp: Path) -> list[Any]:
    build_tree(tmp, count)
    fleet = Fleet(count, per_deployment)
    variants: list[Variant] = []
    for label, mods in (
        (f"old ({rev[:7]})", old_modules(rev)),
        ("new", (new_counters, new_metrics, new_prometheus)),
    ):
        history = await History.open(tmp / f"metrics-{len(variants)}.db")
        variants.append(Variant(label, mods, tmp, fleet, history))
    files: dict[str, float] = {}
    for k in range(runs + 2):
        tick_tree(tmp, count, k)
        for v in variants:
            before = getattr(v.reader, "files_read", None)
            await v.one_pass()
            if k < 2:  # the first passes find the directories and have no rates yet
                for values in (v.pass_cpu, v.pass_wall, v.read_cpu):
                    values.clear()
            if before is not None:
                files[v.label] = (v.reader.files_read - before) / count
    for _ in range(runs):
        for v in variants:
            await v.one_scrape()
    old_totals, new_totals = (totals(v.sampler.latest) for v in variants)
    new = variants[-1]
    same_text = new.text == generate_latest(new.exposition.registry)
    for v in variants:
        await v.sampler._history.close()
    old_series, new_series = (series(v.text) for v in variants)
    rows = [v.row(count) for v in variants]
    for row in rows:
        row["files_per_instance_last_pass"] = files.get(row["code"])
        row["same_series"] = old_series == new_series
        row["text_as_prometheus_client"] = same_text
        row["same_totals"] = old_totals == new_totals and len(new_totals) == count
    return rows


def totals(latest: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """What the last pass read per container (all but the moment it read it)."""
    return {
        cid: tuple(getattr(s.totals, f.name) for f in dataclasses.fields(s.totals)[1:])  # not "at"
        for cid, s in latest.items()
    }


def series(text: bytes) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """The exposition's series (names and labels; the values depend on timing)."""
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


COLUMNS = (
    ("code", "code"),
    ("instances", "instances"),
    ("pass_cpu_ms", "pass CPU ms"),
    ("pass_wall_ms", "pass wall ms"),
    ("reader_cpu_ms", "reader CPU ms"),
    ("reader_us_per_instance", "reader µs/inst"),
    ("idle_cpu_pct", "sampler CPU % of 1 core"),
    ("scrape_cpu_ms", "scrape CPU ms"),
    ("scrape_wall_ms", "scrape wall ms"),
    ("scrape_kib", "scrape KiB"),
)


def table(rows: list[dict[str, Any]]) -> str:
    return render(COLUMNS, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--per-deployment", type=int, default=4)
    parser.add_argument("--runs", type=int, default=15, help="passes and scrapes measured (median)")
    parser.add_argument(
        "--old", default="", help="the old code's git revision (default: merge base)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()
    rev = (
        args.old
        or subprocess.run(
            ["git", "-C", str(REPO), "merge-base", "HEAD", "main"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    with tempfile.TemporaryDirectory(prefix="patrd-bench-sampler-") as tmp:
        rows = asyncio.run(run(args.instances, args.per_deployment, args.runs, rev, Path(tmp)))
    for row in rows:
        print(json.dumps(row), flush=True)
    print()
    print(table(rows))
    print(f"\nload average {os.getloadavg()[0]:.1f}; sampler CPU % = pass CPU / {INTERVAL_S:g} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
