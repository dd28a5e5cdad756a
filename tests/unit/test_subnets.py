from __future__ import annotations

import pytest

from patrd.engine.subnets import pick_subnet, validate_pool


@pytest.mark.parametrize(
    ("used", "expected"),
    [
        ([], "10.213.0.0/24"),
        (["10.213.0.0/24"], "10.213.1.0/24"),
        (["10.213.0.0/23"], "10.213.2.0/24"),
        (["10.0.0.0/8"], None),
        (["172.17.0.0/16", "not a net", "10.213.1.0/24"], "10.213.0.0/24"),
    ],
)
def test_pick_subnet(used, expected):
    assert pick_subnet("10.213.0.0/16", 24, used) == expected


def test_pool_fills_up():
    used = [f"10.213.0.{i * 64}/26" for i in range(4)]
    assert pick_subnet("10.213.0.0/24", 26, used) is None


@pytest.mark.parametrize(
    ("pool", "prefix", "ok"),
    [
        ("10.213.0.0/16", 24, True),
        ("10.213.0.0/16", 8, False),
        ("nope", 24, False),
        ("10.213.0.0/16", 31, False),
    ],
)
def test_validate_pool(pool, prefix, ok):
    assert (validate_pool(pool, prefix) is None) is ok
