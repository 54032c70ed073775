"""How much memory this process holds: what a work pool's memory request has to cover.

`rss_mb` is the resident set now; `peak_rss_mb` the most it has held since it started (the kernel's
high-water mark, which includes every stage before training, such as loading the language model).
"""

from __future__ import annotations

import sys

import psutil

MB = 2**20


def rss_mb() -> float:
    """Resident memory of this process now, in MiB."""
    return psutil.Process().memory_info().rss / MB


def peak_rss_mb() -> float:
    """The highest resident memory of this process so far, in MiB."""
    if sys.platform.startswith("linux"):
        # VmHWM: this process's own high-water mark. Not getrusage's ru_maxrss, which a process started by
        # another inherits at fork and keeps across exec: a small child of a large parent reports the parent's.
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    if sys.platform == "win32":
        return psutil.Process().memory_info().peak_wset / MB
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / MB if sys.platform == "darwin" else peak / 1024
