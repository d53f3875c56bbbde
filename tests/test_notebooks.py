"""Both notebooks run top to bottom (tiny settings injected through the environment)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
pytestmark = pytest.mark.real

SMALL = {
    "01_quickstart.ipynb": {"POPULATION": [2, 3], "EPOCHS": 1, "MINUTES": [2, "run"],
                            "STRATEGIES": ["none", "head"], "CALIBRATION_MINUTES": 2},
    "02_moabb_benchmark.ipynb": {"SUBJECTS": [1, 2, 3], "EPOCHS": 1, "ADAPT_EPOCHS": 3, "CALIBRATION_SIZES": [0.5],
                                 "STRATEGIES": ["head"], "BASELINES": ["MDM"]},
}


def inject_parameters(nb, values: dict) -> None:
    """What papermill does: a cell tagged ``injected-parameters`` right after the ``parameters`` cell."""
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in values.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(at + 1, cell)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_runs(name, mne_data, tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    # a tagged parameters cell first among code cells; the quickstart is committed with the outputs of
    # a run with its defaults (for readers), without errors or this machine's paths; the other without
    code = [c for c in nb.cells if c.cell_type == "code"]
    committed = [o for c in code for o in c.get("outputs", [])]
    if name.startswith("01"):
        assert committed and not any(o.get("output_type") == "error" for o in committed)
        assert "/work/" not in nbformat.writes(nb) and "/root/" not in nbformat.writes(nb)
    else:
        assert not committed and all(c.get("execution_count") is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    assert 'os.environ.get("EEGTRANSFER_NB' not in code[0].source and "filterwarnings" not in "".join(
        c.source for c in code)  # a plain parameters cell, no global warning filter
    monkeypatch.setenv("EEGTRANSFER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    inject_parameters(nb, {"MNE_DATA": str(mne_data), "OUT": str(tmp_path / "out"), **SMALL[name]})
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    last = nb.cells[-1].outputs
    assert last and any("data" in o for o in last)  # the final table was displayed
    if name.startswith("02"):
        assert (tmp_path / "out" / "results.csv").is_file()
    else:
        assert (tmp_path / "quickstart_curve.png").is_file() and (tmp_path / "out" / "patient.html").is_file()
        assert (tmp_path / "out" / "patient-python" / "bundle.json").is_file()
