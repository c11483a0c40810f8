"""The worker's collector settings: start-up objects frozen, young generations collected rarely."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from kaizen.worker import GC_THRESHOLDS, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_tune_gc_freezes_startup_objects_and_raises_thresholds() -> None:
    gc.unfreeze()
    startup_objects = [{"built": i} for i in range(100)]
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() >= len(startup_objects)
    # Far fewer gen-0 passes than CPython's default of one per 700 container allocations.
    assert GC_THRESHOLDS[0] >= 10_000
