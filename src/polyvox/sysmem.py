"""Handing freed heap memory back to the system (glibc), so long jobs and servers keep a flat footprint."""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable


def _malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim, or a no-op elsewhere."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


trim_heap = _malloc_trim()
"""Return freed heap blocks to the system (cheap enough to call after every server batch)."""


def release_memory() -> None:
    """Collect garbage and return freed heap blocks to the system.

    Loading a model, decoding audio or running a batch allocates and frees large buffers whose sizes vary;
    glibc keeps such freed blocks in its heaps, so resident memory creeps up with every new size. Calling
    this between stages (after encoding a corpus, after loading a model) and after each server batch keeps
    the footprint at what is really in use.
    """
    gc.collect()
    trim_heap()


def stage_peak_mb() -> float | None:
    """Peak resident memory (MiB) since the last call, then start a new peak (Linux: VmHWM, reset through
    /proc/self/clear_refs); None where the kernel does not offer it. For per-stage memory reports."""
    try:
        with open("/proc/self/status") as f:
            peak = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except (OSError, StopIteration):
        return None
    return peak
