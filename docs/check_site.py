"""Check a built site for broken internal links and missing images (`make docs`).

    python docs/check_site.py docs/_build/html

Every ``href`` and ``src`` of every HTML page that is not an external URL must name a file of
the site, and a ``#fragment`` must name an ``id`` (or ``name``) in the page it points to. Exits
non-zero listing each broken reference with the page it is on.
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

EXTERNAL = ("http", "https", "mailto", "data", "javascript")


class _Page(HTMLParser):
    """The references (href, src) and the anchor ids of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if value is None:
                continue
            if key in ("href", "src"):
                self.references.append(value)
            elif key == "id" or (key == "name" and tag == "a"):
                self.ids.add(value)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def broken_references(site: Path) -> list[str]:
    """One line per reference that names no file of the site, or no anchor in its page."""
    pages = {path.resolve(): _parse(path) for path in site.rglob("*.html")}
    broken = []
    for path, page in sorted(pages.items()):
        for reference in page.references:
            parts = urlsplit(reference)
            if parts.scheme in EXTERNAL or parts.netloc:
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            where = path.relative_to(site.resolve())
            if not target.is_file():
                broken.append(f"{where}: {reference} (no such file)")
            elif parts.fragment and target in pages and unquote(parts.fragment) not in pages[target].ids:
                broken.append(f"{where}: {reference} (no such anchor)")
    return broken


def main() -> None:
    site = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html")
    pages = list(site.rglob("*.html"))
    if not pages:
        sys.exit(f"{site}: no HTML pages (build the site first: make docs)")
    broken = broken_references(site)
    if broken:
        sys.exit("Broken references:\n  " + "\n  ".join(broken))
    print(f"{site}: {len(pages)} pages, every internal link and image resolves")


if __name__ == "__main__":
    main()
