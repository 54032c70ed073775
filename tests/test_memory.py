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


def test_a_small_child_of_a_large_process_reports_its_own_peak():
    import subprocess
    import sys

    block = np.ones(400 * 2**20 // 8)  # this process now holds 400 MiB more than a fresh interpreter needs
    child = subprocess.run([sys.executable, "-c", "from components.memory import peak_rss_mb; print(peak_rss_mb())"],
                           capture_output=True, text=True, check=True)
    assert float(child.stdout) < peak_rss_mb() - 300, (child.stdout, peak_rss_mb())
    del block
