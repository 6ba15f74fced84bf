"""Sphinx configuration for the cvxlpgd documentation (``make docs``).

The source directory is the repository root, so that the README, the design document, the
tutorials and the benchmark reports are rendered where they lie and their relative links keep
working; ``include_patterns`` picks the pages. The guide pages include README sections instead of
copying them. Notebooks are rendered from their stored outputs and never executed here.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cvxlpgd  # noqa: E402

project = "cvxlpgd"
author = "The cvxlpgd authors"
copyright = "The cvxlpgd authors"  # noqa: A001
release = cvxlpgd.__version__
version = release

extensions = [
    "myst_nb",  # Markdown pages (myst-parser) and notebooks with their stored outputs
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the docstrings are Google style ("Args:", "Returns:", "Raises:")
    "sphinx.ext.viewcode",
    "sphinx-mathjax-offline",  # MathJax served from the site itself: formulas render offline too
]

root_doc = "docs/index"
include_patterns = [
    "docs/**",
    "tutorials/*.ipynb",
    "tutorials/README.md",
    "benchmarks/*.md",
    "CHANGELOG.md",
]
exclude_patterns = ["docs/_build/**", "docs/README_proposal.md", "**/.ipynb_checkpoints/**"]

# Notebooks: render the outputs stored by `make notebooks`, never run them (they take minutes).
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "colon_fence"]
# Unlabelled code blocks (program output, formulas) stay plain text.
highlight_language = "text"
myst_heading_anchors = 3  # GitHub-style anchors, so README links like (#solvers) resolve
# Included README sections start at "##" or "###" under the including page's title.
suppress_warnings = ["myst.header"]

# cvxlpgd.executors imports Ray, an optional extra; the reference is built without it.
autodoc_mock_imports = ["ray"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"  # types join the documented arguments
autodoc_default_options = {"show-inheritance": True}  # members are listed per class in api.rst
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"cvxlpgd {release}"
html_extra_path = ["_root"]  # index.html at the site's root, forwarding to docs/index.html

# The guide pages include README sections. A README link into the README itself names the page
# that includes its section; a relative link is made relative to the source root (the README's
# folder), since MyST resolves links in included text from the including page.
_README_ANCHORS = {
    "#coming-from-cvxpylayers": "/docs/guide/cvxpylayers.md",
    "#solvers": "/docs/guide/solvers.md",
    "#your-own-solver": "/docs/guide/solvers.md#your-own-solver",
    "#the-default-gradient-and-choosing-tau": (
        "/docs/guide/gradients.md#the-default-gradient-and-choosing-tau"
    ),
}
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _readme_link(target: str) -> str:
    if target.startswith("#"):
        return _README_ANCHORS.get(target, target)
    if "://" in target or target.startswith("/"):
        return target
    return "/" + target


def _on_include_read(app, relative_path, parent_docname, content):
    if relative_path == Path("README.md"):
        content[0] = _LINK.sub(lambda m: f"]({_readme_link(m.group(1))})", content[0])


def _on_source_read(app, docname, source):
    # The design document links to the README, whose sections make up this site.
    if docname == "docs/design":
        source[0] = source[0].replace("](../README.md)", "](/docs/index.md)")


def setup(app):
    app.connect("include-read", _on_include_read)
    app.connect("source-read", _on_source_read)
