"""Path confinement (README, "Safety and reproducibility": "Paths are confined")."""

from __future__ import annotations

from pathlib import Path

from trialflow.paths import is_inside


def test_a_path_is_inside_its_folder_only_once_resolved(tmp_path: Path) -> None:
    """``..`` and symbolic links are resolved before the comparison: a link under data/ to a
    file elsewhere, or a path that climbs out with ``..``, is outside data/."""
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    data.mkdir()
    elsewhere.mkdir()
    (elsewhere / "secret.csv").write_text("x\n")
    (data / "visits.csv").write_text("x\n")
    (data / "link.csv").symlink_to(elsewhere / "secret.csv")
    assert is_inside(data / "visits.csv", data)
    assert not is_inside(data / "link.csv", data)
    assert not is_inside(data / ".." / "elsewhere" / "secret.csv", data)
