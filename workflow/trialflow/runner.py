"""Glue between Snakemake ``script:`` jobs and trialflow functions.

Scripts stay thin: they call :func:`run_script` with a function that reads
``snakemake.input``, calls the library and writes ``snakemake.output``. Logging goes to the
rule's log file. A :class:`~trialflow.errors.TrialflowError` ends the job with its message on
standard error (no traceback); any other exception is a bug, so its traceback goes to the log
file and a one-line pointer to standard error. ``--config debug=true`` shows tracebacks.
"""

from __future__ import annotations

import logging
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


def run_script(smk: Any, main: Callable[[Any], None]) -> None:
    """Run ``main(smk)`` for a Snakemake script job with logging and friendly errors."""
    log_path = str(smk.log[0]) if len(smk.log) else None
    setup_logging(log_path)
    debug = bool(smk.config.get("debug", False))
    rule = getattr(smk, "rule", "?")
    try:
        # BLAS threads never exceed the job's threads: parallel jobs would otherwise
        # oversubscribe the cores, and small matrix calls spin on idle threads.
        with threadpool_limits(limits=max(int(getattr(smk, "threads", 1) or 1), 1)):
            main(smk)
    except TrialflowError as exc:
        logger.error("%s", exc)
        if debug:
            raise
        sys.stderr.write(f"\ntrialflow error in step {rule!r}:\n{exc}\n\n")
        sys.exit(1)
    except Exception:
        logger.error("unexpected error\n%s", traceback.format_exc())
        if debug:
            raise
        sys.stderr.write(
            f"\ntrialflow: unexpected error in step {rule!r} (a bug; please report it). "
            f"The details are in {log_path}; rerun with --config debug=true to see them here.\n\n"
        )
        sys.exit(1)
