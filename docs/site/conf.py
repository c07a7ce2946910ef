"""Sphinx configuration of the course site (Sphinx + myst-nb + sphinx-book-theme: Jupyter Book 1's
stack, its table of contents in ``_toc.yml`` beside this file).

Not run on its own: ``make site`` (``docs/site/build.py``) lays the README, docs/ and the
executed notebooks out in a staging folder and runs ``sphinx-build -c docs/site`` on it. The
notebooks are rendered from their saved outputs and never executed here
(``nb_execution_mode = "off"``).
"""

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent

project = "slicelib course"
author = "slicelib developers"
copyright = "slicelib developers, BSD-3-Clause"

extensions = ["myst_nb", "sphinx_external_toc"]
external_toc_path = str(HERE / "_toc.yml")
external_toc_exclude_missing = False

# The notebooks arrive executed (slicelib course --preset ...): render their outputs as saved.
nb_execution_mode = "off"
nb_merge_streams = True  # one block per cell for stdout/stderr (progress output included)
myst_heading_anchors = 3  # links such as docs/setup.md#offline-imagenet-weights resolve
# No dollarmath: the pages write environment variables as $NAME, which is not mathematics.
myst_enable_extensions = ["colon_fence"]
# The pages work offline: build.py renders the progress bars (ipywidgets) from their saved state
# as static HTML, so no widget JavaScript is loaded from a CDN.
nb_ipywidgets_js = {}

exclude_patterns = ["_build", "**.ipynb_checkpoints"]

html_theme = "sphinx_book_theme"
html_title = "slicelib course"
html_theme_options = {
    # build.py passes the repository of [project.urls] in pyproject.toml (one place, as the badges)
    "repository_url": os.environ.get("SLICELIB_SITE_REPOSITORY", ""),
    "use_repository_button": bool(os.environ.get("SLICELIB_SITE_REPOSITORY")),
    "show_toc_level": 2,
    # build.py says, on every page, in which preset and when the notebooks were executed
    "announcement": os.environ.get("SLICELIB_SITE_EXECUTED", ""),
}
# The first page a fresh browser opens has no saved mode: without a default the theme logs
# "Got invalid theme mode" as a console error.
html_context = {"default_mode": "light"}
html_last_updated_fmt = None
html_show_sourcelink = False
html_copy_source = False
