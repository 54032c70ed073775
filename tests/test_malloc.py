"""train.reuse_memory: glibc keeps freed large blocks in the heap instead of mmap-ing each one afresh
(components/training/malloc.py). Checked through glibc's own accounting (mallinfo2), in a fresh
process each time: malloc's state is per process, and training in this one has set it already."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import ctypes, json, sys
from components.training.malloc import _glibc, reuse_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = _glibc()
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else None
size = 64 * 2**20  # above glibc's largest mmap threshold (32 MiB): mmap-ed by default
held = []
for _ in range(3):  # allocate, free, allocate again: reuse serves the later ones from the kept heap
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(size)
    held.append(libc.mallinfo2().hblkhd - before)
    libc.free(block)
print(json.dumps({"applied": applied, "mmapped": held}))
"""


def probe(setting: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, setting], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_reuse_keeps_large_blocks_out_of_mmap_where_the_default_maps_each_one():
    size = 64 * 2**20
    default = probe("default")
    assert default["mmapped"] == [default["mmapped"][0]] * 3 and default["mmapped"][0] >= size  # a fresh mmap every time
    reuse = probe("reuse")
    assert reuse == {"applied": True, "mmapped": [0, 0, 0]}  # from the heap, which keeps the block after free
