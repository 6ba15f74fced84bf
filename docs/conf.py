"""Sphinx configuration for the cvxlpgd documentation (``make docs``).

The source directory is the repository root, so that the README, the design document, the
tutorials and the benchmark reports are rendered where they lie and their relative links keep
working; ``include_patterns`` picks the pages. The index and getting-started pages include the
README's opening sections instead of copying them; the user guide lives in ``docs/guide/``.
Notebooks are rendered from their stored outputs and never executed here.
"""

from __future__ import annotations

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
exclude_patterns = ["docs/_build/**", "**/.ipynb_checkpoints/**"]

# Notebooks: render the outputs stored by `make notebooks`, never run them (they take minutes).
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "colon_fence"]
# Unlabelled code blocks (program output, formulas) stay plain text.
highlight_language = "text"
myst_heading_anchors = 3  # GitHub-style anchors, so links like (gradients.md#the-default-...) resolve

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


def _on_source_read(app, docname, source):
    # The design document links to the README, which is not a page: the site's index stands in.
    if docname == "docs/design":
        source[0] = source[0].replace("](../README.md)", "](/docs/index.md)")


def setup(app):
    app.connect("source-read", _on_source_read)
