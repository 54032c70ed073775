import numpy as np

from components.memory import peak_rss_mb, rss_mb


def test_resident_memory_follows_an_allocation_and_the_peak_keeps_it():
    before = rss_mb()
    block = np.ones(300 * 2**20 // 8)  # 300 MiB, every page written
    during = rss_mb()
    assert 250 < during - before < 400, (before, during)
    assert peak_rss_mb() >= during - 1
    del block
    assert peak_rss_mb() >= during - 1  # the high-water mark stays after the memory is freed
