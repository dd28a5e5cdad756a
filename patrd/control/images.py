"""Which image a deployment's revision runs, brought onto the node if need be."""

from __future__ import annotations

import time

from patrd.control.decisions import image_source, pull_block_delay
from patrd.control.instances import registry_auth_for
from patrd.control.reconcile import Blocked
from patrd.control.worker_state import WorkerContext
from patrd.model.deployment import DeploymentRecord
from patrd.model.errors import ImageNotFound, PullRefused
from patrd.model.instances import ImageResult, ProgressCallback, RegistryAuth, is_pinned_tag
from patrd.model.releases import pin_from_inspect
from patrd.model.spec import DeploymentSpec


class ImageResolver:
    def __init__(self, ctx: WorkerContext) -> None:
        self._ctx = ctx

    async def resolve(self, record: DeploymentRecord) -> str | None:
        """The image id this revision runs (docs/design.md, "Pinned releases").

        A revision that has a pin (a push, a revert, a redeploy, or one carried
        from the revision before it) runs exactly that: the image id when it
        is on the node, else a pull by digest. Never the tag again. Only an
        unresolved revision (create, image or tag changed) resolves the tag,
        by the pull policy (``latest``: pulled), and records the pin. Any pull
        is refused while the disk guard says the disk is low. None: blocked
        for now (the plan waits, the status says why).
        """
        ctx, state = self._ctx, self._ctx.state
        cached = state.image
        if cached is not None and cached[0] == record.revision:
            return cached[1]
        spec: DeploymentSpec = record.spec
        ref = spec.image_ref_via(ctx.options.local_registry)
        pinned, image_id, digest_ref = await ctx.store.revision_pin(ctx.id, record.revision)

        async def progress(line: str) -> None:
            await ctx.store.add_event(ctx.id, "pull", line, record.revision)

        auth = await registry_auth_for(spec, ref, ctx.options, ctx.vault)
        guard = ctx.options.pull_guard
        refusal = ((await guard()) if guard is not None else None) or ""
        source = image_source(ref, pinned, image_id, digest_ref)
        try:
            if source.by_tag:
                result = await ctx.engine.ensure_image(
                    ref,
                    always_pull=not is_pinned_tag(spec.tag),
                    progress=progress,
                    auth=auth,
                    refuse_pull=refusal,
                )
            else:
                result = await self._ensure_pinned(
                    source.local, source.pull_ref, progress, auth, refusal
                )
        except (PullRefused, ImageNotFound) as exc:
            refused = isinstance(exc, PullRefused)
            state.block_failures += 1
            delay = pull_block_delay(state.block_failures, refused=refused)
            what = f"image {source.shown}" if refused else f"image {source.shown} unavailable"
            state.blocked = Blocked(reason=f"{what}: {exc}", until=time.monotonic() + delay)
            await ctx.store.add_event(
                ctx.id,
                "pull_refused" if refused else "pull_failed",
                f"{exc}; retry in {delay:.0f}s",
                record.revision,
            )
            return None
        state.blocked = None
        state.block_failures = 0
        if result.warning:
            await ctx.store.add_event(ctx.id, "pull_warning", result.warning, record.revision)
        elif result.pulled:
            await ctx.store.add_event(ctx.id, "pulled", f"pulled {source.shown}", record.revision)
        if result.fresh:  # patrd brought it: patrd may remove it later (patrd/engine/imagegc.py)
            await ctx.store.record_pull(result.image_id, source.shown, ctx.id, record.revision)
        if image_id is None:
            if digest_ref is None:
                repo = ref[: -len(spec.tag) - 1]
                pin = pin_from_inspect(
                    result.image_id, await ctx.engine.repo_digests(result.image_id), repo
                )
                digest_ref = pin.ref if pin.digest is not None else None
            await ctx.store.record_image(ctx.id, record.revision, result.image_id, digest_ref)
        state.image = (record.revision, result.image_id)
        return result.image_id

    async def _ensure_pinned(
        self,
        local: str | None,
        pull_ref: str | None,
        progress: ProgressCallback,
        auth: RegistryAuth | None,
        refusal: str,
    ) -> ImageResult:
        """The pinned image: by id when the node has it, else pulled by its digest."""
        engine = self._ctx.engine
        if local is not None:
            try:
                return await engine.ensure_image(local, always_pull=False, auth=auth)
            except ImageNotFound:
                if pull_ref is None:
                    raise ImageNotFound(
                        f"image {local[:19]} is no longer on the node and has no registry "
                        "digest to pull it by"
                    ) from None
        assert pull_ref is not None
        return await engine.ensure_image(
            pull_ref, always_pull=False, progress=progress, auth=auth, refuse_pull=refusal
        )
