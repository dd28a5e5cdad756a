"""Container hardening defaults (pure)."""

from __future__ import annotations

import pytest

from patrd.engine.hardening import (
    DEFAULT_CAPABILITIES,
    Hardening,
    host_config,
    refuse_docker_socket,
)


def test_defaults_drop_everything_then_add_the_documented_list() -> None:
    config = host_config(Hardening())
    assert config["CapDrop"] == ["ALL"]
    assert config["CapAdd"] == sorted(DEFAULT_CAPABILITIES)
    assert "NET_BIND_SERVICE" in config["CapAdd"]  # busybox httpd / nginx on port 80
    assert not {"NET_RAW", "MKNOD", "SYS_ADMIN", "NET_ADMIN"} & set(config["CapAdd"])
    assert config["SecurityOpt"] == ["no-new-privileges:true"]
    assert config["PidsLimit"] == 1024


def test_overrides() -> None:
    config = host_config(Hardening(capabilities=("CHOWN", "CHOWN"), pids_limit=0))
    assert config["CapAdd"] == ["CHOWN"]
    assert "PidsLimit" not in config
    with pytest.raises(ValueError, match="unknown"):
        Hardening(capabilities=("FLY",))
    with pytest.raises(ValueError):
        Hardening(pids_limit=-1)


@pytest.mark.parametrize(
    "host",
    [
        {"Binds": ["/var/run/docker.sock:/var/run/docker.sock"]},
        {"Binds": ["/run/docker.sock:/x:ro"]},
        {"Binds": ["/var/run:/host-run"]},
        {"Mounts": [{"Type": "bind", "Source": "/srv/x/docker.sock", "Target": "/d"}]},
    ],
)
def test_docker_socket_is_never_mounted(host: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="Docker"):
        refuse_docker_socket(host)


def test_other_mounts_pass() -> None:
    refuse_docker_socket({"Binds": ["/srv/data:/data"], "Mounts": [{"Source": "vol1"}]})
    refuse_docker_socket({})
