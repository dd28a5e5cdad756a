"""CPU autoscaler: the Kubernetes HPA rule on cgroup CPU usage, per deployment.

Two parts, as everywhere in patrd:

* :func:`decide` is pure. Inputs: the policy (min, max, target, windows,
  tolerance), the current instance count, one observation (the average CPU
  usage, as a fraction of the allocation, of the ready instances) and the
  state it returned last time. Output: a :class:`Decision` and the new state.
  The clock is an input.
* :class:`Autoscaler` is the thin task: every ``autoscale.interval_s`` it
  reads the controller's instances and the sampler's latest usage, calls
  :func:`decide`, and writes a changed count to the store (one event with the
  inputs; no new revision) and wakes the deployment's worker, whose planner
  then creates (startup-probe path) or drains and removes instances.

The rule (HPA, ``desired = ceil(current * usage / target)``):

* within ``tolerance`` of the target (|usage/target - 1| <= 0.1) the
  recommendation is the current count: this band applies to scale-down only;
* **up** whenever usage stayed above the target at every observation of the
  last ``window_s`` seconds (the seed: "average CPU above the target for the
  window scales up"), even inside the tolerance band: to
  ``max(current + 1, ceil(current * mean / target))`` from the window's
  average, capped at ``scale.max``. After a change the window starts again;
* **down** to the *highest* recommendation of the last ``stabilization_s``
  seconds (never below ``scale.min``), so a short dip never removes instances;
* instances that are not ready yet (starting) or have no CPU sample yet are
  left out of the average; with no usable instance there is no decision.

The state lives in memory: a restarted daemon observes a full window again
before it changes anything. Only deployments with ``scale.max > scale.min``
and no volumes are autoscaled.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from patrd.model import checks as c
from patrd.model.deployment import DeploymentRecord, Intent
from patrd.model.errors import ConfigError, StoreError
from patrd.model.replicas import effective_replicas, eligible
from patrd.model.sections import setting
from patrd.model.views import InstanceView

_EPSILON = 1e-9


def _tolerance(value: Any, key: str, base_dir: Path) -> float:
    tolerance = float(c.off_or_number()(value, key, base_dir))
    if tolerance >= 1:
        raise ConfigError(key, "must be below 1 (0.1 is 10%)")
    return tolerance


@dataclass(frozen=True)
class AutoscaleConfig:
    """``[autoscale]``: the CPU autoscaler of this module."""

    enabled: bool = setting(True, c.boolean(), "scale deployments that set autoscale")
    interval_s: float = setting(15.0, c.positive(), "how often usage is sampled")
    window_s: float = setting(300.0, c.positive(), "usage above target this long → scale up")
    stabilization_s: float = setting(
        300.0, c.positive(), "scale down to the highest recommendation of this window"
    )
    tolerance: float = setting(0.1, _tolerance, "no change within this fraction of the target")


@dataclass(frozen=True, slots=True)
class Policy:
    min: int
    max: int
    target: float  # fraction of the allocation, e.g. 0.8
    window_s: float = 300.0
    stabilization_s: float = 300.0
    tolerance: float = 0.1


@dataclass(frozen=True, slots=True)
class Observation:
    at: float  # monotonic seconds
    usage: float | None  # mean CPU usage / allocation of the counted instances; None: no data
    counted: int = 0  # instances in the mean (ready, with a sample)


@dataclass(frozen=True, slots=True)
class ScaleState:
    """What :func:`decide` remembers between observations (bounded by the windows)."""

    tracking_since: float | None = None  # first observation with data
    above: tuple[tuple[float, float], ...] = ()  # (at, usage) of the current run above target
    recommendations: tuple[tuple[float, int], ...] = ()  # (at, count) within stabilization_s


class Direction:
    UP = "up"
    DOWN = "down"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class Decision:
    current: int
    replicas: int
    direction: str  # Direction.*
    reason: str
    usage: float | None
    recommendation: int | None = None

    @property
    def changed(self) -> bool:
        return self.replicas != self.current


def recommend(policy: Policy, current: int, usage: float) -> int:
    """``ceil(current * usage / target)`` outside the tolerance band, clamped to [min, max]."""
    ratio = usage / policy.target
    within = abs(ratio - 1.0) <= policy.tolerance
    raw = current if within else math.ceil(current * ratio - _EPSILON)
    return min(max(raw, policy.min), policy.max)


def scale_up_count(policy: Policy, current: int, mean: float) -> int:
    """The seed's rule: a window's mean above the target scales *up*, tolerance or not.

    ``ceil(current * mean / target)``, at least one more than now, at most
    ``scale.max``. The tolerance band only keeps :func:`recommend` (and so
    scale-down) from flapping around the target; between the target and
    target+tolerance it would otherwise never scale up (81-87 % at 80 %).
    """
    if mean <= policy.target:
        return current
    raw = math.ceil(current * mean / policy.target - _EPSILON)
    return min(max(raw, current + 1, policy.min), policy.max)


def decide(
    policy: Policy, current: int, obs: Observation, state: ScaleState
) -> tuple[Decision, ScaleState]:
    current = min(max(current, policy.min), policy.max)
    now = obs.at
    if obs.usage is None:
        hold = Decision(current, current, Direction.HOLD, "no ready instance with a sample", None)
        # Nothing seen: a run above target is broken; recommendations age out.
        return hold, ScaleState(
            tracking_since=state.tracking_since,
            above=(),
            recommendations=_recent(state.recommendations, now, policy.stabilization_s),
        )
    usage = obs.usage
    tracking_since = state.tracking_since if state.tracking_since is not None else now
    recommendation = recommend(policy, current, usage)
    above: tuple[tuple[float, float], ...] = ()
    if usage > policy.target:
        above = (*state.above, (now, usage))
    recommendations = _recent(
        (*state.recommendations, (now, recommendation)), now, policy.stabilization_s
    )
    pct = f"{usage:.0%}"
    target = f"{policy.target:.0%}"

    # Up: above target at every observation of the whole window.
    if above and now - above[0][0] >= policy.window_s - _EPSILON:
        in_window = [u for at, u in above if at >= now - policy.window_s - _EPSILON]
        mean = sum(in_window) / len(in_window)
        desired = scale_up_count(policy, current, mean)
        if desired > current:
            reason = (
                f"cpu {mean:.0%} of allocation (mean of {len(in_window)} observations over "
                f"{policy.window_s:g}s, {obs.counted} ready instances) above target {target}: "
                f"ceil({current} * {mean:.3f}/{policy.target:.2f}) = "
                f"{math.ceil(current * mean / policy.target - _EPSILON)}"
                + (f", capped at max {policy.max}" if desired == policy.max else "")
            )
            decision = Decision(current, desired, Direction.UP, reason, usage, desired)
            return decision, ScaleState(tracking_since, (), recommendations)
        above = tuple((at, u) for at, u in above if at >= now - policy.window_s - _EPSILON)

    # Down: the highest recommendation of a fully observed stabilization window.
    if now - tracking_since >= policy.stabilization_s - _EPSILON:
        highest = max(r for _, r in recommendations)
        if highest < current:
            reason = (
                f"highest recommendation of the last {policy.stabilization_s:g}s is {highest} "
                f"(cpu now {pct} of allocation, target {target}, {obs.counted} ready instances)"
            )
            decision = Decision(current, highest, Direction.DOWN, reason, usage, recommendation)
            return decision, ScaleState(tracking_since, (), recommendations)

    reason = f"cpu {pct} of allocation, target {target}"
    hold = Decision(current, current, Direction.HOLD, reason, usage, recommendation)
    return hold, ScaleState(tracking_since, above, recommendations)


def _recent(
    items: tuple[tuple[float, int], ...], now: float, span: float
) -> tuple[tuple[float, int], ...]:
    return tuple((at, v) for at, v in items if at >= now - span - _EPSILON)


# --- the task ------------------------------------------------------------------


class AutoscaleSettings(Protocol):
    """``[autoscale]`` (settings/config.py ``AutoscaleConfig``) as the autoscaler reads it."""

    @property
    def interval_s(self) -> float: ...

    @property
    def window_s(self) -> float: ...

    @property
    def stabilization_s(self) -> float: ...

    @property
    def tolerance(self) -> float: ...


class UsageSource(Protocol):
    """The sampler, as the autoscaler sees it."""

    def cpu_fraction(self, container_id: str) -> float | None: ...


class InstanceSource(Protocol):
    def instances(self, deployment_id: str) -> list[InstanceView]: ...

    def wake(self, deployment_id: str | None = None) -> None: ...


class ReplicaStore(Protocol):
    async def list_deployments(self) -> list[DeploymentRecord]: ...

    async def set_replicas(
        self, deployment_id: str, replicas: int | None, message: str
    ) -> bool: ...


@dataclass
class AutoscaleStats:
    """Read by the Prometheus collector."""

    decisions: dict[tuple[str, str], int] = field(default_factory=dict)  # (deployment, dir)
    last: dict[str, Decision] = field(default_factory=dict)  # deployment name → last decision


class Autoscaler:
    def __init__(
        self,
        store: ReplicaStore,
        instances: InstanceSource,
        usage: UsageSource,
        config: AutoscaleSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._instances = instances
        self._usage = usage
        self._config = config
        self._clock = clock
        self._states: dict[str, ScaleState] = {}
        self.stats = AutoscaleStats()
        self._log = structlog.get_logger("patrd.control.autoscale")

    async def run(self) -> None:
        while True:
            with contextlib.suppress(StoreError):
                await self.tick()
            await asyncio.sleep(self._config.interval_s)

    async def tick(self) -> None:
        records = await self._store.list_deployments()
        seen = set()
        for record in records:
            if record.intent is not Intent.RUN or not eligible(record.spec):
                continue
            seen.add(record.id)
            await self._one(record)
        for dep_id in [d for d in self._states if d not in seen]:
            del self._states[dep_id]
        names = {r.name for r in records}
        for name in [n for n in self.stats.last if n not in names]:
            del self.stats.last[name]

    async def _one(self, record: DeploymentRecord) -> None:
        spec = record.spec
        usages = []
        for view in self._instances.instances(record.id):
            if not view.ready or view.state != "running":
                continue  # starting (or leaving): not part of the average
            fraction = self._usage.cpu_fraction(view.container_id)
            if fraction is not None:
                usages.append(fraction)
        obs = Observation(
            at=self._clock(),
            usage=sum(usages) / len(usages) if usages else None,
            counted=len(usages),
        )
        policy = Policy(
            min=spec.scale.min,
            max=spec.scale.max,
            target=spec.scale.target_cpu / 100.0,
            window_s=self._config.window_s,
            stabilization_s=self._config.stabilization_s,
            tolerance=self._config.tolerance,
        )
        current = effective_replicas(record)
        decision, state = decide(policy, current, obs, self._states.get(record.id, ScaleState()))
        self._states[record.id] = state
        self.stats.last[record.name] = decision
        if not decision.changed:
            return
        message = f"scale {decision.direction} {decision.current} → {decision.replicas}: "
        message += decision.reason
        if await self._store.set_replicas(record.id, decision.replicas, message):
            key = (record.name, decision.direction)
            self.stats.decisions[key] = self.stats.decisions.get(key, 0) + 1
            self._log.info(
                "autoscale",
                deployment=record.name,
                direction=decision.direction,
                current=decision.current,
                replicas=decision.replicas,
                usage=round(decision.usage or 0.0, 3),
            )
            self._instances.wake(record.id)
