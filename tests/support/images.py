"""Locally built test images for patrd (no registry, no pulls).

Three images are built with ``docker import`` from a rootfs assembled here:

* ``patrd-test/web:v1`` and ``patrd-test/web:v2``: busybox ``httpd`` on port 80
  serving ``/www`` (``index.html`` says ``hello from v1``/``v2``) plus
  ``websocketd --port=8081 cat`` in the background.
* ``patrd-test/web:broken``: same files, but ``/start.sh`` only sleeps, so it
  never answers HTTP (for failed-rollout tests).

The rootfs holds ``/bin/busybox`` (Debian ``busybox-static``) with a symlink per
applet (``busybox --list``), ``/usr/bin/websocketd`` with the shared libraries
``ldd`` reports for it at the same paths, and ``/tmp`` with mode 1777.

HTTP endpoints (busybox httpd CGI, ``/www/cgi-bin``):

* ``GET /`` → ``hello from v1\\n``
* ``GET /cgi-bin/health`` → 200 ``ok`` or, while ``/tmp/unhealthy`` exists in
  the container or the container's env has a non-empty ``UNHEALTHY``,
  ``500 unhealthy`` (toggle with ``docker exec C touch /tmp/unhealthy`` /
  ``rm -f /tmp/unhealthy``).
* ``GET /cgi-bin/env`` → the CGI environment (``env``) as text/plain.
* ``GET /cgi-bin/slow`` → 5 lines, one per second, streamed (no
  Content-Length; the body ends when the connection closes).
* ``GET /cgi-bin/version`` → ``v1\\n`` / ``v2\\n`` / ``broken\\n``.
* ``GET /cgi-bin/burn?seconds=N&procs=K`` → starts K background ``yes``
  processes for N seconds (CPU load for autoscaler tests) and answers at once.

Environment switches of ``/start.sh`` (v1, v2): it prints
``start <hostname> revision <PATRD_REVISION>`` on stdout first; ``BURN=K``
runs K ``yes > /dev/null`` from the start (exactly K cores, for metrics
accuracy); ``LOG_EVERY=S`` prints ``line <n> from <hostname>`` every S
seconds, odd n on stderr and even n on stdout (for logs tests).

WebSocket on port 8081 (websocketd in front of one ``cat`` process per
connection, any path): websocketd writes every incoming message to the
process's stdin followed by ``"\\n"`` and sends every line the process writes
to stdout back as one *text* message, without its newline. So with ``cat``:

* text ``"ping"`` → one text message ``"ping"``;
* text ``"ping\\n"`` → stdin receives ``"ping\\n\\n"`` → two messages,
  ``"ping"`` and ``""``;
* text ``"a\\nb"`` → two messages ``"a"`` and ``"b"``;
* a 100 kB text message comes back whole, as one message;
* a *binary* frame is written to stdin as is, with no newline appended, so
  nothing comes back until a newline arrives: binary ``b"bin"`` then text
  ``"after"`` → one text message ``"binafter"`` (websocketd without
  ``--binary`` only ever sends text frames).

Send text messages without a trailing newline to get an exact echo. Each
connection gets its own ``cat``; on disconnect websocketd logs harmless
``Unexpected error while reading STDOUT ... file already closed`` lines.

Images carry ``LABEL patrd.test=1`` and ``LABEL patrd.test.hash=<sha256>`` of
everything that goes into them (rootfs tar bytes and ``--change`` list); a
build is skipped when the ref already exists with that hash.

Run ``python -m tests.support.images [--force]`` to build and print the refs.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = ["IMAGE_REPO", "ImageBuildError", "build_test_images"]

IMAGE_REPO = "patrd-test/web"
HASH_LABEL = "patrd.test.hash"
VARIANTS: tuple[str, ...] = ("v1", "v2", "broken")

BUSYBOX = Path("/bin/busybox")
WEBSOCKETD = Path("/usr/bin/websocketd")

# Bump to force a rebuild when the layout changes in a way the tar bytes
# would not show (they always would, but this keeps the intent explicit).
_FORMAT = "patrd-test-image/1"
# Fixed metadata so the same inputs give the same tar bytes (and hash).
_MTIME = 1_700_000_000

# Applets that must exist even if `busybox --list` were to fail to list them.
_REQUIRED_APPLETS: tuple[str, ...] = (
    "sh", "httpd", "cat", "sleep", "ls", "echo", "env", "nc", "wget", "mkdir", "rm",
    "touch", "printf", "date", "sha1sum", "base64", "head", "grep", "hostname", "ps",
    "kill", "dd", "yes",
)  # fmt: skip

_HEALTH_CGI = """\
#!/bin/sh
# 500 while /tmp/unhealthy exists or $UNHEALTHY is set, 200 otherwise. "Status:" must be the first
# header line for busybox httpd to turn it into the status line.
if [ -e /tmp/unhealthy ] || [ -n "$UNHEALTHY" ]; then
    printf 'Status: 500 unhealthy\\r\\nContent-Type: text/plain\\r\\n\\r\\nunhealthy\\n'
else
    printf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'
fi
"""

_ENV_CGI = """\
#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
env
"""

_SLOW_CGI = """\
#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
i=1
while [ "$i" -le 5 ]; do
    echo "line $i"
    [ "$i" -lt 5 ] && sleep 1
    i=$((i + 1))
done
"""

_BURN_CGI = """\
#!/bin/sh
# /cgi-bin/burn?seconds=N&procs=K: K background `yes` for N seconds (default 30 s, 1).
seconds=30
procs=1
for pair in $(echo "$QUERY_STRING" | tr '&' ' '); do
    case "$pair" in
        seconds=*) seconds=${pair#seconds=} ;;
        procs=*) procs=${pair#procs=} ;;
    esac
done
i=0
while [ "$i" -lt "$procs" ]; do
    timeout "$seconds" yes > /dev/null 2>&1 < /dev/null &
    i=$((i + 1))
done
printf 'Content-Type: text/plain\\r\\n\\r\\nburning %s x %ss\\n' "$procs" "$seconds"
"""

_VERSION_CGI = """\
#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' '{version}'
"""

_START_WEB = """\
#!/bin/sh
echo "start $(hostname) revision ${PATRD_REVISION:-?}"
if [ -n "$BURN" ]; then
    # Burn exactly $BURN cores from the start (metrics accuracy tests).
    i=0
    while [ "$i" -lt "$BURN" ]; do yes > /dev/null & i=$((i + 1)); done
fi
if [ -n "$LOG_EVERY" ]; then
    # A numbered line every $LOG_EVERY seconds, odd ones on stderr (logs tests).
    ( n=0; while true; do
        n=$((n + 1))
        if [ $((n % 2)) -eq 1 ]; then echo "line $n from $(hostname)" >&2
        else echo "line $n from $(hostname)"; fi
        sleep "$LOG_EVERY"
    done ) &
fi
websocketd --port=8081 cat &
exec httpd -f -p 80 -h /www
"""

_START_BROKEN = """\
#!/bin/sh
# Never serves HTTP: used to test failed rollouts.
exec sleep 100000
"""

_PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"


class ImageBuildError(RuntimeError):
    """A test image could not be built (missing tool or docker failure)."""


@dataclass(frozen=True)
class _Entry:
    path: str  # absolute, inside the image
    kind: str  # "dir", "file" or "symlink"
    mode: int
    data: bytes = b""
    target: str = ""


def build_test_images(force: bool = False) -> dict[str, str]:
    """Build (or reuse) the test images; return {"v1"|"v2"|"broken": image ref}."""
    _require_tools()
    common = _common_entries()
    refs: dict[str, str] = {}
    for variant in VARIANTS:
        ref = f"{IMAGE_REPO}:{variant}"
        tar_bytes = _tar(common + _variant_entries(variant))
        changes = [
            'CMD ["/start.sh"]',
            "EXPOSE 80",
            "ENV PATH=/bin:/usr/bin",
            "WORKDIR /",
            "LABEL patrd.test=1",
            f"LABEL patrd.test.variant={variant}",
        ]
        digest = hashlib.sha256()
        digest.update(_FORMAT.encode())
        digest.update(b"\0".join(c.encode() for c in changes))
        digest.update(tar_bytes)
        content_hash = digest.hexdigest()
        if force or _existing_hash(ref) != content_hash:
            _import(ref, tar_bytes, [*changes, f"LABEL {HASH_LABEL}={content_hash}"])
        refs[variant] = ref
    return refs


def _require_tools() -> None:
    missing = [str(p) for p in (BUSYBOX, WEBSOCKETD) if not p.is_file()]
    if shutil.which("docker") is None:
        missing.append("docker (CLI)")
    if missing:
        raise ImageBuildError(
            "cannot build test images, missing: "
            + ", ".join(missing)
            + " (run scripts/setup: busybox-static, websocketd, docker.io)"
        )


def _run(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, input=stdin, capture_output=True, check=False)


def _existing_hash(ref: str) -> str | None:
    proc = _run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", ref])
    if proc.returncode != 0:
        return None  # no such image (or engine down: the import will say so)
    labels = json.loads(proc.stdout or b"null") or {}  # null: an image without labels
    value = labels.get(HASH_LABEL)
    return value if isinstance(value, str) else None


def _import(ref: str, tar_bytes: bytes, changes: list[str]) -> None:
    old_id = _image_id(ref)
    args = ["docker", "import"]
    for change in changes:
        args += ["--change", change]
    args += ["-", ref]
    proc = _run(args, stdin=tar_bytes)
    if proc.returncode != 0:
        raise ImageBuildError(
            f"docker import {ref} failed (exit {proc.returncode}): "
            + proc.stderr.decode(errors="replace").strip()
        )
    new_id = _image_id(ref)
    if old_id is not None and old_id != new_id:
        # Drop the superseded image if nothing uses it any more (best effort).
        _run(["docker", "image", "rm", old_id])


def _image_id(ref: str) -> str | None:
    proc = _run(["docker", "image", "inspect", "--format", "{{.Id}}", ref])
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def _applets() -> list[str]:
    proc = _run([str(BUSYBOX), "--list"])
    listed = proc.stdout.decode().split() if proc.returncode == 0 else []
    names = set(listed) | set(_REQUIRED_APPLETS)
    names.discard("busybox")
    return sorted(n for n in names if n and "/" not in n)


def _shared_libraries(binary: Path) -> list[Path]:
    """Paths of the shared objects `ldd` lists for binary (none if static)."""
    proc = _run(["ldd", str(binary)])
    if proc.returncode != 0:
        return []  # "not a dynamic executable"
    libs: list[Path] = []
    for line in proc.stdout.decode().splitlines():
        parts = line.split()
        if "=>" in parts:
            i = parts.index("=>")
            candidate = parts[i + 1] if i + 1 < len(parts) else ""
        else:
            candidate = parts[0] if parts else ""
        if candidate.startswith("/"):
            libs.append(Path(candidate))
    return libs


def _common_entries() -> list[_Entry]:
    entries: list[_Entry] = [
        _Entry(d, "dir", 0o755)
        for d in ("/bin", "/dev", "/etc", "/proc", "/root", "/sys", "/usr/bin", "/www")
    ]
    entries.append(_Entry("/tmp", "dir", 0o1777))
    entries.append(_Entry("/bin/busybox", "file", 0o755, BUSYBOX.read_bytes()))
    entries += [_Entry(f"/bin/{name}", "symlink", 0o777, target="busybox") for name in _applets()]
    entries.append(_Entry(str(WEBSOCKETD), "file", 0o755, WEBSOCKETD.read_bytes()))
    # Copy the real file behind each path ldd reports (Debian 12's /lib and
    # /lib64 are symlinks into /usr; in the image they become real files).
    entries += [
        _Entry(str(lib), "file", 0o755, lib.read_bytes()) for lib in _shared_libraries(WEBSOCKETD)
    ]
    entries.append(_Entry("/etc/passwd", "file", 0o644, _PASSWD.encode()))
    entries.append(_Entry("/etc/group", "file", 0o644, _GROUP.encode()))
    entries.append(_Entry("/www/cgi-bin/health", "file", 0o755, _HEALTH_CGI.encode()))
    entries.append(_Entry("/www/cgi-bin/env", "file", 0o755, _ENV_CGI.encode()))
    entries.append(_Entry("/www/cgi-bin/slow", "file", 0o755, _SLOW_CGI.encode()))
    entries.append(_Entry("/www/cgi-bin/burn", "file", 0o755, _BURN_CGI.encode()))
    return entries


def _variant_entries(variant: str) -> list[_Entry]:
    start = _START_BROKEN if variant == "broken" else _START_WEB
    return [
        _Entry("/www/index.html", "file", 0o644, f"hello from {variant}\n".encode()),
        _Entry(
            "/www/cgi-bin/version", "file", 0o755, _VERSION_CGI.format(version=variant).encode()
        ),
        _Entry("/start.sh", "file", 0o755, start.encode()),
    ]


def _tar(entries: list[_Entry]) -> bytes:
    """A deterministic tar of entries, parent directories added as needed."""
    by_path: dict[str, _Entry] = {}
    for entry in entries:
        for parent in PurePosixPath(entry.path).parents:
            if str(parent) != "/":
                by_path.setdefault(str(parent), _Entry(str(parent), "dir", 0o755))
        by_path[entry.path] = entry
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path in sorted(by_path):
            entry = by_path[path]
            info = tarfile.TarInfo(path.lstrip("/"))
            info.mode = entry.mode
            info.mtime = _MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.target
                tar.addfile(info)
            else:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
    return buf.getvalue()


def main(argv: list[str]) -> int:
    force = "--force" in argv
    try:
        refs = build_test_images(force=force)
    except ImageBuildError as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    for variant, ref in refs.items():
        print(f"{variant}\t{ref}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
