"""The rules hash a managed nft table carries in its comment (pure).

Both of patrd's tables (the daemon's, ``rules.py``; an agent's node fence,
``node_fence.py``) name the hash of their rules in the table's comment, so
that a keeper can tell from a listing whether the loaded rules are the
desired ones without comparing nft's normalised text.
"""

from __future__ import annotations

import hashlib

__all__ = ["hash_in_comment", "rules_hash"]


def rules_hash(body: str) -> str:
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()[:16]


def hash_in_comment(text: str, prefix: str) -> str | None:
    """The rules hash after ``prefix`` in a rendered or listed table's comment, if any."""
    marker = f'comment "{prefix}'
    start = text.find(marker)
    if start < 0:
        return None
    start += len(marker)
    end = text.find('"', start)
    return text[start:end] if end > start else None
