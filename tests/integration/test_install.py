"""scripts/install and scripts/uninstall, for real, into a staging root.

``DESTDIR`` stages every file under tmp_path and leaves this machine alone:
no packages, no systemctl, no Docker reload; the patrd user and group are
created with ``groupadd/useradd --prefix`` in the staged /etc. The venv is
really built with pip, the unit really checked by ``systemd-analyze``.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from patrd.settings.config import ProxyConfig

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install"
UNINSTALL = REPO / "scripts" / "uninstall"
UNIT = REPO / "systemd" / "patrd.service"
SYSCTL = REPO / "systemd" / "60-patrd-neighbour.conf"
GC_THRESH3 = Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A frozen copy of the tree: other work going on in the repo must not look
    like a new version between two runs of the installer."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("patrd", "scripts", "systemd"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "config.example.toml"):
        shutil.copy2(REPO / name, src / name)
    return src


def run(script: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DESTDIR": str(root)}
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )


@pytest.mark.parametrize("script", [INSTALL, UNINSTALL], ids=["install", "uninstall"])
def test_scripts_are_clean_bash(script: Path) -> None:
    assert os.access(script, os.X_OK)
    subprocess.run(["bash", "-n", str(script)], check=True)
    lint = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout


def test_unit_file_is_a_notify_service_with_a_watchdog() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    service, deps = unit["Service"], unit["Unit"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["Restart"] == "on-failure"
    assert service["WatchdogSec"] == "30s"
    assert service["ExecStart"].split()[:2] == ["/opt/patrd/venv/bin/patrd", "serve"]
    assert "docker.service" in deps["After"] and "docker.service" in deps["Wants"]
    assert "Requires" not in deps, "a Docker restart must not restart patrd"
    assert "CAP_NET_ADMIN" in service["CapabilityBoundingSet"]
    assert "CAP_NET_BIND_SERVICE" in service["CapabilityBoundingSet"]
    assert "AF_UNIX" in service["RestrictAddressFamilies"]
    # The stop timeout covers the default drain plus the task stop stage.
    assert int(service["TimeoutStopSec"].rstrip("s")) >= ProxyConfig().drain_timeout_s + 10


def test_install_is_idempotent_and_uninstall_keeps_data_unless_purged(
    tmp_path: Path, source: Path
) -> None:
    install, uninstall = source / "scripts" / "install", source / "scripts" / "uninstall"
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        shutil.copy2(f"/etc/{name}", root / "etc" / name)
    host_group = Path("/etc/group").read_text()
    had_build = (source / "build").exists()

    first = run(install, root)
    assert first.returncode == 0, first.stderr + first.stdout
    venv = root / "opt" / "patrd" / "venv"
    version = subprocess.run(
        [str(venv / "bin" / "patrd"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("patrd ")
    assert (venv / "bin" / "patrctl").exists()
    config = root / "etc" / "patrd" / "config.toml"
    assert config.read_text() == (source / "config.example.toml").read_text()
    assert config.stat().st_mode & 0o777 == 0o640
    assert (root / "etc" / "patrd").stat().st_mode & 0o777 == 0o750
    unit = root / "etc" / "systemd" / "system" / "patrd.service"
    assert unit.read_text() == UNIT.read_text()
    assert '"live-restore": true' in (root / "etc" / "docker" / "daemon.json").read_text()
    sysctl = root / "etc" / "sysctl.d" / "60-patrd-neighbour.conf"
    assert sysctl.read_text() == SYSCTL.read_text()
    assert "net.ipv4.neigh.default.gc_thresh3 = 16384" in sysctl.read_text()
    for tool in ("patrd", "patrctl"):
        assert os.readlink(root / "usr" / "local" / "bin" / tool) == f"/opt/patrd/venv/bin/{tool}"
    assert [
        ln for ln in (root / "etc" / "group").read_text().splitlines() if ln.startswith("patrd:")
    ]
    assert "patrd:" in (root / "etc" / "passwd").read_text()
    assert Path("/etc/group").read_text() == host_group, "the host's /etc was touched"
    assert (source / "build").exists() == had_build, "pip left build/ in the source tree"

    # The unit as systemd sees it, with ExecStart pointing at the staged program.
    staged_unit = tmp_path / "patrd.service"
    staged_unit.write_text(unit.read_text().replace("/opt/patrd", str(root / "opt" / "patrd")))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(staged_unit)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr

    # An operator edits the config; a second run changes nothing.
    config.write_text(config.read_text() + "\n# edited\n")
    stamp = (root / "opt" / "patrd" / ".install-stamp").read_text()
    venv_mtime = (venv / "bin" / "patrd").stat().st_mtime_ns
    second = run(install, root)
    assert second.returncode == 0, second.stderr
    for expected in (
        "is up to date",
        "exists (kept as is)",
        "group patrd exists",
        "60-patrd-neighbour.conf is up to date",
    ):
        assert expected in second.stdout, second.stdout
    assert "installed" not in second.stdout.replace("is up to date", "")
    assert config.read_text().endswith("# edited\n")
    assert (root / "opt" / "patrd" / ".install-stamp").read_text() == stamp
    assert (venv / "bin" / "patrd").stat().st_mtime_ns == venv_mtime
    group_lines = (root / "etc" / "group").read_text().splitlines()
    assert len([ln for ln in group_lines if ln.startswith("patrd:")]) == 1

    # Uninstall keeps the data, the config and the group; twice is fine.
    data = root / "var" / "lib" / "patrd"
    data.mkdir(parents=True)
    (data / "patrd.db").write_text("precious")
    for _ in range(2):
        gone = run(uninstall, root)
        assert gone.returncode == 0, gone.stderr
    assert not (root / "opt" / "patrd").exists() and not unit.exists()
    assert not sysctl.exists()
    assert not (root / "usr" / "local" / "bin" / "patrctl").is_symlink()
    assert (data / "patrd.db").read_text() == "precious"
    assert config.exists() and "patrd:" in (root / "etc" / "group").read_text()
    assert "--purge" in gone.stdout

    purged = run(uninstall, root, "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not data.exists() and not (root / "etc" / "patrd").exists()
    assert "patrd:" not in (root / "etc" / "group").read_text()
    assert "patrd:" not in (root / "etc" / "passwd").read_text()
    assert Path("/etc/group").read_text() == host_group


def test_install_for_real_on_a_machine_without_systemd(tmp_path: Path, source: Path) -> None:
    """The unstaged path, as on a VPS, inside a private mount namespace.

    /etc, /opt and /usr/local are overlays whose writes land in tmp_path, so
    the script runs as it would for real (root, no DESTDIR) without touching
    this machine. PID 1 here is not systemd: the script must say so and not
    call systemctl. Packages are all present here, so apt-get is not run.
    """
    overlays = {"/etc": "etc", "/opt": "opt", "/usr/local": "usrlocal"}
    mounts = []
    for target, name in overlays.items():
        upper, work = tmp_path / name / "upper", tmp_path / name / "work"
        upper.mkdir(parents=True)
        work.mkdir()
        mounts.append(
            f"mount -t overlay overlay -o lowerdir={target},upperdir={upper},workdir={work} "
            f"{target}"
        )
    install = source / "scripts" / "install"
    script = " && ".join([*mounts, f"{install}", f"{install}"])
    host_group = Path("/etc/group").read_text()
    host_thresh3 = GC_THRESH3.read_text()
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "systemd is not running here" in done.stdout
    assert "patrd serve --config /etc/patrd/config.toml" in done.stdout
    assert done.stdout.count("package: installed") == 1, "second run changed nothing"
    etc = tmp_path / "etc" / "upper"
    assert (etc / "patrd" / "config.toml").is_file()
    assert (etc / "systemd" / "system" / "patrd.service").is_file()
    if int(host_thresh3) < 16384:  # else the installer leaves it (and says so)
        assert (etc / "sysctl.d" / "60-patrd-neighbour.conf").read_text() == SYSCTL.read_text()
        assert "it applies at boot" in done.stdout
    else:
        assert "not written" in done.stdout
    assert GC_THRESH3.read_text() == host_thresh3, "the host's sysctl was changed"
    assert "patrd:" in (etc / "group").read_text()
    assert (tmp_path / "opt" / "upper" / "patrd" / "venv" / "bin" / "patrd").exists()
    assert (tmp_path / "usrlocal" / "upper" / "bin" / "patrctl").is_symlink()
    assert Path("/etc/group").read_text() == host_group
    assert not Path("/opt/patrd").exists()
