"""The README's Python examples run as written (from the project folder)."""

from __future__ import annotations

import re

import pytest

from .conftest import ROOT


def test_readme_python_examples_run(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile("\n".join(blocks), "README.md", "exec"), namespace)
    assert namespace["fit"].converged
    assert list(namespace["fit"].effects["visit"]) == ["week6", "week12"]
    assert "weightbearing - nonweightbearing" in capsys.readouterr().out
