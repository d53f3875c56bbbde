"""
A new class set
===============

A patient whose task has other classes than the population's (here ``rest`` and ``13Hz`` in
two files, one class each) gets a **new head** trained on the calibration trials; the report
says so, and warns that one file per class is a confound.
"""

# %%
# A manifest lists the files; ``label`` makes the whole file one class, cut into windows.
from pathlib import Path

import pandas as pd

from eegtransfer.cli import main

Path("manifest.csv").write_text(pd.DataFrame({
    "path": ["rest.edf", "flicker13.edf"], "subject": ["p1", "p1"], "session": ["1", "1"],
    "label": ["rest", "13Hz"]}).to_csv(index=False))

# %%
# Calibrate on 6 windows of each class; the rest are held out.
main(["calibrate", "--model", "population", "--manifest", "manifest.csv", "--trials", "6", "--per-class",
      "--out", "patient-newtask", "--report", "patient-newtask.html"])

# %%
# The report's warnings include "A new head was trained" (no zero-shot model to compare with)
# and "One recording per class: a confound": record the classes interleaved in one session
# to know whether the model decodes the task rather than the files.
