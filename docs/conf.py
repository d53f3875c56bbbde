"""Sphinx configuration: numpydoc API reference and a sphinx-gallery of examples that are not run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document this checkout, not an installed copy
os.environ.setdefault("MPLBACKEND", "Agg")

import eegtransfer  # noqa: E402

project = "eegtransfer"
author = "eegtransfer contributors"
copyright = "eegtransfer contributors, BSD-3-Clause"  # noqa: A001 - Sphinx's name
release = version = eegtransfer.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
html_theme = "alabaster"
html_static_path: list[str] = []
html_title = f"eegtransfer {release}"

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# The build must work offline (CI machines, this project's machines): no inventory is fetched.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

# Examples are shown, never executed while building: they need data and minutes of CPU.
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "plot_gallery": "False",
    "filename_pattern": r"^$",
    "download_all_examples": False,
    "within_subsection_order": "FileNameSortKey",
    "remove_config_comments": True,
}

def _skip_routing_setters(app, what, name, obj, skip, options):  # noqa: ANN001
    # scikit-learn generates set_*_request methods whose docstrings cite its own glossary.
    return True if name.startswith("set_") and name.endswith("_request") else skip


def setup(app):  # noqa: ANN001
    app.connect("autodoc-skip-member", _skip_routing_setters)
