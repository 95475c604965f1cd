"""The CPU's caches as Linux lists them."""

from __future__ import annotations

from lib_codeformer.acceleration import cpu_caches


def test_the_last_level_cache_is_read_from_linuxs_listing(tmp_path):
    """The largest level's size, as lscpu reports it; 32 MiB where nothing is listed or a listing is unreadable."""
    listing = {"index0": ("1", "48K"), "index2": ("2", "2048K"), "index3": ("3", "105M"), "index9": ("x", "1G")}
    for name, (level, size) in listing.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "level").write_text(level + "\n")
        (tmp_path / name / "size").write_text(size + "\n")
    assert cpu_caches.last_level_cache_bytes.__wrapped__(tmp_path) == 105 << 20
    assert cpu_caches.last_level_cache_bytes.__wrapped__(tmp_path / "absent") == 32 << 20
    if cpu_caches.CPU_CACHES.exists():
        assert cpu_caches.last_level_cache_bytes() >= 1 << 20
