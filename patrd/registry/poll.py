"""Deploy on push for registries patrd does not run: poll each tag's digest.

Off unless ``[registry] poll_interval_s`` > 0. Each pass asks Docker for the
registry's current manifest digest of ``image:tag`` (``GET /distribution``,
no pull) and compares it with the repo digests of the image the deployment
runs; a new digest rolls the deployment exactly like a push notification.
Errors back off per deployment (doubling, up to an hour); a rate-limit answer
("toomanyrequests") backs off a full hour at once. A deployment is polled once
it has rolled out (its recorded image is the reference), so a deployment
created without deploying is started by ``start``, not by polling.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from patrd.engine.protocol import Engine
from patrd.kit.backoff import Backoff, BackoffState
from patrd.model.deployment import DeploymentRecord, Intent
from patrd.model.errors import PatrdError
from patrd.model.releases import Origin
from patrd.model.spec import LOCAL_REGISTRY, DeploymentSpec
from patrd.state.store import Store
from patrd.state.vault import Vault

MAX_BACKOFF_S = 3600.0


@dataclass
class _Backoff:
    state: BackoffState
    next_at: float = 0.0


@dataclass
class TagPoller:
    store: Store
    engine: Engine
    wake: Callable[[str], None]
    interval_s: float
    local_registry: str
    vault: Vault | None = None
    _backoff: dict[str, _Backoff] = field(default_factory=dict)

    async def run(self) -> None:
        log = structlog.get_logger("patrd.registry.poll")
        while True:
            for record in await self.store.list_deployments():
                if not self._polled(record):
                    continue
                state = self._backoff.get(record.id)
                if state is None:
                    state = self._backoff[record.id] = _Backoff(BackoffState(self._policy()))
                if state.next_at > time.monotonic():
                    continue
                try:
                    await self.check(record)
                    state.state.succeeded()
                except PatrdError as exc:
                    delay = state.state.failed(time.monotonic())
                    if "toomanyrequests" in str(exc).lower():
                        delay = MAX_BACKOFF_S
                    state.next_at = time.monotonic() + delay
                    log.warning(
                        "poll_failed", deployment=record.name, error=str(exc), retry_in=delay
                    )
            await asyncio.sleep(self.interval_s)

    def _policy(self) -> Backoff:
        """After the n-th failure in a row: interval * 2^n, at most an hour."""
        return Backoff(initial_s=2 * self.interval_s, cap_s=MAX_BACKOFF_S)

    def _polled(self, record: DeploymentRecord) -> bool:
        spec = record.spec
        # Only once deployed: the first rollout resolves the tag itself, and
        # its recorded image is what later digests are compared with.
        return (
            spec.deploy_on_push
            and spec.registry not in (LOCAL_REGISTRY, self.local_registry)
            and record.intent in (Intent.RUN, Intent.STOP)  # stopped: kept for the next start
            and record.stable_revision is not None
        )

    async def check(self, record: DeploymentRecord) -> bool:
        """Roll ``record`` if its tag points at a new digest; True when it did."""
        spec = record.spec
        ref = spec.image_ref_via(self.local_registry)
        repo = ref[: -len(spec.tag) - 1]
        auth = None
        if spec.registry_auth is not None and self.vault is not None:
            auth = await self.vault.registry_auth(spec, ref.split("/", 1)[0])
        digest = await self.engine.remote_digest(ref, auth)
        pinned = f"{repo}@{digest}"
        current, _, current_digest = await self.store.revision_pin(record.id, record.revision)
        if pinned in (record.pinned_image, current, current_digest):
            return False
        assert record.stable_revision is not None
        running = await self.store.revision_image(record.id, record.stable_revision)
        if running is None:
            return False
        known = await self.engine.repo_digests(running)
        if any(d.endswith(f"@{digest}") for d in known):
            return False

        def matches(candidate: DeploymentSpec) -> bool:
            return candidate == spec

        changed = await self.store.deploy_pushed(matches, pinned, time.time(), Origin.POLL)
        for rolled in changed:
            self.wake(rolled.id)
        return bool(changed)
