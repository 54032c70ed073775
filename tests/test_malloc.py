"""train.reuse_memory: glibc keeps freed large blocks in the heap instead of mmap-ing each one afresh
(components/training/malloc.py). Checked through glibc's own accounting (mallinfo2), in a fresh
process each time: malloc's state is per process, and training in this one has set it already."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# glibc's malloc, free and accounting (mallinfo2), for the probes below
GLIBC = """
import ctypes, json, sys
from components.training.malloc import _glibc, release_freed_memory, reuse_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = _glibc()
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
"""

PROBE = GLIBC + """
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


RELEASE = GLIBC + """
reuse_freed_memory()
blocks = [libc.malloc(64 * 2**20) for _ in range(3)]  # a training step's score matrices, in the heap
for block in blocks:
    libc.free(block)
kept, before = libc.mallinfo2().fordblks, libc.mallinfo2().arena  # free, but kept by the heap for the next step
reuse_freed_memory(False)
released = release_freed_memory()
print(json.dumps({"kept": kept, "released": released, "before": before, "after": libc.mallinfo2().arena}))
"""


def test_the_heap_kept_for_training_is_handed_back_when_training_ends():
    # train_model keeps freed steps' memory for the next step; after the fit a retrain's evaluation, export and
    # packaging ran on top of up to 2 GiB it no longer used (a 20,000-item shop: ~1.3 GB of its 2.6 GB peak).
    out = subprocess.run([sys.executable, "-c", RELEASE], cwd=ROOT, capture_output=True, text=True, check=True)
    sizes = json.loads(out.stdout)
    assert sizes["kept"] >= 3 * 64 * 2**20 and sizes["released"] is True
    assert sizes["before"] - sizes["after"] >= 3 * 64 * 2**20  # the heap shrank: the kernel has the memory again


def test_train_model_hands_the_kept_heap_back_when_it_ends(monkeypatch):
    import numpy as np

    from components.training import train as training
    from tests.test_model import N_ITEMS, tiny

    calls = []
    monkeypatch.setattr(training, "reuse_freed_memory", lambda enabled=True: calls.append(("reuse", enabled)) or True)
    monkeypatch.setattr(training, "release_freed_memory", lambda: calls.append(("release",)) or True)
    seqs = [np.array([(s + t) % N_ITEMS + 1 for t in range(6)]) for s in range(N_ITEMS)]
    valid = ([s[:-1] for s in seqs], np.array([s[-1] for s in seqs]))
    training.train_model(tiny(cold=0), seqs, valid, training.TrainConfig(max_epochs=1, batch_size=64, progress=False, device="cpu"))
    assert calls == [("reuse", True), ("reuse", False), ("release",)]
