"""Threads for the per-slice work around the network: decoding, drawing and encoding images.

OpenCV's decoders, encoders and drawing (and much of numpy) release the GIL, so a few threads work through one
patient's slices at once: on the 2-core Xeon of ``docs/benchmarks.md``, 88 overlay PNGs took 140 ms on 2 threads
against 340 ms in one (one measurement; a 2-core machine's speed moves from minute to minute). One pool per process,
created when first needed; results come back in the order of the inputs.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Callable, Iterable, TypeVar

from gliomaseg.core.machine import available_cpus

Item = TypeVar("Item")
Result = TypeVar("Result")
MAX_THREADS = 4  # a cap for machines with more cores; only 2 were measured
_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def slice_threads() -> int:
    """Threads for per-slice work: the CPUs this process may use, at most :data:`MAX_THREADS`."""
    return max(1, min(MAX_THREADS, available_cpus()))


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:  # two server threads asking at once get one pool
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=slice_threads(), thread_name_prefix="gliomaseg-slices")
        return _executor


def _forget_pool() -> None:
    """In a forked child the parent's pool threads do not exist: start a new pool there when one is needed."""
    global _executor, _lock
    _executor, _lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def thread_map(function: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
    """``[function(item) for item in items]``, run on the slice threads.

    When a call raises (or the caller is interrupted), the calls not yet started are cancelled and the running ones
    finish before the error is raised here, so no file is written after this returns; the error raised is that of
    the first failing item in input order. Serial when there is one CPU or one item. ``function`` must not call
    :func:`thread_map` itself (the pool is shared, so a nested call could wait on its own workers).
    """
    items = list(items)
    if slice_threads() == 1 or len(items) < 2:
        return [function(item) for item in items]
    futures: list[Future] = [_pool().submit(function, item) for item in items]
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
    except BaseException:  # KeyboardInterrupt while waiting
        _settle(futures)
        raise
    if any(f.exception() is not None for f in done):
        _settle(futures)
    return [f.result() for f in futures]  # the first failing item's error, in input order


def _settle(futures: list[Future]) -> None:
    for future in futures:
        future.cancel()
    wait(futures)
