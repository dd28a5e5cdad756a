"""The neighbour-table warning (issue 20): said when instances come near gc_thresh3, not before."""

from __future__ import annotations

from pathlib import Path

from patrd.control.host_limits import neighbour_table_warning, read_gc_thresh3


def test_warns_only_near_the_cap() -> None:
    assert neighbour_table_warning(400, 1024) is None
    assert neighbour_table_warning(512, 1024) is None
    warning = neighbour_table_warning(1000, 1024)
    assert warning is not None
    assert "gc_thresh3 = 1024" in warning and "gc_thresh3=4096" in warning
    assert "gc_thresh2=2048" in warning
    assert neighbour_table_warning(1000, 8192) is None
    assert neighbour_table_warning(10_000, None) is None  # not Linux, or not readable


def test_reads_the_sysctl_file(tmp_path: Path) -> None:
    f = tmp_path / "gc_thresh3"
    f.write_text("1024\n")
    assert read_gc_thresh3(f) == 1024
    f.write_text("junk\n")
    assert read_gc_thresh3(f) is None
    assert read_gc_thresh3(tmp_path / "absent") is None
