"""Handing freed memory back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def return_freed_memory() -> bool:
    """Collects garbage and asks the C allocator to return free pages to the system.

    glibc's malloc keeps freed blocks in its arenas, so a process's resident memory stays at
    its peak after a burst; ``malloc_trim(0)`` gives the free parts back. Elsewhere (musl,
    macOS) only the garbage collection runs.

    Returns:
        True when ``malloc_trim`` ran.
    """
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        trim = libc.malloc_trim if libc is not None else None
    except (OSError, AttributeError):
        return False
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True
