"""Give freed heap memory back to the OS in the long-running torch actors (scoring, embedding).

torch's activation buffers of varying size are freed into glibc's malloc arenas, which fragment and keep the
pages: one INSPIRED scoring actor grew to ~7 GB (116 arena heaps of 64 MiB) while its twin stayed at 0.9 GB.
`malloc_trim(0)` after each batch returns every free page of every arena; pinning the mmap threshold instead
also capped the growth but made scoring ~25% slower (a page-fault storm on every forward pass).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_free_memory() -> bool:
    """glibc `malloc_trim(0)`; False where there is no glibc (macOS, musl) and nothing was done."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
