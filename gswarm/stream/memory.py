"""Give the heap's free memory back to the operating system (glibc's ``malloc_trim``).

A worker's working set rises and falls with its batches: under a backlog one batch holds
up to ``GSWARM_BATCH_RUNS`` fetches of ``GSWARM_FETCH_PARTITION_BYTES`` each, tens of
thousands of ticks as Python objects, segments and datoms. Freed, most of that memory
stays in glibc's heaps, fragmented between live blocks, and counts in the process's RSS
until a later batch reuses it; so RSS climbed to the high-water mark of the largest
batches and stayed there (a lean worker at 100,000 markets and 5,000 ticks/s: 288 to 338
MB within one 15 s sample, at a backlog of 16,000 ticks, and never back).
``malloc_trim(0)`` returns the free pages of every heap (in 10-23 ms for this worker;
33-60 MB each time, measured 2026-11-29).

:func:`trimmer` finds it in the process's C library; elsewhere (musl, macOS) there is
none and nothing is trimmed. The worker calls it from a thread every
``GSWARM_MEMORY_TRIM_S`` seconds (:mod:`gswarm.stream.agents`), so the event loop never
waits for it.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable


def trimmer() -> Callable[[], bool] | None:
    """A function returning the heap's free memory to the OS (True if it released any),
    or None when the C library has no ``malloc_trim``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library this process runs on
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release() -> bool:
        return bool(trim(0))

    return release
