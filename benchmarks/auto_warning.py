"""When ``auto`` warns that its winner is not ahead of the network: how often, and what followed.

``auto`` scores the network without the CCA expert beside its candidates and logs a warning
(``eegtransfer.adaptation.auto.NOT_AHEAD``) when the winner's cross-fitted log-loss on the
calibration trials does not beat the network's by the guard's margin. This reads finished runs
only (no computation) and counts, per cell, whether the warning fired and how ``auto`` then
scored on the later runs against the zero-shot network:

- test runs (``results/loso/loso.csv``): the warning fired where the single strategy that
  ``auto`` chose kept the zero-shot network under its own guard (same cross-fitting, same margin);
- development set (``results/dev_rest_evidence/half/nested.csv``, the package's expert): where
  the rule ``auto, guarded`` fell back to the zero-shot network.

::

    python benchmarks/auto_warning.py --out benchmarks/results/auto_warning.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from _devset import write_markdown

RESULTS = Path(__file__).resolve().parent / "results"
HARM = 5.0


def test_cells(path: Path) -> pd.DataFrame:
    """One row per (subject, window) of the test runs: warned, ``auto`` minus zero-shot (points)."""
    d = pd.read_csv(path, dtype={"window": str})
    d = d[d["family"] != "seed"].set_index(["subject", "window"])
    auto, zero = d[d["method"] == "EEGNet auto"], d[d["method"] == "EEGNet zero-shot"]["accuracy"]
    guard = d.set_index("method", append=True)["guard"]
    warned = [guard[(s, w, f"EEGNet {c}")] == "zero-shot" for (s, w), c in auto["chosen"].items()]
    return pd.DataFrame({"warned": warned, "diff": 100 * (auto["accuracy"] - zero)}, index=auto.index)


def dev_cells(path: Path) -> pd.DataFrame:
    """One row per development cell: warned, ``auto`` minus zero-shot (points)."""
    d = pd.read_csv(path, dtype={"window": str})
    key = ["pair", "subject", "partner", "window"]
    auto = d[d["rule"] == "auto"].set_index(key)
    guarded = d[d["rule"] == "auto, guarded"].set_index(key)["chosen"]
    return pd.DataFrame({"warned": guarded.reindex(auto.index) == "zero-shot",
                         "diff": 100 * (auto["accuracy"] - auto["zero_shot"])})


def summary(cells: pd.DataFrame) -> dict[str, str]:
    """Counts of warned and harmed cells, and how ``auto`` did where it warned."""
    w, harmed = cells[cells["warned"]], cells["diff"] < -HARM - 1e-9
    subjects = w.index.get_level_values("subject").value_counts().sort_index()
    return {"cells": str(len(cells)), "warned": str(len(w)),
            "warned and harmed": str(int((w["diff"] < -HARM - 1e-9).sum())),
            "harmed without a warning": str(int((harmed & ~cells["warned"]).sum())),
            "warned: auto above / below zero-shot": f"{int((w['diff'] > 0).sum())} / {int((w['diff'] < 0).sum())}",
            "warned: auto minus zero-shot, range (points)": f"{w['diff'].min():+.1f} to {w['diff'].max():+.1f}"
            if len(w) else "n/a",
            "warned cells per subject": ", ".join(f"{s}: {n}" for s, n in subjects.items()) or "none"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="markdown file to write")
    a = p.parse_args(argv)
    table = pd.DataFrame({
        "test runs (n = 11 subjects x 3 windows)": summary(test_cells(RESULTS / "loso" / "loso.csv")),
        "development set (110 cells x 3 windows)": summary(
            dev_cells(RESULTS / "dev_rest_evidence" / "half" / "nested.csv"))})
    text = (f"# {__doc__.splitlines()[0]}\n\nCommand: `python benchmarks/auto_warning.py --out {a.out}`. "
            f"Harmed: more than {HARM:g} points below the zero-shot network.\n\n"
            + table.to_markdown() + "\n")
    write_markdown(a.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
