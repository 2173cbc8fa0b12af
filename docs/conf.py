"""Sphinx configuration for the flaxopt documentation.

Build (warnings are errors; also what .ci/run does)::

    pip install -e '.[docs]'
    python -m sphinx -W -b html docs docs/_build/html

Pages: index.md, design.md, guides/, workflows/, api/, notebooks/ (jupytext percent-format
``.py`` files executed by myst-nb at build time). The guides are grown from the README's
sections (docs/readme/*.md) with MyST ``{include}``; the ``{{include:..}}``, ``{{results:..}}``
and ``{{bench:..}}`` lines in those sections are expanded here exactly as
docs/build_readme.py expands them for README.md, so every number comes from a recorded result
file, never typed twice.
"""

import os
import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # this tree's flaxopt, for autodoc and the notebooks
sys.path.insert(0, str(DOCS))  # build_readme
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

import build_readme  # pylint: disable=g-import-not-at-top,wrong-import-position

project = "flaxopt"
author = "the flaxopt authors"
copyright = "2026, the flaxopt authors"  # pylint: disable=redefined-builtin
release = version = "0.1.0"

extensions = [
    "myst_nb",  # MyST Markdown pages and executed notebooks (brings myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax served from the build, not a CDN: formulas render offline
    "sphinx.ext.viewcode",
]

# Inputs rather than pages, excluded on purpose:
#   readme/      the README's sections: included into the guides (and README.md) by path;
#   studies/     leaderboards the compare harness writes: included by the sections;
#   benchmarks/  raw benchmark results (JSON, and one Markdown report quoted by a section);
#   results/     experiment results files (JSON) quoted by the sections;
#   screenshots/ images of the built site, for reviewers;
#   conf.py, build_readme.py (the README generator), api/write_page.py (drafts an API page):
#   scripts, not notebooks (every other .py under docs/ is a notebook page).
exclude_patterns = [
    "_build", "jupyter_execute", "readme", "studies", "benchmarks", "results", "screenshots",
    "conf.py", "build_readme.py", "api/write_page.py",
    "reliability.md",  # a page through workflows/reliability.md, which includes it
    "**/.ipynb_checkpoints", "Thumbs.db", ".DS_Store",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
# Jupytext percent-format notebooks: docs/notebooks/*.py are pages, executed at build time.
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
nb_execution_mode = "force"
nb_execution_timeout = 120
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_render_markdown_format = "myst"  # Markdown outputs (leaderboards) with tables

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# The README sections start at level 2 ("## Activations"), and a guide page that includes
# several of them under its own title skips a level; docutils nests them correctly.
suppress_warnings = ["myst.header"]

autosummary_generate = False  # one page per package (docs/api/*.md), not one per name
autodoc_default_options = {"members": False, "show-inheritance": False}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
add_module_names = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "sphinx_book_theme"
html_title = "flaxopt"
html_static_path = ["_static"]
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_show_sourcelink = False


def _expand_generated(app, relative_path, parent_docname, content):  # pylint: disable=unused-argument
  """Expands build_readme's ``{{include|results|bench:..}}`` lines in an included section."""
  path = pathlib.Path(relative_path)
  if not path.is_absolute():
    path = pathlib.Path(app.srcdir) / path
  content[0] = build_readme._expand(content[0], path)  # pylint: disable=protected-access


def setup(app):
  app.connect("include-read", _expand_generated)
