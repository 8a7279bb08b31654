"""Sphinx configuration of the sklearn_deltagrad documentation.

Build (warnings are errors, every cross-reference must resolve)::

    python -m sphinx -W -n -b html docs docs/_build/html
"""

import os
import re
import shutil
import sys

# Document the working tree, also when the package is not installed.
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
os.environ.setdefault("MPLBACKEND", "agg")

import sklearn_deltagrad  # noqa: E402

project = "sklearn_deltagrad"
author = "sklearn_deltagrad developers"
copyright = "2026, sklearn_deltagrad developers"
version = release = sklearn_deltagrad.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
]

# Formulas: rendered to images at build time when LaTeX and dvipng are installed
# (works offline); otherwise MathJax, which needs network access when viewing.
if shutil.which("latex") and shutil.which("dvipng"):
    extensions.append("sphinx.ext.imgmath")
    imgmath_image_format = "png"
    imgmath_font_size = 14
else:
    extensions.append("sphinx.ext.mathjax")

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# docs/benchmarks.md holds the results of ``python -m benchmarks.unlearning``.
myst_heading_anchors = 3
# The benchmark report nests its sections under "###" headings.
suppress_warnings = ["myst.header"]

# API reference
autosummary_generate = True
autodoc_default_options = {"member-order": "bysource"}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
default_role = "literal"

# Nitpicky mode: names outside this site that cannot be resolved offline (no
# intersphinx inventories are downloaded during the build).
nitpick_ignore = [
    ("py:obj", "sklearn.linear_model.LogisticRegression"),
    ("py:obj", "sklearn.linear_model.Ridge"),
    ("py:class", "sklearn.pipeline.Pipeline"),
    ("py:class", "sklearn.preprocessing.StandardScaler"),
    ("py:class", "sklearn.preprocessing.FunctionTransformer"),
    ("py:class", "sklearn.model_selection.GridSearchCV"),
    ("py:class", "sklearn.linear_model.SGDClassifier"),
    ("py:meth", "sklearn.linear_model.SGDClassifier.partial_fit"),
    ("py:mod", "joblib"),
    ("py:mod", "pickle"),
    ("py:class", "NotImplementedError"),
    ("py:class", "MemoryError"),
    ("py:class", "ValueError"),
]
# Docstrings may name private helpers (``sklearn_deltagrad._training....``); those
# are not part of the documented API and are shown as text.
nitpick_ignore_regex = [(r"py:.*", r"sklearn_deltagrad\._.*")]

# Example gallery: every examples/plot_*.py runs at build time.
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "doc_module": ("sklearn_deltagrad",),
    "backreferences_dir": "gen_modules/backreferences",
    "reference_url": {"sklearn_deltagrad": None},
    "download_all_examples": False,
    "remove_config_comments": True,
    "matplotlib_animations": False,
    "show_memory": False,
    "abort_on_example_error": True,
}

html_theme = "pydata_sphinx_theme"
html_title = f"sklearn_deltagrad {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_show_sourcelink = False


# ----------------------------------------------------------------- docstring fixes
_XREF = re.compile(r":(?:ref|func|class|meth|term|mod|obj|attr):`([^`]+)`")
_TRAILING_UNDERSCORE = re.compile(r"\((\w+_),\)")


def _plain_reference(match):
    """``:role:`title <target>``` -> ``title``; ``:role:`~a.b.c``` -> ``c``."""
    text = match.group(1)
    if "<" in text:
        return text.split("<", 1)[0].strip()
    text = text.lstrip("!")
    if text.startswith("~"):
        text = text[1:].rsplit(".", 1)[-1]
    return f"``{text}``"


def _fix_docstring(app, what, name, obj, options, lines):
    """Make docstrings build cleanly with ``-W -n``.

    - Methods inherited from scikit-learn (``score``, ``get_params``, ...) refer to
      scikit-learn's own site, which is not available offline: show those
      references as text.
    - ``shape (n_features_in_,)`` reads as an rST reference to ``n_features_in``:
      quote such names.
    """
    module = getattr(obj, "__module__", "") or ""
    foreign = module.startswith("sklearn.") or module == "sklearn"
    for i, line in enumerate(lines):
        if foreign:
            line = _XREF.sub(_plain_reference, line)
        lines[i] = _TRAILING_UNDERSCORE.sub(r"(``\1``,)", line)


def setup(app):
    app.connect("autodoc-process-docstring", _fix_docstring, priority=400)
