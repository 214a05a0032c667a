"""Independent pieces of a job's work side by side in worker processes, when it has threads.

The outcomes of a trial are independent analyses; so are the figures of a trial, and the
fixed chunks of bootstrap samples or imputations of one outcome. Every random stream is
derived from the seed, the outcome and the sample's number (never from the order of work),
and the chunks are cut the same way whatever the number of workers, so results do not depend
on it. Results come back in the order of the items.

The workers are forked: they inherit the loaded modules and the data, and only an item's
index crosses to them (the data behind a task is never pickled), only its result comes back.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

import numpy as np

__all__ = ["PARALLEL_SUBJECTS", "chunks", "fork_imap", "fork_map", "split_workers"]

T = TypeVar("T")
R = TypeVar("R")

# The task of the pool being started: set before the workers fork, so they inherit it.
_TASK: Callable[[int], Any] | None = None


def _one_blas_thread() -> None:
    # Each worker is one of the job's threads: BLAS must not start more.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def _run(index: int) -> Any:
    assert _TASK is not None
    return _TASK(index)


def fork_imap(func: Callable[[T], R], items: Sequence[T], workers: int = 1) -> Iterator[R]:
    """``func(item)`` for each item in order, on up to ``workers`` forked processes, each result
    yielded as soon as it and those before it are done (a caller that stores them as they come
    never holds them twice)."""
    global _TASK
    workers = min(workers, len(items))
    if workers <= 1 or _TASK is not None:
        # One worker, or already inside a pool's task: in this process.
        yield from (func(item) for item in items)
        return
    _TASK = lambda i: func(items[i])  # noqa: E731
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_blas_thread) as pool:
            yield from pool.map(_run, range(len(items)))
    finally:
        _TASK = None


def fork_map(func: Callable[[T], R], items: Sequence[T], workers: int = 1) -> list[R]:
    """``[func(item) for item in items]``, on up to ``workers`` forked processes."""
    return list(fork_imap(func, items, workers))


# Work is cut into at least this many chunks (of at least _LEAST items each), so that the
# workers of a job share it evenly; the cut depends only on the work, never on the workers.
_PIECES, _LEAST = 8, 16


def chunks(n: int, most: int) -> list[np.ndarray]:
    """Indices ``0..n-1`` in consecutive chunks of at most ``most`` items, cut into at least 8
    chunks while each keeps 16 items: the same cut for any number of workers."""
    size = max(1, min(most, max(_LEAST, math.ceil(n / _PIECES))))
    return [np.arange(first, min(n, first + size)) for first in range(0, n, size)]


# Below this many subjects an outcome's own work takes less time than starting its workers
# (at 1,000 subjects the sensitivity analyses took 0.45 s in one process and 0.75 s on two).
PARALLEL_SUBJECTS = 5_000


def split_workers(workers: int, outcomes: int, subjects: int) -> tuple[int, int]:
    """Workers across outcomes, and within each outcome: a trial with fewer outcomes than
    workers gives each outcome's own chunks the workers its outcomes leave idle, when it has
    at least :data:`PARALLEL_SUBJECTS` subjects."""
    across = max(1, min(workers, outcomes))
    within = max(1, workers // across) if subjects >= PARALLEL_SUBJECTS else 1
    return across, within
