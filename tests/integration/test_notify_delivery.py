"""Notification delivery end to end without Docker: a real store, real receivers
(aiohttp on loopback, aiosmtpd), the dispatcher's two tasks running."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from patrd.model.spec import parse_create
from patrd.notify.config import NodeConfig
from patrd.notify.dispatcher import Dispatcher, DispatchOptions, RetryPolicy
from patrd.notify.rules import Notification
from patrd.notify.targets import Target, parse_target
from patrd.observe.nodehealth import NodeWatcher, Snapshot
from patrd.state.store import Store
from patrd.state.vault import Vault
from tests.support.receivers import HttpReceiver, SmtpReceiver, free_port
from tests.support.waits import until

# serial: delivery-time bounds (scripts/test runs these alone, after the parallel part).
pytestmark = pytest.mark.serial

FAST = DispatchOptions(
    poll_interval_s=0.05,
    retry=RetryPolicy(attempts=3, first_delay_s=0.2, max_delay_s=0.4),
    node="node-1",
)


@pytest.fixture
async def vault(store: Store, tmp_path: Path) -> Vault:
    return await Vault.open(store, tmp_path / "secrets.key")


@contextlib.asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[Dispatcher]:
    tasks = [asyncio.create_task(dispatcher.tail()), asyncio.create_task(dispatcher.drain())]
    await asyncio.sleep(0.1)  # primed: only events from now on
    try:
        yield dispatcher
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def webhook(name: str, url: str, events: list[str], **extra: Any) -> Target:
    return parse_target({"name": name, "type": "webhook", "url": url, "events": events, **extra})


async def deployment(store: Store, **env: Any) -> str:
    spec: dict[str, Any] = {"name": "web", "image": "nginx", "ports": {"80": "http"}}
    if env:
        spec["env"] = env
    record = await store.create_deployment(parse_create(spec, region="local"))
    return record.id


async def test_failed_rollout_is_signed_and_filtered_events_are_not_sent(
    store: Store, vault: Vault
) -> None:
    await vault.create("hook-key", "k3y-for-signing")
    await vault.create("db-pass", "pa55-from-the-vault")
    dep = await deployment(store, API_TOKEN="tok-very-secret-1234", DB={"secret": "db-pass"})
    async with HttpReceiver() as wanted, HttpReceiver() as other:
        targets = [
            webhook("ops", wanted.url, ["rollout.failed"], secret="hook-key"),
            webhook("scaling", other.url, ["autoscale"]),
        ]
        async with running(Dispatcher(store, targets, vault, FAST)):
            await store.add_event(dep, "rollout", "revision 1 deployed (sha256:aa)", 1)
            await store.add_event(dep, "status", "status errored: boom", 1)
            await store.add_event(
                dep,
                "rollout_failed",
                "revision 2 failed: env API_TOKEN=tok-very-secret-1234 "
                "DB=pa55-from-the-vault; back to 1",
                2,
            )
            got = await wanted.wait(1, timeout=5)
            await asyncio.sleep(0.5)  # anything else would have arrived by now
    assert len(got) == 1, [g.body for g in got]
    hit = got[0]
    expected = hmac.new(b"k3y-for-signing", hit.body, hashlib.sha256).hexdigest()
    assert hit.headers["X-Patrd-Signature"] == f"sha256={expected}"
    assert hit.headers["X-Patrd-Kind"] == "rollout.failed"
    payload = hit.json()
    assert payload["kind"] == "rollout.failed" and payload["event"] == "rollout_failed"
    assert payload["deployment"] == "web" and payload["revision"] == 2
    assert payload["node"] == "node-1"
    assert "tok-very-secret-1234" not in hit.body.decode()
    assert "pa55-from-the-vault" not in hit.body.decode()
    assert "[redacted]" in payload["message"]
    assert other.got == []


async def test_down_receiver_is_retried_then_given_up_without_stalling_others(
    store: Store,
) -> None:
    dep = await deployment(store)
    dead_url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    async with HttpReceiver() as live, HttpReceiver(delay_s=5) as hanging:
        targets = [
            webhook("dead", dead_url, ["*"]),
            webhook("hanging", hanging.url, ["*"], timeout_s=2),
            webhook("live", live.url, ["rollout.*"]),
        ]
        dispatcher = Dispatcher(store, targets, None, FAST)
        async with running(dispatcher):
            written = time.monotonic()
            await store.add_event(dep, "rollout_failed", "revision 2 failed: x; back to 1", 2)
            writes_took = time.monotonic() - written
            await live.wait(1, timeout=5)
            first_delivery_s = time.monotonic() - written
            # More events while the dead and hanging targets are being retried.
            for n in range(3):
                started = time.monotonic()
                await store.add_event(dep, "rollout", f"revision {n + 3} deployed (x)", n + 3)
                writes_took = max(writes_took, time.monotonic() - started)
            await live.wait(4, timeout=5)
            all_live_s = time.monotonic() - written

            async def gave_up() -> list[Any] | None:
                failed = [e for e in await store.node_events() if e.kind == "notify.failed"]
                return failed if len(failed) >= 8 else None  # 4 notifications x 2 broken targets

            failed = await until(gave_up, 20, "8 notify.failed events")
        stats = dispatcher.stats
    print(
        f"first delivery {first_delivery_s * 1000:.0f} ms, 4 deliveries {all_live_s:.2f} s, "
        f"slowest event write {writes_took * 1000:.1f} ms while 2 targets were failing"
    )
    # Never behind the 8 deliveries to the dead and hanging targets (2 s per try).
    assert first_delivery_s < 1.5 and all_live_s < 1.5
    assert writes_took < 0.5
    assert stats.deliveries[("live", "sent")] == 4
    assert stats.deliveries[("dead", "failed")] == 4
    assert stats.deliveries[("hanging", "failed")] == 4
    assert stats.retries["dead"] == 8 and stats.retries["hanging"] == 8  # 3 tries each
    assert len(hanging.got) == 12
    assert any("to dead failed after 3 attempt(s)" in e.message for e in failed)
    assert any("no answer within 2s" in e.message for e in failed)
    # notify.failed is never notified itself: the live "*"-less target saw rollouts only.
    assert {g.json()["kind"] for g in live.got} == {"rollout.failed", "rollout.succeeded"}


async def test_permanent_4xx_is_not_retried(store: Store) -> None:
    async with HttpReceiver(status=404) as gone:
        dispatcher = Dispatcher(store, [webhook("gone", gone.url, ["*"])], None, FAST)
        async with running(dispatcher):
            await store.add_node_event("disk.low", "docker: 3% free")
            await gone.wait(1, timeout=5)
            await asyncio.sleep(0.6)  # longer than the first backoff
    assert len(gone.got) == 1
    assert dispatcher.stats.deliveries[("gone", "failed")] == 1
    assert gone.got[0].json()["kind"] == "disk.low" and gone.got[0].json()["deployment"] is None


async def test_slack_format_with_the_url_in_a_secret(store: Store, vault: Vault) -> None:
    dep = await deployment(store)
    async with HttpReceiver() as slack:
        await vault.create("slack-url", slack.url)
        target = parse_target(
            {"name": "chat", "type": "slack", "url_secret": "slack-url", "events": ["autoscale"]}
        )
        async with running(Dispatcher(store, [target], vault, FAST)):
            await store.set_replicas(dep, 3, "scaled 2 -> 3 (cpu 91% over target 70%)")
            got = await slack.wait(1, timeout=5)
    assert got[0].headers["Content-Type"] == "application/json"
    assert "X-Patrd-Signature" not in got[0].headers
    assert got[0].json() == {
        "text": "*[patrd node-1] autoscale web*\nscaled 2 -> 3 (cpu 91% over target 70%)"
    }


async def test_email_over_smtp(store: Store, vault: Vault) -> None:
    dep = await deployment(store)
    with SmtpReceiver() as smtp:
        target = parse_target(
            {
                "name": "mail",
                "type": "email",
                "smtp_host": "127.0.0.1",
                "smtp_port": smtp.port,
                "mail_from": "patrd@node.example",
                "mail_to": ["ops@example.org", "oncall@example.org"],
                "events": ["probe.*"],
            }
        )
        async with running(Dispatcher(store, [target], vault, FAST)):
            await store.add_event(dep, "unhealthy", "instance web-0: liveness probe failed", 1)
            await store.add_event(dep, "pulled", "pulled nginx", 1)  # not a notification kind
            await until(lambda: smtp.messages, 10, "a message delivered", interval=0.05)
            await asyncio.sleep(0.3)
    assert len(smtp.messages) == 1
    envelope, message = smtp.messages[0]
    assert envelope.mail_from == "patrd@node.example"
    assert sorted(envelope.rcpt_tos) == ["oncall@example.org", "ops@example.org"]
    assert message["Subject"] == "[patrd node-1] probe.liveness_failed web"
    assert message["X-Patrd-Kind"] == "probe.liveness_failed"
    assert "instance web-0: liveness probe failed" in message.get_payload()


async def test_email_login_uses_the_vault_password_and_a_wrong_one_gives_up(
    store: Store, vault: Vault
) -> None:
    await vault.create("smtp-pass", "mail-pa55word")
    await vault.create("smtp-wrong", "not-it")
    with SmtpReceiver(login=("patrd", "mail-pa55word")) as smtp:
        targets = [
            parse_target(
                {
                    "name": name,
                    "type": "email",
                    "smtp_host": "127.0.0.1",
                    "smtp_port": smtp.port,
                    "username": "patrd",
                    "password_secret": secret,
                    "mail_from": "patrd@node.example",
                    "mail_to": ["ops@example.org"],
                    "events": ["disk.low"],
                }
            )
            for name, secret in (("good", "smtp-pass"), ("bad", "smtp-wrong"))
        ]
        dispatcher = Dispatcher(store, targets, vault, FAST)
        async with running(dispatcher):
            await store.add_node_event("disk.low", "docker: 4% free")
            await until(
                lambda: smtp.messages and dispatcher.stats.deliveries[("bad", "failed")],
                10,
                "one delivery and one failure",
                interval=0.05,
            )
    assert len(smtp.messages) == 1
    assert smtp.messages[0][1]["Subject"] == "[patrd node-1] disk.low"
    assert ("patrd", True) in smtp.logins and ("patrd", False) in smtp.logins
    assert dispatcher.stats.deliveries[("bad", "failed")] == 1
    assert dispatcher.stats.retries["bad"] == 0  # 535: permanent, not retried
    failed = [e.message for e in await store.node_events() if e.kind == "notify.failed"]
    assert len(failed) == 1 and "SMTP 535" in failed[0], failed
    assert "not-it" not in failed[0] and "mail-pa55word" not in failed[0]


async def test_full_queue_drops_the_oldest_and_counts(store: Store) -> None:
    target = webhook("q", "http://127.0.0.1:9/", ["*"])
    dispatcher = Dispatcher(store, [target], None, DispatchOptions(queue_size=3))
    for n in range(5):
        note = Notification(f"n{n}", "disk.low", "disk.low", f"m{n}", 0.0, "node-1")
        assert dispatcher.submit(note) == 1
    assert dispatcher.stats.dropped == 2 and dispatcher.stats.queued == 3


async def test_runtime_targets_are_stored_and_reloaded(store: Store) -> None:
    target = webhook("rt", "http://127.0.0.1:9/", ["backup.*"], secret="hook-key")
    await store.create_notification(target.name, target.to_json())
    dispatcher = Dispatcher(store, [], None, FAST)
    await dispatcher.reload()
    assert [(t.name, t.source, t.events) for t in dispatcher.targets()] == [
        ("rt", "api", ("backup.*",))
    ]


async def test_node_watcher_writes_threshold_events(store: Store, tmp_path: Path) -> None:
    # Thresholds this machine is surely under: 99% free wanted on every mount.
    config = NodeConfig(interval_s=1, disk_low_percent=99, memory_low_percent=99)
    watcher = NodeWatcher(store, config, tmp_path)
    task = asyncio.create_task(watcher.run())
    try:

        async def both_written() -> bool:
            kinds = {e.kind for e in await store.node_events()}
            return {"disk.low", "memory.pressure"} <= kinds

        await until(both_written, 10, "disk.low and memory.pressure written")
        await asyncio.sleep(1.5)  # a second pass writes nothing new
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    kinds = [e.kind for e in await store.node_events()]
    assert kinds.count("memory.pressure") == 1, kinds
    assert isinstance(watcher.latest, Snapshot) and watcher.samples >= 2
    # One per watched mount that exists (the data dir; Docker's root where present).
    assert kinds.count("disk.low") == len(watcher.latest.disks) >= 1, kinds


async def test_node_events_pages_oldest_first_from_any_watermark(store: Store) -> None:
    for n in range(5):
        await store.add_node_event("disk.low", f"m{n}")
    first = await store.node_events(after_id=0, limit=2)
    assert [e.message for e in first] == ["m0", "m1"]  # from the very first, not the newest
    assert [e.message for e in await store.node_events(after_id=first[-1].id, limit=2)] == [
        "m2",
        "m3",
    ]
    assert [e.message for e in await store.node_events(limit=2)] == ["m3", "m4"]
    assert await store.last_node_event_id() == first[0].id + 4
