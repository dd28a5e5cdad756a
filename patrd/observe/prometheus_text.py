"""The per-instance families of ``GET /metrics`` as text, without ``prometheus_client``.

At 1,000 instances these are 14 families of 1,000 samples each: most of a
scrape. ``prometheus_client`` builds a Sample (with a label dict) per value and
formats and escapes the sorted labels of each; here the label text of an
instance is built once and kept while the instance is (:class:`LabelCache`),
the values are formatted as ``prometheus_client`` formats them
(``floatToGoString``) and the family is one join. The families are declared
once (:data:`SAMPLE_FAMILIES`, :data:`PROBE_FAMILIES`) and
:mod:`patrd.observe.prometheus` builds its ``prometheus_client`` metrics from
the same declarations, so both give the same text (tests/unit compares them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import utils

from patrd.observe.counters import InstanceSample

# (name, help, "gauge" or "counter", value or None for no sample)
Family = tuple[str, str, str, Callable[[InstanceSample], float | int | None]]

SAMPLE_FAMILIES: tuple[Family, ...] = (
    (
        "patrd_instance_cpu_seconds",
        "CPU time used (cgroup)",
        "counter",
        lambda s: s.totals.cpu_ns / 1e9,
    ),
    (
        "patrd_instance_cpu_cores",
        "CPU cores used over the last interval",
        "gauge",
        lambda s: s.cpu_cores,
    ),
    (
        "patrd_instance_cpu_usage_ratio",
        "CPU used / CPU allocated, last interval (1 = all)",
        "gauge",
        lambda s: s.cpu_fraction,
    ),
    (
        "patrd_instance_cpu_allocation_cores",
        "CPU cores the instance may use",
        "gauge",
        lambda s: s.cpu_allocation,
    ),
    (
        "patrd_instance_memory_working_set_bytes",
        "memory used minus inactive cache",
        "gauge",
        lambda s: s.memory_bytes,
    ),
    ("patrd_instance_memory_limit_bytes", "memory limit", "gauge", lambda s: s.memory_limit),
    (
        "patrd_instance_network_receive_bytes",
        "bytes received",
        "counter",
        lambda s: s.totals.rx_bytes,
    ),
    ("patrd_instance_network_transmit_bytes", "bytes sent", "counter", lambda s: s.totals.tx_bytes),
    (
        "patrd_instance_blkio_read_bytes",
        "bytes read from block devices",
        "counter",
        lambda s: s.totals.read_bytes,
    ),
    (
        "patrd_instance_blkio_write_bytes",
        "bytes written to block devices",
        "counter",
        lambda s: s.totals.write_bytes,
    ),
)

# (name, help) of the probe families; their values: see probe_rows().
PROBE_FAMILIES: tuple[tuple[str, str], ...] = (
    ("patrd_instance_ready", "1 when in the proxy pool"),
    (
        "patrd_instance_probe_phase",
        "1 for the instance's probe phase (starting, ready, failed, unhealthy)",
    ),
    ("patrd_instance_liveness_failures", "consecutive liveness probe failures"),
    (
        "patrd_instance_restarts",
        "restarts of this slot in its current failure streak (reset once stable)",
    ),
)

# How prometheus_client writes a value (1.0, 4e+07, +Inf); it is untyped there.
number: Callable[[float], str] = utils.floatToGoString

Key = tuple[str, str, str]  # (deployment, instance, container id[:12])


def escape(value: str) -> str:
    """A label value as the text format wants it (as prometheus_client escapes it)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def header(name: str, doc: str, kind: str) -> str:
    shown = f"{name}_total" if kind == "counter" else name
    doc = doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {shown} {doc}\n# TYPE {shown} {kind}\n"


class LabelCache:
    """``container="…",deployment="…",instance="…"`` per instance, kept while it is seen."""

    def __init__(self) -> None:
        self._text: dict[Key, str] = {}
        self._seen: set[Key] = set()

    def __call__(self, key: Key) -> str:
        self._seen.add(key)
        text = self._text.get(key)
        if text is None:
            deployment, instance, container = key
            text = (
                f'container="{escape(container)}",deployment="{escape(deployment)}",'
                f'instance="{escape(instance)}"'
            )
            self._text[key] = text
        return text

    def prune(self) -> None:
        """Forget the instances not asked for since the last prune (call once per scrape)."""
        if len(self._text) != len(self._seen):
            self._text = {k: v for k, v in self._text.items() if k in self._seen}
        self._seen = set()

    def __len__(self) -> int:
        return len(self._text)


def sample_key(s: InstanceSample) -> Key:
    return (s.deployment, s.instance, s.container_id[:12])


def sample_families(samples: Sequence[InstanceSample], labels: LabelCache) -> str:
    keys = [labels(sample_key(s)) for s in samples]
    out: list[str] = []
    for name, doc, kind, value_of in SAMPLE_FAMILIES:
        out.append(header(name, doc, kind))
        shown = f"{name}_total{{" if kind == "counter" else f"{name}{{"
        for s, key in zip(samples, keys, strict=True):
            value = value_of(s)
            if value is not None:
                out.append(f"{shown}{key}}} {number(value)}\n")
    return "".join(out)


ProbeRow = tuple[Key, bool, str, int, int]  # key, ready, probe phase, liveness failures, restarts


def probe_rows(records: Iterable[Any], instances: Callable[[str], list[Any]]) -> list[ProbeRow]:
    """The probe families' rows: per deployment record, its instance views."""
    return [
        (
            (r.name, view.name, view.container_id[:12]),
            bool(view.ready),
            str(view.probe or ""),
            int(view.liveness_failures),
            int(view.restarts),
        )
        for r in records
        for view in instances(r.id)
    ]


def probe_families(rows: Sequence[ProbeRow], labels: LabelCache) -> str:
    pairs = list(zip(rows, [labels(row[0]) for row in rows], strict=True))
    (ready, ready_doc), (phase, phase_doc), (live, live_doc), (restarts, restarts_doc) = (
        PROBE_FAMILIES
    )
    out = [header(ready, ready_doc, "gauge")]
    out += [f"{ready}{{{k}}} {'1.0' if row[1] else '0.0'}\n" for row, k in pairs]
    out.append(header(phase, phase_doc, "gauge"))
    out += [f'{phase}{{{k},phase="{escape(row[2])}"}} 1.0\n' for row, k in pairs if row[2]]
    out.append(header(live, live_doc, "gauge"))
    out += [f"{live}{{{k}}} {number(row[3])}\n" for row, k in pairs]
    out.append(header(restarts, restarts_doc, "gauge"))
    out += [f"{restarts}{{{k}}} {number(row[4])}\n" for row, k in pairs]
    return "".join(out)
