"""What this node can never run, and when a change over-commits it. Pure.

Two different questions, kept apart:

* ``refuse_impossible``: one instance asks for more CPUs or memory than the
  whole node has. Docker refuses such a container at create ("Range of CPUs
  is from 0.01 to 2.00"), so the deployment would sit in ``deploying``
  forever: the API answers 422 naming the field and the node's figure.
* ``overcommit_warning``: limits are ceilings, not reservations, so asking
  for more in total than the node has is allowed; the user is told, in
  their words, only when *this* change takes the node from fitting to not
  fitting, and only what actually runs counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from patrd.model.errors import SpecError
from patrd.observe.cost import Node


@dataclass(frozen=True, slots=True)
class Load:
    """CPUs and memory asked for by running instances."""

    cpu: float = 0.0
    memory_mb: int = 0

    def __add__(self, other: Load) -> Load:
        return Load(round(self.cpu + other.cpu, 3), self.memory_mb + other.memory_mb)

    def fits(self, node: Node) -> bool:
        cpu_ok = self.cpu <= node.cpus + 1e-9
        memory_ok = node.memory_mb <= 0 or self.memory_mb <= node.memory_mb
        return cpu_ok and memory_ok


def refuse_impossible(cpu: float, memory_mb: int, node: Node) -> None:
    """SpecError (422) when one instance can never start on ``node``."""
    if cpu > node.cpus + 1e-9:
        raise SpecError(
            "resources.cpu",
            f"this node has {node.cpus:g} CPUs; one instance can use at most {node.cpus:g} "
            f"(asked for {cpu:g})",
        )
    if node.memory_mb > 0 and memory_mb > node.memory_mb:
        raise SpecError(
            "resources.memory_mb",
            f"this node has {node.memory_mb} MB of memory; one instance can use at most "
            f"{node.memory_mb} MB (asked for {memory_mb} MB)",
        )


def load_of(cpu: float, memory_mb: int, instances: int) -> Load:
    return Load(round(cpu * instances, 3), memory_mb * instances)


def total(loads: Iterable[Load]) -> Load:
    result = Load()
    for load in loads:
        result = result + load
    return result


def overcommit_warning(before: Load, after: Load, node: Node) -> str | None:
    """A sentence when the change (``before`` → ``after``, node-wide) over-commits the node.

    ``None`` when the node still fits, or already did not fit before the change
    (that was said then; repeating it on every command teaches users to ignore it).
    """
    if after.fits(node) or not before.fits(node):
        return None
    parts = []
    if after.cpu > node.cpus + 1e-9:
        parts.append(f"{after.cpu:g} of {node.cpus:g} CPUs")
    if node.memory_mb > 0 and after.memory_mb > node.memory_mb:
        parts.append(f"{after.memory_mb} of {node.memory_mb} MB of memory")
    return (
        "with this change, running deployments may use "
        + " and ".join(parts)
        + " on this node; instances may slow down or be killed when they all get busy"
    )
