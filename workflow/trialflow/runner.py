"""Glue between Snakemake ``script:`` jobs and trialflow functions.

Scripts stay thin: they call :func:`run_script` with a function that reads
``snakemake.input``, calls the library and writes ``snakemake.output``. Logging goes to the
rule's log file. A :class:`~trialflow.errors.TrialflowError` ends the job with its message on
standard error (no traceback); any other exception is a bug, so its traceback goes to the log
file and a one-line pointer to standard error. ``--config debug=true`` shows tracebacks.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from threadpoolctl import threadpool_limits

from trialflow.errors import TrialflowError

logger = logging.getLogger("trialflow")


def setup_logging(log_path: str | None) -> None:
    """Send trialflow's log records to ``log_path`` (the rule's ``log:``), or stderr."""
    handler: logging.Handler = (
        logging.FileHandler(log_path, mode="w", encoding="utf-8")
        if log_path
        else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)


# Errors of the storage, not of trialflow: what happened and what to do.
_STORAGE = {
    errno.ENOSPC: ("the disk is full", "free space on that disk (or set results_dir to another "
                   "disk) and rerun"),
    errno.EDQUOT: ("the disk quota is exhausted", "free space within your quota and rerun"),
    errno.EROFS: ("the file system is read-only", "set results_dir to a writable folder"),
    errno.EACCES: ("permission denied", "make the results folder writable for you, or set "
                   "results_dir to a folder you can write"),
}  # fmt: skip


def storage_problem(exc: BaseException) -> TrialflowError | None:
    """A clear error for a full, read-only or forbidden disk; None for anything else."""
    if not isinstance(exc, OSError) or exc.errno not in _STORAGE:
        return None
    what, fix = _STORAGE[exc.errno]
    where = exc.filename or "an output file"
    folder = os.path.dirname(os.path.abspath(where)) if exc.filename else "the results folder"
    return TrialflowError(f"{what}: could not write {where} (in {folder})", fix=fix)


def run_script(smk: Any, main: Callable[[Any], None]) -> None:
    """Run ``main(smk)`` for a Snakemake script job with logging and friendly errors."""
    log_path = str(smk.log[0]) if len(smk.log) else None
    setup_logging(log_path)
    debug = bool(smk.config.get("debug", False))
    rule = getattr(smk, "rule", "?")
    try:
        # One BLAS thread per process: a job's threads are its worker processes
        # (trialflow.parallel). A BLAS on several threads would sum in another order, so the
        # last digits would depend on the cores given; parallel jobs would oversubscribe the
        # cores, and small matrix calls spin on idle threads.
        with threadpool_limits(limits=1):
            main(smk)
    except TrialflowError as exc:
        logger.error("%s", exc)
        if debug:
            raise
        sys.stderr.write(f"\ntrialflow error in step {rule!r}:\n{exc}\n\n")
        sys.exit(1)
    except Exception as exc:
        storage = storage_problem(exc)
        if storage is not None and not debug:
            logger.error("%s", storage)
            sys.stderr.write(f"\ntrialflow error in step {rule!r}:\n{storage}\n\n")
            sys.exit(1)
        logger.error("unexpected error\n%s", traceback.format_exc())
        if debug:
            raise
        sys.stderr.write(
            f"\ntrialflow: unexpected error in step {rule!r} (a bug; please report it). "
            f"The details are in {log_path}; rerun with --config debug=true to see them here.\n\n"
        )
        sys.exit(1)


def _named(files: Any) -> dict[str, str]:
    """The named files of a Snakemake input or output list (or of a plain namespace)."""
    items = files.items() if hasattr(files, "items") else vars(files).items()
    return {str(k): str(v) for k, v in items}


def run_step(smk: Any, step: str) -> None:
    """Run one step of :mod:`trialflow.steps` ("all": every step of a trial) for a job."""

    def main(smk: Any) -> None:
        from trialflow import steps

        paths = {**_named(smk.input), **_named(smk.output)}
        if step == "report_pdf":
            steps.report_pdf(paths)
            return
        from trialflow.config import load_trial

        trial = load_trial(paths["trial"], name=smk.wildcards.trial)
        workers = max(int(getattr(smk, "threads", 1) or 1), 1)
        (steps.run_all if step == "all" else steps.STEPS[step])(paths, trial, workers)

    run_script(smk, main)
