"""A plain-text table of benchmark rows, right-aligned, one column per (key, title)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def render(columns: Sequence[tuple[str, str]], rows: list[dict[str, Any]]) -> str:
    head = [title for _, title in columns]
    cells = [[str(r.get(key)) for key, _ in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)
