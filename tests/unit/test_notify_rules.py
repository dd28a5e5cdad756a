"""Pure parts of notifications and node health: tables of inputs and verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from patrd.model.errors import ConfigError, SpecError
from patrd.notify.config import NodeConfig
from patrd.notify.dispatcher import RetryPolicy, backoff_s
from patrd.notify.rules import KINDS, Notification, check_filter, classify, matches, redact
from patrd.notify.senders import sign, slack_body
from patrd.notify.targets import TargetType, masked_url, parse_target
from patrd.observe.nodehealth import Disk, Snapshot, check
from patrd.settings.config import parse

EXPIRING = "certificate.expiring"


@pytest.mark.parametrize(
    ("event", "message", "kind"),
    [
        ("rollout_failed", "revision 2 failed: startup; back to revision 1", "rollout.failed"),
        ("rollout", "revision 2 deployed (sha256:abc)", "rollout.succeeded"),
        ("restart", "instance web-0 exited 1; restarting (failure #1, ...)", "instance.restarted"),
        ("restart", "instance web-0 exited 1; restarting (failure #3, ...)", "instance.crashloop"),
        ("restart", "instance web-0 unhealthy; restarting (failure #12)", "instance.crashloop"),
        ("failed_start", "instance web-0 removed: x; failure #2, next", None),
        ("failed_start", "instance web-0 removed: x; failure #4, next", "instance.crashloop"),
        ("unhealthy", "instance web-0: liveness probe /h failed 3 times", "probe.liveness_failed"),
        ("startup_failed", "instance web-0: port 80 did not pass", "probe.startup_failed"),
        ("pull_failed", "no such image; retry in 4s", "image.pull_failed"),
        ("status", "status errored: image missing", "deployment.errored"),
        ("status", "status running", None),
        ("tls", "certificate for a.example failed (2x): timeout; next 60s", "certificate.failed"),
        ("tls", "certificate for a.example expires in 20.5 h and renewal keeps failing", EXPIRING),
        ("tls", "certificate for a.example renewed (ACME), valid until 2027", "certificate.issued"),
        ("autoscale", "scaled 2 -> 3 (cpu 91%)", "autoscale"),
        ("disk.low", "docker: 4% free", "disk.low"),
        ("memory.pressure", "3% available", "memory.pressure"),
        ("backup.failed", "upload failed", "backup.failed"),
        ("backup.ok", "backup written", "backup.ok"),
        ("job.failed", "job nightly exited 2", "job.failed"),
        ("notify.failed", "notification to x failed", None),  # never notified: no loops
        ("created", "deployment created", None),
        ("pulled", "pulled web:v1", None),
    ],
)
def test_classify(event: str, message: str, kind: str | None) -> None:
    assert classify(event, message) == kind


@pytest.mark.parametrize(
    ("filters", "kind", "expected"),
    [
        (["rollout.failed"], "rollout.failed", True),
        (["rollout.failed"], "rollout.succeeded", False),
        (["rollout.*"], "rollout.succeeded", True),
        (["rollout.*"], "rollouts.x", False),
        (["certificate.*", "disk.low"], "disk.low", True),
        (["*"], "autoscale", True),
        (["autoscale"], "autoscale", True),
        (["autoscale"], "rollout.failed", False),
        ([], "rollout.failed", False),
        (["instance.*"], "instance.crashloop", True),
        (["probe.*"], "instance.crashloop", False),
    ],
)
def test_matches(filters: list[str], kind: str, expected: bool) -> None:
    assert matches(filters, kind) is expected


@pytest.mark.parametrize(
    ("pattern", "valid"),
    [
        ("*", True),
        ("rollout.failed", True),
        ("rollout.*", True),
        ("backup.*", True),
        ("rollout.fail", False),
        ("nothing.*", False),
        ("rollout", False),
        ("", False),
    ],
)
def test_check_filter(pattern: str, valid: bool) -> None:
    assert (check_filter(pattern) is None) is valid


def test_every_documented_kind_is_a_valid_filter() -> None:
    assert all(check_filter(kind) is None for kind in KINDS)
    for name in ("rollout.failed", "instance.crashloop", "probe.liveness_failed"):
        assert name in KINDS
    for name in ("certificate.failed", "certificate.expiring", "disk.low", "memory.pressure"):
        assert name in KINDS
    for name in ("backup.failed", "backup.ok", "autoscale", "job.failed"):
        assert name in KINDS


def test_redact_longest_first_and_ignores_short_values() -> None:
    text = "token hunter2-long and hunter2 and on"
    assert redact(text, ["hunter2", "hunter2-long", "on"]) == (
        "token [redacted] and [redacted] and on"
    )


WEBHOOK = {"name": "ops", "type": "webhook", "url": "https://hooks.example/x", "secret": "k"}
EMAIL = {
    "name": "mail",
    "type": "email",
    "smtp_host": "127.0.0.1",
    "mail_from": "patrd@example.org",
    "mail_to": ["ops@example.org"],
}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({**WEBHOOK, "name": "Bad Name"}, "name"),
        ({**WEBHOOK, "type": "pager"}, "type"),
        ({**WEBHOOK, "url": "ftp://x"}, "url"),
        ({**WEBHOOK, "events": ["rollout.nope"]}, "events[0]"),
        ({**WEBHOOK, "events": []}, "events"),
        ({**WEBHOOK, "secret": "a value with spaces"}, "secret"),
        ({**WEBHOOK, "smtp_host": "x"}, "smtp_host"),
        ({**WEBHOOK, "timeout_s": 0}, "timeout_s"),
        ({k: v for k, v in WEBHOOK.items() if k != "url"}, "url"),
        ({**EMAIL, "mail_to": []}, "mail_to"),
        ({**EMAIL, "mail_to": ["nobody"]}, "mail_to[0]"),
        ({**EMAIL, "password_secret": "smtp-pass"}, "username"),
        ({**EMAIL, "smtp_port": 70000}, "smtp_port"),
        ({**EMAIL, "url": "http://x/"}, "url"),
        ({**WEBHOOK, "url_secret": "hook-url"}, "url_secret"),  # both
        ({**WEBHOOK, "url_secret": "no spaces allowed"}, "url_secret"),
    ],
)
def test_target_errors_name_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_target(raw)
    assert err.value.field == field


def test_target_json_holds_secret_names_only() -> None:
    target = parse_target({**WEBHOOK, "events": "rollout.*"})
    assert target.type is TargetType.WEBHOOK and target.events == ("rollout.*",)
    assert target.to_json()["secret"] == "k"
    assert parse_target(target.to_json()) == target
    mail = parse_target({**EMAIL, "username": "u", "password_secret": "smtp-pass"})
    assert parse_target(mail.to_json()) == mail
    assert "password" not in mail.to_json()


def test_config_notify_and_node_tables(tmp_path: Path) -> None:
    config = parse(
        {
            "notify": [WEBHOOK, {**EMAIL, "events": ["disk.low", "memory.pressure"]}],
            "node": {"disk_low_percent": 5, "watch_paths": ["srv"], "interval_s": 2},
        },
        base_dir=tmp_path,
    )
    assert [t.name for t in config.notify] == ["ops", "mail"]
    assert config.node.disk_low_percent == 5.0 and config.node.interval_s == 2.0
    assert config.node.watch_paths == (tmp_path / "srv",)
    assert parse({}, base_dir=tmp_path).node == NodeConfig()
    with pytest.raises(ConfigError) as err:
        parse({"notify": [WEBHOOK, {**WEBHOOK, "url": "ftp://x"}]}, base_dir=tmp_path)
    assert err.value.key == "notify[1].url"
    with pytest.raises(ConfigError) as err:
        parse({"notify": [WEBHOOK, WEBHOOK]}, base_dir=tmp_path)
    assert err.value.key == "notify[1].name"
    with pytest.raises(ConfigError) as err:
        parse({"node": {"min_free": 1}}, base_dir=tmp_path)
    assert err.value.key == "node.min_free"
    with pytest.raises(ConfigError) as err:
        parse({"node": {"memory_low_percent": 100}}, base_dir=tmp_path)
    assert err.value.key == "node.memory_low_percent"


def test_backoff_doubles_and_caps() -> None:
    policy = RetryPolicy(attempts=6, first_delay_s=1.0, max_delay_s=5.0)
    assert [backoff_s(policy, n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_signature_and_slack_body() -> None:
    # Known HMAC-SHA256 vector (RFC 4231 test case 2).
    assert sign(b"Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    note = Notification("d1", "rollout.failed", "rollout_failed", "boom", 0.0, "n1", "web", 2)
    assert slack_body(note) == {"text": "*[patrd n1] rollout.failed web*\nboom"}


GIB = 2**30


def snapshot(free_gib: float, available_gib: float) -> Snapshot:
    disk = Disk("docker", "/var/lib/docker", "/", 100 * GIB, 0, int(free_gib * GIB), 0.0)
    return Snapshot(
        at=0.0,
        cpu_percent=0.0,
        cpu_count=2,
        load=(0.0, 0.0, 0.0),
        memory_total=100 * GIB,
        memory_available=int(available_gib * GIB),
        memory_used=0,
        memory_percent=0.0,
        swap_total=0,
        swap_used=0,
        swap_percent=0.0,
        net_bytes_sent=0,
        net_bytes_recv=0,
        net_packets_sent=0,
        net_packets_recv=0,
        boot_time=0.0,
        disks=(disk,),
    )


def test_node_thresholds_fire_once_per_crossing_with_hysteresis() -> None:
    config = NodeConfig(disk_low_percent=10, memory_low_percent=10)
    steps = [  # (free disk %, available memory %) → kinds written
        ((50, 50), []),
        ((9, 50), ["disk.low"]),
        ((5, 50), []),  # still low: no repeat
        ((11, 50), []),  # above, but not by REARM_POINTS: still alerted
        ((9, 8), ["memory.pressure"]),
        ((13, 13), []),  # both re-armed
        ((9.5, 9.9), ["disk.low", "memory.pressure"]),
    ]
    alerted: frozenset[str] = frozenset()
    for (disk, memory), expected in steps:
        alerted, events = check(snapshot(disk, memory), config, alerted)
        assert [e.kind for e in events] == expected, (disk, memory)
    off = NodeConfig(disk_low_percent=0, memory_low_percent=0)
    assert check(snapshot(1, 1), off, frozenset()) == (frozenset(), [])
    _, events = check(snapshot(4, 50), config, frozenset())
    assert "docker (/var/lib/docker on /): 4.0% free (4.0 GiB of 100.0 GiB)" in events[0].message


@pytest.mark.parametrize(
    ("url", "keep_path", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/XyZ", False, "https://hooks.slack.com/…"),
        ("https://hooks.example/patrd", True, "https://hooks.example/patrd"),
        ("https://user:pw@hooks.example:8443/p?token=abc", True, "https://hooks.example:8443/p?…"),
        ("http://[::1]:9000/", False, "http://[::1]:9000/"),
        ("http://127.0.0.1:9000", False, "http://127.0.0.1:9000"),
    ],
)
def test_masked_url(url: str, keep_path: bool, shown: str) -> None:
    assert masked_url(url, keep_path=keep_path) == shown


def test_url_secret_instead_of_url() -> None:
    raw = {"name": "chat", "type": "slack", "url_secret": "slack-url"}
    target = parse_target(raw)
    assert target.url is None and target.url_secret == "slack-url"
    assert parse_target(target.to_json()) == target
