"""Path confinement: inputs only from the allowed data folders, outputs only under results.

A reviewer may run someone else's trial description; it must not be able to read files from
anywhere on the machine or write outside the project. Paths are resolved (symbolic links and
``..`` included) before they are compared. ``allow_outside_paths: true`` in
``config/config.yaml`` lifts the restriction explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from trialflow.errors import ConfigError

if TYPE_CHECKING:
    from trialflow.config import TrialConfig


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder`` once both are resolved."""
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def confine(
    path: str | Path,
    *,
    roots: Sequence[str | Path],
    project: str | Path,
    what: str,
    source: str,
    key: str,
    fix: str = "move the file under an allowed folder, add its folder to data_roots in "
    "config/config.yaml, or set allow_outside_paths: true there if you trust this "
    "trial description",
) -> Path:
    """Return ``path`` (relative paths taken from ``project``) if it lies under one of ``roots``.

    Raises
    ------
    ConfigError
        Naming the file and key that hold the path, the allowed folders and the fix.
    """
    base = Path(project)
    candidate = Path(path)
    full = candidate if candidate.is_absolute() else base / candidate
    folders = [Path(r) if Path(r).is_absolute() else base / r for r in roots]
    if any(is_inside(full, folder) for folder in folders):
        return full
    allowed = ", ".join(str(r) for r in roots) or "none"
    raise ConfigError(
        f"key {key}: {what} {str(path)!r} is outside the allowed folders ({allowed})",
        file=source,
        fix=fix,
    )


def raw_files(trial: TrialConfig) -> dict[str, str]:
    """The trial's raw files by their key under ``data:`` (``findings[0]`` for a list item)."""
    if trial.sdtm is not None:
        files = {"dm": trial.sdtm.dm}
        files.update({f"findings[{i}]": p for i, p in enumerate(trial.sdtm.findings)})
    elif trial.data_format == "redcap":
        files = {"records": trial.visits_path, "dictionary": trial.dictionary_path or ""}
    else:
        files = {"subjects": trial.subjects_path, "visits": trial.visits_path}
    if trial.adverse_events_path:
        files["adverse_events"] = trial.adverse_events_path
    if trial.screening_path:
        files["screening"] = trial.screening_path
    return files


def data_file(trial: TrialConfig, key: str, root: str | Path = ".") -> Path:
    """The raw file under ``data.<key>`` (relative to ``root``); a ConfigError if missing."""
    configured = {
        "subjects": trial.subjects_path,
        "visits": trial.visits_path,
        "adverse_events": trial.adverse_events_path or "",
        "screening": trial.screening_path or "",
        **raw_files(trial),
    }[key]
    path = Path(configured) if Path(configured).is_absolute() else Path(root) / configured
    if not path.is_file():
        raise ConfigError(
            f"key data.{key}: data file {configured} not found (looked for {path})",
            file=trial.source,
            fix=f"correct data.{key} (paths are relative to the project folder)",
        )
    return path
