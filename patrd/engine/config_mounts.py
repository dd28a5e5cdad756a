"""Config mounts on the host: one directory per deployment, bind-mounted read-only at /etc/config.

Files are replaced atomically (temp file in the same directory + fsync +
rename), so a container reading a file sees the old or the new content,
never half of it, and sees it without a restart.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path


def sync_config_dir(directory: Path, files: Sequence[tuple[str, bytes]]) -> list[str]:
    """Make ``directory`` hold exactly ``files``; the names changed. Blocking: run in a thread."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    wanted = dict(files)
    changed = []
    for name, content in wanted.items():
        target = directory / name
        try:
            if target.read_bytes() == content:
                continue
        except FileNotFoundError:
            pass
        _write_atomic(target, content)
        changed.append(name)
    for entry in directory.iterdir():
        if entry.name not in wanted and not entry.name.startswith(".patrd-tmp-"):
            entry.unlink(missing_ok=True)
            changed.append(entry.name)
    return changed


def remove_config_dir(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def _write_atomic(target: Path, content: bytes) -> None:
    tmp = target.with_name(f".patrd-tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.replace(tmp, target)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def directory_bytes(path: str) -> int:
    """Bytes used by the files under ``path`` (a volume's mountpoint). Blocking."""
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total
