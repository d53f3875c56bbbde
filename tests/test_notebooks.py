"""Both notebooks run top to bottom (tiny settings injected through the environment)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
pytestmark = pytest.mark.real

SMALL = {
    "01_quickstart.ipynb": {"EEGTRANSFER_NB_POPULATION": "2,3", "EEGTRANSFER_NB_EPOCHS": "1",
                            "EEGTRANSFER_NB_MINUTES": "2,run", "EEGTRANSFER_NB_STRATEGIES": "none,head"},
    "02_moabb_benchmark.ipynb": {"EEGTRANSFER_NB_SUBJECTS": "1,2,3", "EEGTRANSFER_NB_EPOCHS": "1",
                                 "EEGTRANSFER_NB_ADAPT_EPOCHS": "3", "EEGTRANSFER_NB_CAL_SIZES": "0.5",
                                 "EEGTRANSFER_NB_STRATEGIES": "head", "EEGTRANSFER_NB_BASELINES": "MDM"},
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_runs(name, mne_data, tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # committed without outputs, with a tagged parameters cell first among code cells
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    monkeypatch.setenv("MNE_DATA", str(mne_data))
    monkeypatch.setenv("EEGTRANSFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EEGTRANSFER_NB_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for key, value in SMALL[name].items():
        monkeypatch.setenv(key, value)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    last = nb.cells[-1].outputs
    assert last and any("data" in o for o in last)  # the final table was displayed
    if name.startswith("02"):
        assert (tmp_path / "out" / "results.csv").is_file()
    else:
        assert (tmp_path / "quickstart_curve.png").is_file()
