"""The [tls] and [acme] config sections and the --https-listen flag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from patrd.model.errors import ConfigError
from patrd.settings.config import Listen, Overrides, apply_overrides, parse


def test_defaults(tmp_path: Path) -> None:
    config = parse({}, base_dir=tmp_path)
    assert config.tls.https_listen == (Listen("0.0.0.0", 443),)
    assert config.tls.renew_before == pytest.approx(1 / 3)
    assert config.tls.redirect_http and not config.tls.redirect_default_urls
    assert not config.acme.enabled
    assert config.acme.directory_url == "https://acme-v02.api.letsencrypt.org/directory"
    assert config.acme.resolve_check and config.acme.max_orders_per_hour == 5


def test_values_and_relative_ca_bundle(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    config = parse(
        {
            "tls": {"https_listen": ["127.0.0.1:8443"], "renew_before": 1, "check_interval_s": 5},
            "acme": {
                "enabled": True,
                "directory_url": "https://127.0.0.1:14000/dir",
                "ca_bundle": "ca.pem",
                "contact_email": "ops@example.com",
                "resolver": "127.0.0.1:8053",
                "public_addresses": ["203.0.113.7"],
                "backoff_initial_s": 1,
                "backoff_max_s": 4,
            },
        },
        base_dir=tmp_path,
    )
    assert config.tls.https_listen == (Listen("127.0.0.1", 8443),)
    assert config.tls.renew_before == 1.0
    assert config.acme.ca_bundle == tmp_path / "ca.pem"
    assert config.acme.resolver == Listen("127.0.0.1", 8053)
    assert config.acme.public_addresses == ("203.0.113.7",)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"tls": {"renew_before": 0}}, "tls.renew_before"),
        ({"tls": {"renew_before": 1.5}}, "tls.renew_before"),
        ({"tls": {"https_listen": ["nope"]}}, "tls.https_listen[0]"),
        ({"tls": {"redirect_http": "yes"}}, "tls.redirect_http"),
        ({"tls": {"bogus": 1}}, "tls.bogus"),
        ({"acme": {"directory_url": "ftp://x"}}, "acme.directory_url"),
        ({"acme": {"ca_bundle": "missing.pem"}}, "acme.ca_bundle"),
        ({"acme": {"contact_email": "not an email"}}, "acme.contact_email"),
        ({"acme": {"public_addresses": ["x"]}}, "acme.public_addresses[0]"),
        ({"acme": {"backoff_initial_s": 10, "backoff_max_s": 5}}, "acme.backoff_max_s"),
        ({"acme": {"max_orders_per_hour": 0}}, "acme.max_orders_per_hour"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, raw: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(raw, base_dir=tmp_path)
    assert err.value.key == key


def test_https_listen_flag(tmp_path: Path) -> None:
    config = parse({}, base_dir=tmp_path)
    flagged = apply_overrides(config, Overrides(https_listen=("127.0.0.1:9443",)))
    assert flagged.tls.https_listen == (Listen("127.0.0.1", 9443),)
    assert apply_overrides(config, Overrides(https_listen=("off",))).tls.https_listen == ()
