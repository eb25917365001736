"""Per-stage peak memory: the high-water mark starts again after each reading."""

import gc

import numpy as np
import pytest

from polyvox.sysmem import release_memory, stage_peak_mb


def test_stage_peak_sees_a_freed_buffer_and_then_starts_again():
    if stage_peak_mb() is None:
        pytest.skip("no VmHWM / clear_refs on this system")
    gc.collect()  # nothing left for a collection to free while we measure: resident memory only grows below
    release_memory()
    stage_peak_mb()  # ends whatever stage ran before (earlier tests may have peaked far higher)
    base = stage_peak_mb()  # ~ what is resident now
    buf = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
    del buf
    release_memory()  # as between stages: freed heap goes back even where malloc kept the buffer off mmap
    assert stage_peak_mb() >= base + 150  # the buffer is gone, its peak is not
    assert stage_peak_mb() < base + 100  # a new stage starts from what is resident now
