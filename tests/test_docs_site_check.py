"""docs/check_site.py, the link and image check of `make docs`, on a small site made here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "check_site", Path(__file__).resolve().parent.parent / "docs" / "check_site.py"
)
check_site = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(check_site)


def _page(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<!DOCTYPE html><html><body>{body}</body></html>", encoding="utf-8")


def test_reports_exactly_the_broken_references(tmp_path: Path) -> None:
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "plot.png").write_bytes(b"\x89PNG")
    _page(tmp_path / "guide" / "index.html", '<h2 id="solvers">Solvers</h2><a name="old">x</a>')
    _page(
        tmp_path / "index.html",
        '<a href="guide/index.html#solvers">ok</a> <a href="guide/#old">ok</a> <a href="#top">ok</a>'
        '<p id="top"></p><img src="_images/plot.png"> <a href="https://example.org/missing">ext</a>'
        '<a href="guide/index.html#nowhere">bad anchor</a> <a href="gone.html">bad file</a>'
        '<img src="_images/missing.png">',
    )
    assert check_site.broken_references(tmp_path) == [
        "index.html: guide/index.html#nowhere (no such anchor)",
        "index.html: gone.html (no such file)",
        "index.html: _images/missing.png (no such file)",
    ]


def test_a_sound_site_passes_and_an_empty_one_fails(tmp_path: Path, monkeypatch) -> None:
    _page(tmp_path / "site" / "index.html", '<a href="index.html">self</a>')
    assert check_site.broken_references(tmp_path / "site") == []
    monkeypatch.setattr("sys.argv", ["check_site.py", str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match="no HTML pages"):
        check_site.main()
