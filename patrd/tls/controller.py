"""The certificate controller: every routed hostname gets a certificate, and keeps one.

Level-triggered like the deployment controller: a change of the routing
table's hostnames or a timer wakes it; each pass looks at every name and
asks :func:`patrd.tls.renewal.decide` what to do. Issuing runs as a task
per name (at most ``concurrency`` at once); the blocking parts (ACME, key
generation, file writes) run in threads. Per-name bookkeeping (failures,
backoff, order times) is persisted in the store, so neither a restart nor a
crash loop re-orders a certificate patrd already has or exceeds the hourly
order cap.

Which issuer: ACME when it is enabled and the name is a public DNS name
(not under ``localhost``); the local CA otherwise. A local certificate for
a name that wants ACME is served until the ACME one arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import structlog

from patrd.model.deployment import Intent
from patrd.model.errors import NotFound, StoreError
from patrd.state.store import Store
from patrd.tls import renewal, resolve
from patrd.tls.acme_client import AcmeClient, AcmeFailure
from patrd.tls.certstore import CertInfo, CertStore, CertStoreError, generate_key
from patrd.tls.localca import LOCAL_CA_CN_PREFIX, LocalCA
from patrd.tls.renewal import CertState, Decision, Held, Policy, Verdict

ALERT_LOG_EVERY_S = 3600.0
MIN_SLEEP_S = 0.05
RETIRE_RECHECK_S = 1.0  # a deleted deployment's hostname: look again until its row is gone
LOCAL_POLICY = Policy(backoff_initial_s=30.0, backoff_max_s=3600.0)

TlsStatus = Literal["pending", "issued", "failed"]


@dataclass(frozen=True, slots=True)
class TlsOptions:
    policy: Policy = field(default_factory=Policy)  # ACME
    local_policy: Policy = field(default_factory=lambda: LOCAL_POLICY)
    check_interval_s: float = 3600.0
    resolve_check: bool = True
    resolver: tuple[str, int] | None = None
    public_addresses: frozenset[str] = frozenset()
    concurrency: int = 3


@dataclass(frozen=True, slots=True)
class CertStatus:
    """One name's certificate as the API shows it (no key material)."""

    domain: str
    status: TlsStatus
    issuer: Literal["acme", "local", ""]
    serial: str  # hex
    not_before: float | None
    not_after: float | None
    renew_at: float | None
    error: str
    failures: int
    next_attempt_at: float | None
    attempts: int
    orders_last_hour: int
    orders_total: int
    renewals: int
    alert: bool


class TlsController:
    def __init__(
        self,
        store: Store,
        certs: CertStore,
        local_ca: LocalCA,
        acme: AcmeClient | None,
        options: TlsOptions,
    ) -> None:
        self._store = store
        self._certs = certs
        self._local = local_ca
        self._acme = acme
        self._options = options
        self._hosts: frozenset[str] = frozenset()
        self._owners: dict[str, str] = {}
        self._leaving: dict[str, str] = {}  # hostname no longer routed → its last deployment
        self._states: dict[str, CertState] = {}
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._alerted: dict[str, float] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._local_issuer = ""
        self._wake = asyncio.Event()
        self._sem = asyncio.Semaphore(options.concurrency)
        self._random = random.Random()  # noqa: S311 - jitter, not secrets
        self._log = structlog.get_logger("patrd.tls")

    # --- inputs ------------------------------------------------------------------

    async def load(self) -> None:
        """Certificates from disk and bookkeeping from the store (before serving)."""
        await asyncio.to_thread(self._local.ensure)
        self._local_issuer = self._local.issuer
        loaded = await asyncio.to_thread(self._certs.load_all)
        self._states = {
            name: CertState.from_json(data)
            for name, data in (await self._store.cert_states()).items()
        }
        self._log.info("tls.loaded", certificates=len(loaded), local_ca=str(self._local.cert_path))

    def set_hosts(self, hosts: Iterable[str], owners: Mapping[str, str] | None = None) -> None:
        """The hostnames the proxy routes now; wakes the controller when they change.

        ``owners``: hostname → the deployment it serves, whose event history
        gets the certificate's news (issued, renewed, failed, expiring).
        """
        new = frozenset(hosts)
        for gone in self._hosts - new:
            owner = self._owners.get(gone)
            if owner is not None:
                self._leaving[gone] = owner
        if owners is not None:
            self._owners = dict(owners)
        if new != self._hosts:
            self._hosts = new
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    # --- reads (API) -------------------------------------------------------------

    def status(self, domain: str, now: float | None = None) -> CertStatus:
        now = time.time() if now is None else now
        info = self._certs.get(domain)
        state = self._states.get(domain, CertState())
        acme = self.wants_acme(domain)
        held = self._held(info, acme)
        policy = self._policy(acme)
        valid = held is not None and held.acceptable and now < held.not_after
        status: TlsStatus = "issued" if valid else ("failed" if state.failures else "pending")
        return CertStatus(
            domain=domain,
            status=status,
            issuer=("local" if info.issuer == self._local_issuer else "acme") if info else "",
            serial=f"{info.serial:x}" if info else "",
            not_before=info.not_before if info else None,
            not_after=info.not_after if info else None,
            renew_at=renewal.renew_at(held, state, policy) if held else None,
            error=state.last_error,
            failures=state.failures,
            next_attempt_at=state.next_attempt_at or None,
            attempts=state.attempts,
            orders_last_hour=len(renewal.recent_orders(state.orders, now)),
            orders_total=state.orders_total,
            renewals=state.renewals,
            alert=renewal.alerting(held, state, now, policy),
        )

    def statuses(self) -> list[CertStatus]:
        now = time.time()
        names = self._hosts | set(self._certs.infos()) | set(self._states)
        return [self.status(name, now) for name in sorted(names)]

    def wants_acme(self, name: str) -> bool:
        return self._acme is not None and acme_eligible(name)

    # --- the loop ----------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                await self._retire_gone()
                next_at = self._pass(time.time())
                delay = min(self._options.check_interval_s, max(MIN_SLEEP_S, next_at - time.time()))
                if self._leaving:
                    delay = min(delay, RETIRE_RECHECK_S)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
        finally:
            tasks = list(self._inflight.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _pass(self, now: float) -> float:
        next_at = now + self._options.check_interval_s
        for name in sorted(self._hosts):
            if name in self._inflight:
                continue
            acme = self.wants_acme(name)
            held = self._held(self._certs.get(name), acme)
            state = self._states.get(name, CertState())
            policy = self._policy(acme)
            decision = renewal.decide(held, state, now, policy, capped=acme)
            if decision.verdict is Verdict.ISSUE:
                self._start(name, acme, held, decision)
                continue
            if (
                decision.verdict is Verdict.KEEP
                and acme
                and held is not None
                and state.ari_fetch_at <= now
            ):
                self._start_ari(name, held)
            next_at = min(next_at, decision.at)
            if renewal.alerting(held, state, now, policy):
                self._alert(name, held, state, now)
        return next_at

    async def _retire_gone(self) -> None:
        """Certificates of hostnames whose deployment was deleted: stop serving, listing and
        renewing them, and delete the file and the bookkeeping.

        A hostname that merely stopped being routed while its deployment still exists
        (stopped, port removed) keeps its certificate: it may come back.
        """
        leaving, self._leaving = self._leaving, {}
        for name, owner in leaving.items():
            if name in self._hosts or name in self._inflight:
                continue
            try:
                record = await self._store.get_deployment(owner)
            except NotFound:
                record = None
            except StoreError as exc:
                self._log.warning("tls.retire_check_failed", name=name, error=str(exc))
                self._leaving[name] = owner  # next pass
                continue
            if record is not None:
                if record.intent is Intent.DELETE:
                    self._leaving[name] = owner  # its route goes before its row: look again
                continue
            try:
                self._certs.remove(name)  # on the loop: its listeners expect it
                await asyncio.to_thread(self._certs.delete_file, name)
                await self._store.delete_cert_state(name)
            except (OSError, StoreError) as exc:
                self._log.warning("tls.retire_failed", name=name, error=str(exc))
                continue
            self._states.pop(name, None)
            self._alerted.pop(name, None)
            self._log.info("tls.retired", name=name, deployment=owner)

    def _start(self, name: str, acme: bool, held: Held | None, decision: Decision) -> None:
        self._log.info(
            "tls.issue",
            name=name,
            issuer="acme" if acme else "local",
            reason=decision.reason,
        )
        task = asyncio.create_task(self._issue(name, acme, renewing=held is not None))
        self._inflight[name] = task

    async def _issue(self, name: str, acme: bool, renewing: bool) -> None:
        try:
            async with self._sem:
                await self._attempt(name, acme, renewing)
        finally:
            self._inflight.pop(name, None)
            self._wake.set()

    async def _attempt(self, name: str, acme: bool, renewing: bool) -> None:
        started = time.time()
        state = self._states.get(name, CertState())
        await self._save(name, replace(state, attempts=state.attempts + 1, last_attempt_at=started))
        policy = self._policy(acme)
        try:
            key_pem = await asyncio.to_thread(generate_key)
            if acme:
                chain = await self._order(name, key_pem)
            else:
                chain = await asyncio.to_thread(self._local.issue, name, key_pem)
            info, ctx = await asyncio.to_thread(self._certs.write, name, key_pem, chain)
        except (AcmeFailure, CertStoreError, OSError) as exc:
            message = exc.message if isinstance(exc, AcmeFailure) else str(exc)
            retry_after = exc.retry_after if isinstance(exc, AcmeFailure) else None
            now = time.time()
            failed = renewal.failed(
                self._states.get(name, CertState()),
                now,
                message,
                policy,
                self._random.random(),
                retry_after,
            )
            await self._save(name, failed)
            retry_in = failed.next_attempt_at - now
            self._log.warning(
                "tls.issue_failed",
                name=name,
                error=message,
                failures=failed.failures,
                retry_in_s=round(retry_in, 1),
            )
            await self._event(
                name,
                f"certificate for {name} failed ({failed.failures}x): {message}; "
                f"next attempt in {retry_in:.0f}s",
            )
            return
        self._certs.install(info, ctx)
        done = renewal.succeeded(self._states.get(name, CertState()), time.time(), renewing)
        await self._save(name, done)
        self._log.info(
            "tls.renewed" if renewing else "tls.issued",
            name=name,
            serial=f"{info.serial:x}",
            not_after=int(info.not_after),
            took_s=round(time.time() - started, 2),
        )
        expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(info.not_after))
        await self._event(
            name,
            f"certificate for {name} {'renewed' if renewing else 'issued'} "
            f"({'ACME' if acme else 'local CA'}), valid until {expires}",
        )

    async def _order(self, name: str, key_pem: bytes) -> bytes:
        assert self._acme is not None
        if self._options.resolve_check:
            ok, why = await resolve.check(
                name, self._options.resolver, self._options.public_addresses
            )
            if not ok:
                raise AcmeFailure(f"not ordered: {why}")
        loop = asyncio.get_running_loop()

        def on_order() -> None:  # in the ACME thread: persist before going on
            asyncio.run_coroutine_threadsafe(self._ordered(name), loop).result()

        return await asyncio.to_thread(self._acme.issue, name, key_pem, on_order)

    async def _ordered(self, name: str) -> None:
        now = time.time()
        state = self._states.get(name, CertState())
        orders = (*renewal.recent_orders(state.orders, now), now)
        await self._save(name, replace(state, orders=orders, orders_total=state.orders_total + 1))

    def _start_ari(self, name: str, held: Held) -> None:
        info = self._certs.get(name)
        if info is None:
            return
        task = asyncio.create_task(self._ari(name, info, held))
        self._inflight[name] = task

    async def _ari(self, name: str, info: CertInfo, held: Held) -> None:
        """Ask the CA when to renew (RFC 9773); without ARI, look again in 6 h."""
        assert self._acme is not None
        try:
            now = time.time()
            state = self._states.get(name, CertState())
            try:
                pem = await asyncio.to_thread(info.path.read_bytes)
                window = await asyncio.to_thread(self._acme.renewal_window, pem)
            except (AcmeFailure, OSError) as exc:
                self._log.info("tls.ari_unavailable", name=name, error=str(exc))
                window = None
            if window is None:
                await self._save(name, replace(state, ari_fetch_at=now + 6 * 3600.0))
                return
            start, end, retry_after = window
            at = renewal.ari_renewal_time(start, end, now, self._random.random())
            await self._save(
                name,
                replace(
                    state, ari_serial=held.serial, ari_renew_at=at, ari_fetch_at=now + retry_after
                ),
            )
        finally:
            self._inflight.pop(name, None)
            self._wake.set()

    # --- helpers -----------------------------------------------------------------

    def _held(self, info: CertInfo | None, acme: bool) -> Held | None:
        if info is None:
            return None
        # A certificate of an earlier local CA (replaced: other name constraints)
        # is reissued now, not at renewal: clients trust only the current ca.pem.
        stale_local = info.issuer != self._local_issuer and info.issuer.startswith(
            LOCAL_CA_CN_PREFIX
        )
        acceptable = not stale_local and not (acme and info.issuer == self._local_issuer)
        return Held(info.not_before, info.not_after, info.serial, acceptable)

    def _policy(self, acme: bool) -> Policy:
        return self._options.policy if acme else self._options.local_policy

    async def _save(self, name: str, state: CertState) -> None:
        self._states[name] = state
        try:
            await self._store.put_cert_state(name, state.to_json())
        except StoreError as exc:
            self._log.warning("tls.state_not_saved", name=name, error=str(exc))

    def _alert(self, name: str, held: Held | None, state: CertState, now: float) -> None:
        if now - self._alerted.get(name, 0.0) < ALERT_LOG_EVERY_S:
            return
        self._alerted[name] = now
        hours = round(((held.not_after if held else now) - now) / 3600, 1)
        self._log.warning(
            "tls.certificate_expiring",
            name=name,
            expires_in_h=hours,
            failures=state.failures,
            error=state.last_error,
        )
        message = (
            f"certificate for {name} expires in {hours} h and renewal keeps failing "
            f"({state.failures}x): {state.last_error}"
        )
        task = asyncio.create_task(self._event(name, message))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _event(self, name: str, message: str) -> None:
        """Into the history of the deployment ``name`` serves, if it serves one."""
        deployment = self._owners.get(name)
        if deployment is None:
            return
        try:
            record = await self._store.get_deployment(deployment)
            await self._store.add_event(record.id, "tls", message)
        except (NotFound, StoreError):
            pass  # deleted meanwhile, or the database is busy: the log has it


def acme_eligible(name: str) -> bool:
    """A name an ACME CA could validate: not under ``localhost``, not single-label."""
    labels = name.split(".")
    return len(labels) >= 2 and labels[-1] != "localhost"
