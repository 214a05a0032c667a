"""Outcomes analysed side by side in worker processes, when a job has several threads.

The outcomes of a trial are independent analyses, and every random stream is derived from
the seed and the outcome (never from the order of work), so results do not depend on the
number of workers. Results come back in the order of the items.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

__all__ = ["map_outcomes"]

T = TypeVar("T")
R = TypeVar("R")


def _one_blas_thread() -> None:
    # Each worker is one of the job's threads: BLAS must not start more.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def map_outcomes(func: Callable[[T], R], items: Sequence[T], workers: int = 1) -> list[R]:
    """``[func(item) for item in items]``, on up to ``workers`` processes."""
    workers = min(workers, len(items))
    if workers <= 1:
        return [func(item) for item in items]
    # fork: the workers inherit the loaded modules and the data (no re-import, no re-read).
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_blas_thread) as pool:
        return list(pool.map(func, items))
