"""Sphinx configuration of nnfast's documentation.

Build (from the repository's root, after ``python -m pip install -e ".[docs]"``)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
    python -m sphinx -W --keep-going -b doctest docs docs/_build/doctest

CI runs both (``.ci/run``); warnings are errors there, so keep the build free of them.
"""

import os
import re

import nnfast

project = "nnfast"
author = "the nnfast developers"
copyright = "nnfast developers"
version = release = nnfast.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

# Generated files (autosummary stubs, the gallery) live in git-ignored folders beside the
# hand-written sources; see .gitignore.
templates_path = ["_templates"]
exclude_patterns = ["_build", "sg_execution_times.rst"]
root_doc = "index"
default_role = "literal"  # `name` renders as code, as in the README it came from
pygments_style = "sphinx"

# ----------------------------------------------------------------------------- API reference
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"  # the numpydoc sections carry the types
autodoc_member_order = "bysource"
# The class template (_templates/autosummary/class.rst) lists the members with autodoc;
# numpydoc's own member tables would list them a second time.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# ------------------------------------------------------------------------------------ gallery
# The examples live in examples/ at the repository's root (scripts users can run as they are)
# and every one of them runs at build time; keep each to a few seconds.
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": re.escape(os.sep),  # run every example, not only plot_*.py
    "ignore_pattern": r"__init__\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "min_reported_time": 1,
    "show_memory": False,
}

# ----------------------------------------------------------------------------------- doctests
doctest_global_setup = """
import numpy as np
import nnfast
"""

# --------------------------------------------------------------------------------------- html
html_theme = "pydata_sphinx_theme"
html_title = f"nnfast {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False


def _skip_foreign_members(app, what, name, obj, skip, options):
    """Document a class's own members only.

    scikit-learn attaches metadata-routing methods (``set_fit_request`` ...) to every
    estimator class; their docstrings point into scikit-learn's own documentation, which
    these pages do not hold. They are scikit-learn's API, documented there.
    """
    module = getattr(obj, "__module__", None) or ""
    if what == "class" and callable(obj) and not module.startswith("nnfast"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign_members)
