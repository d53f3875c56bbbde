"""The documentation builds without a warning (``sphinx-build -W``); the examples are not run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.docs
def test_sphinx_builds_without_warnings(tmp_path):
    try:
        import numpydoc  # noqa: F401
        import sphinx  # noqa: F401
        import sphinx_gallery  # noqa: F401
    except ImportError as err:
        if os.environ.get("CI"):
            pytest.fail(f"the docs extra is missing ({err}); install requirements/lock.txt")
        pytest.skip(f"the docs extra is not installed ({err})")
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                        "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(tmp_path / "html")],
                       capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-4000:]
    html = tmp_path / "html"
    for page in ("index.html", "api.html", "report.html", "auto_examples/index.html",
                 "generated/eegtransfer.report.html", "generated/eegtransfer.io.html"):
        assert (html / page).is_file(), page
    assert (html / "_images" / "report.png").is_file()
    # examples are shown, never executed: no output of theirs in the built pages
    assert "sphx-glr-script-out" not in (html / "auto_examples" / "plot_03_read_the_report.html").read_text()
