"""Keep freed memory for reuse while training on the CPU (glibc's malloc, Linux).

Every training step allocates and frees the same large tensors: the (steps × catalog) score matrix,
its softmax and gradient — 87 MB at ML-1M's size, 1.4 GB for a 20,000-item catalog. glibc serves any
block above 32 MB with a fresh mmap and hands it back to the kernel on free, so the next step faults
every page in again. With mmap off and a high trim threshold (`mallopt`), freed blocks stay in the
heap and the next step reuses them: on 2 cores a step took 704 instead of 886 ms at ML-1M's size (1.26x)
and 2,347 instead of 3,134 ms with 20,000 items (1.34x; `benchmarks/train_speed.py --compare-malloc`,
`benchmarks/results/train_speed_malloc.json`). The price is memory the process keeps after the peak
(peak RSS 2.35 instead of 1.78 GB at ML-1M's size), so it is applied while a model trains only
(`train.reuse_memory`), never to the service: once a fit ends, the defaults come back and the kept heap is handed
back (`release_freed_memory`), so a retrain's evaluation, export and packaging do not run on top of it.

Elsewhere than glibc (macOS, musl) nothing is changed and `reuse_freed_memory` returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's defaults, restored by reuse_freed_memory(False)
DEFAULT_MMAP_MAX = 65536
KEEP_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: about 2 GiB of free heap top kept before trimming


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # only glibc has it (and mallopt with these parameters)
    except (OSError, AttributeError):
        return None
    return libc


def reuse_freed_memory(enabled: bool = True) -> bool:
    """Keep freed large blocks in the heap for reuse (True), or go back to glibc's default limits (False:
    mmap for large blocks, trim at 128 KiB; glibc's dynamic mmap threshold, off after any mallopt call,
    stays off). Returns whether the setting is in effect; False where malloc is not glibc's."""
    libc = _glibc()
    if libc is None:
        return False
    mmap_max, trim = (0, KEEP_TRIM_THRESHOLD) if enabled else (DEFAULT_MMAP_MAX, DEFAULT_TRIM_THRESHOLD)
    return libc.mallopt(M_MMAP_MAX, mmap_max) == 1 and libc.mallopt(M_TRIM_THRESHOLD, trim) == 1


def release_freed_memory() -> bool:
    """Hand the heap's free memory back to the kernel (glibc's malloc_trim(0)): what reuse_freed_memory kept for the
    next training step. Returns whether any was released; False where malloc is not glibc's."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))
