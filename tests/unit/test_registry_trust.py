"""The node registry asks who you are: config checks, the generated credential, digests."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from patrd.model.errors import ConfigError
from patrd.registry.auth import USERNAME, ensure_credential, htpasswd_path, login_line
from patrd.registry.node import parse_events, render_config
from patrd.settings import config as config_mod

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def push_event(digest: str) -> bytes:
    target = {"mediaType": MANIFEST, "repository": "apps/x", "tag": "v1", "digest": digest}
    return json.dumps({"events": [{"action": "push", "target": target}]}).encode()


@pytest.mark.parametrize(
    ("digest", "accepted"),
    [
        ("sha256:" + "a" * 64, True),
        ("sha256:" + "0123456789abcdef" * 4, True),
        ("sha256:" + "A" * 64, False),  # uppercase is not a canonical digest
        ("sha256:" + "g" * 64, False),
        ("sha256:" + "a" * 63 + "/", False),
        ("sha256:" + "a" * 63, False),
        ("sha512:" + "a" * 64, False),
        ("sha256:" + "a" * 62 + "\n", False),
    ],
)
def test_webhook_digest_is_sha256_and_64_hex(digest: str, accepted: bool) -> None:
    assert bool(parse_events(push_event(digest))) is accepted


def registry(**table: Any) -> config_mod.RegistryConfig:
    return config_mod.parse({"registry": {"enabled": True, **table}}, base_dir=Path("/")).registry


def test_auth_is_on_by_default() -> None:
    assert registry().auth is True


@pytest.mark.parametrize("listen", ["0.0.0.0:5000", "[::]:5000", "192.0.2.1:5000"])
def test_no_auth_beyond_loopback_is_refused(listen: str) -> None:
    with pytest.raises(ConfigError) as info:
        registry(listen=listen, auth=False)
    assert info.value.key == "registry.listen"
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("listen", ["127.0.0.1:5000", "[::1]:5000", "localhost:5000"])
def test_no_auth_on_loopback_is_allowed(listen: str) -> None:
    assert registry(listen=listen, auth=False).auth is False


def test_auth_beyond_loopback_is_fine_and_contradictions_are_not() -> None:
    assert registry(listen="0.0.0.0:5000").auth
    with pytest.raises(ConfigError) as info:
        registry(auth=False, htpasswd_file="/etc/patrd/htpasswd")
    assert info.value.key == "registry.auth"
    with pytest.raises(ConfigError) as info:
        registry(auth="yes")
    assert info.value.key == "registry.auth"


def test_render_config_puts_the_htpasswd_file_in(tmp_path: Path) -> None:
    doc = json.loads(render_config(registry(), tmp_path, "http://x/", "s", htpasswd=tmp_path / "h"))
    assert doc["auth"] == {"htpasswd": {"realm": "patrd-registry", "path": str(tmp_path / "h")}}
    assert "auth" not in json.loads(render_config(registry(), tmp_path, "http://x/", "s"))


def test_generated_credential_is_private_stable_and_checks(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = ensure_credential(data)
    assert first.username == USERNAME and len(first.password) >= 40
    assert first.password not in repr(first)
    for path in (data / "registry-password", htpasswd_path(data)):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ensure_credential(data) == first  # the second start reuses it
    line = htpasswd_path(data).read_text().strip()
    assert line.startswith(f"{USERNAME}:$2")
    assert first.password not in line
    # htpasswd -v checks a password against the file (apache2-utils)
    ok = subprocess.run(
        ["htpasswd", "-vi", str(htpasswd_path(data)), USERNAME],
        input=first.password,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        ["htpasswd", "-vi", str(htpasswd_path(data)), USERNAME],
        input="wrong",
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0
    # a lost htpasswd file is made again from the kept password
    htpasswd_path(data).unlink()
    assert ensure_credential(data) == first and htpasswd_path(data).exists()


def test_login_line_reads_the_password_file(tmp_path: Path) -> None:
    line = login_line("127.0.0.1:5000", tmp_path)
    assert line == (
        f"docker login 127.0.0.1:5000 --username patrd --password-stdin "
        f"< {tmp_path / 'registry-password'}"
    )
