"""The one time stamp written into exchange files (SAS transport, Word): fixed, not the clock.

SAS transport headers and Word's document properties carry a creation time, and a Word file is
a zip archive whose members carry one too. With the clock there, two runs on the same input
would differ. :func:`build_time` follows ``SOURCE_DATE_EPOCH`` (seconds since 1970, UTC; the
reproducible-builds convention, also followed by the report's time stamp) and is 1970-01-01
00:00:00 UTC when it is not set.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from trialflow.errors import ConfigError

__all__ = ["build_time"]


def build_time() -> datetime:
    """``SOURCE_DATE_EPOCH`` as a UTC time, or the start of 1970 when it is not set."""
    text = os.environ.get("SOURCE_DATE_EPOCH", "").strip() or "0"
    if not text.isdigit():
        raise ConfigError(
            f"SOURCE_DATE_EPOCH is {text!r}, not a whole number of seconds",
            fix="set SOURCE_DATE_EPOCH to seconds since 1970-01-01 UTC (e.g. 1764115200), "
            "or unset it",
        )
    return datetime.fromtimestamp(int(text), UTC)
