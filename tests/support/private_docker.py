"""A private Docker engine inside a network namespace the test creates.

For drills that stop and start dockerd: the machine's own engine serves other
tests (and other people's test runs) at the same time, so the drill restarts
an engine of its own instead — the same ``dockerd`` binary, started the way
``scripts/setup`` starts the main one (``setsid dockerd``), with its own
data root, exec root (so its own managed containerd), socket and pidfile, in
a namespace where its bridges and iptables rules touch nothing else.

Its containers are reachable only from inside the namespace: run patrd there
(``nsenter --net=...`` as a command prefix) and send traffic with
:meth:`PrivateDocker.curl`. The test images are copied in with ``docker save
| docker load``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.waits import until_sync

# How the Go runtime starts its last words: a panic, a fatal error, a fatal signal.
_GO_DEATH = re.compile(r"(panic: |fatal error: |SIG[A-Z]+: )")


@dataclass
class PrivateDocker:
    live_restore: bool = False
    extra_args: tuple[str, ...] = ()  # more dockerd flags (e.g. "--bridge=none" for swarm nodes)
    netns: str = field(default_factory=lambda: f"patrd-dk-{uuid.uuid4().hex[:6]}")
    # Short: containerd's socket lives under the exec root (108-byte sun_path limit).
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pd-", dir="/tmp")))
    starts: int = 0
    proc: subprocess.Popen[bytes] | None = None
    stopped: bool = False  # by stop(), as a drill does; a dockerd that exited otherwise crashed

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return self.root / "docker.pid"

    @property
    def nsenter(self) -> list[str]:
        return ["nsenter", f"--net=/var/run/netns/{self.netns}"]

    def create_netns(self) -> None:
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        subprocess.run(
            ["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"], check=True
        )

    def start(self, timeout: float = 30.0) -> float:
        """Start dockerd (as scripts/setup does) and wait until it answers; seconds taken."""
        started = time.monotonic()
        self.starts += 1
        self.stopped = False
        self._kill_leftover_containerd()
        args = [
            *self.nsenter,
            "setsid",
            "dockerd",
            "--data-root",
            str(self.root / "data"),
            "--exec-root",
            str(self.root / "exec"),
            "-H",
            self.url,
            "--pidfile",
            str(self.pidfile),
        ]
        if self.live_restore:
            args.append("--live-restore")
        args.extend(self.extra_args)
        with (self.root / "dockerd.log").open("ab") as log:
            # nsenter and setsid exec: this is dockerd itself (reaped in stop()).
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        until_sync(self.answers, timeout, "the private dockerd answering", detail=self.log_tail)
        return time.monotonic() - started

    def _kill_leftover_containerd(self) -> None:
        """Nothing of a crashed dockerd's containerd may hold up the next dockerd.

        In CI a swarm node's dockerd died and the one started in its place failed
        with "timeout waiting for containerd to start". Reproduced by SIGKILLing a
        private dockerd: its managed containerd dies with it, but stays a zombie (this
        machine's PID 1 does not reap it), so the pid in ``containerd.pid`` still
        answers ``kill(pid, 0)`` and the new dockerd ("containerd is still running")
        waits for a socket nobody serves. A live leftover is killed; the pid file goes.
        """
        marker = str(self.root / "exec" / "containerd")
        leftovers = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline and "containerd-shim" not in cmdline:
                leftovers.append(int(entry.name))
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if leftovers:
            until_sync(
                lambda: not any(_alive(pid) for pid in leftovers), 10, "a leftover containerd gone"
            )
        with contextlib.suppress(FileNotFoundError):
            (self.root / "exec" / "containerd" / "containerd.pid").unlink()

    def pid(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        return self.proc.pid

    def stop(self, timeout: float = 60.0) -> float:
        """SIGTERM dockerd (what ``systemctl stop docker`` does) and wait; seconds taken."""
        started = time.monotonic()
        pid = self.pid()
        if pid is None:
            return 0.0
        assert self.proc is not None
        self.stopped = True
        os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"private dockerd did not stop within {timeout}s") from None
        return time.monotonic() - started

    def answers(self) -> bool:
        try:
            proc = self.docker("version", "--format", "{{.Server.Version}}", check=False, timeout=5)
        except subprocess.TimeoutExpired:
            return False  # still starting (restoring its containers): ask again
        return proc.returncode == 0

    def docker(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "-H", self.url, *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def load_image(self, ref: str) -> None:
        save = subprocess.Popen(["docker", "save", ref], stdout=subprocess.PIPE)
        try:
            subprocess.run(
                ["docker", "-H", self.url, "load", "-q"],
                stdin=save.stdout,
                check=True,
                capture_output=True,
            )
        finally:
            if save.stdout is not None:
                save.stdout.close()
            save.wait()

    def curl(self, url: str, host: str, timeout: float = 2.0) -> tuple[int, str]:
        """GET from inside the namespace: (status, body); status 0 when nothing answered."""
        proc = subprocess.run(
            [
                *self.nsenter,
                "curl",
                "-s",
                "-m",
                str(timeout),
                "-H",
                f"Host: {host}",
                "-w",
                "\n%{http_code}",
                url,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        body, _, code = proc.stdout.rpartition("\n")
        return (int(code) if code.isdigit() else 0), body

    def crashed(self) -> bool:
        """dockerd exited without :meth:`stop` (a panic, the OOM killer)."""
        return self.proc is not None and self.proc.poll() is not None and not self.stopped

    def log_tail(self, lines: int = 30) -> str:
        path = self.root / "dockerd.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def crash_lines(self, lines: int = 40) -> str:
        """What says why dockerd died: its last Go panic, fatal error or fatal signal
        and the stack under it (the tail of a panic is the end of a goroutine
        dump, which does not say), else the log's tail."""
        path = self.root / "dockerd.log"
        if not path.exists():
            return ""
        text = path.read_text(errors="replace").splitlines()
        starts = [i for i, line in enumerate(text) if _GO_DEATH.match(line)]
        if not starts:
            return "\n".join(text[-lines:])
        return "\n".join(text[max(0, starts[-1] - 5) : starts[-1] + lines])

    def destroy(self) -> None:
        """Remove every container, stop dockerd, unmount, drop the namespace and files."""
        if self.pid() is None and self.starts:
            with contextlib.suppress(Exception):
                self.start()
        if self.pid() is not None:
            with contextlib.suppress(Exception):
                ids = self.docker("ps", "-aq", check=False).stdout.split()
                if ids:
                    self.docker("rm", "-f", *ids, check=False)
            with contextlib.suppress(Exception):
                self.stop()
        for mount in sorted(_mounts_under(self.root), reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    """A process that is running (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root) + "/"
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    return [p for p in points if p.startswith(prefix)]


@contextlib.contextmanager
def private_docker(
    *, live_restore: bool = False, images: tuple[str, ...] = ()
) -> Iterator[PrivateDocker]:
    engine = PrivateDocker(live_restore=live_restore)
    try:
        engine.create_netns()
        engine.start()
        for ref in images:
            engine.load_image(ref)
        yield engine
    finally:
        engine.destroy()
