"""The patient's own tangent-space classifier in the product, measured on the first runs only.

The development set of ``dev_first_run.py`` (the rest of the first run after a 1 or 2 minute
calibration window) cannot score the one-run window: nothing of the first run is left. Here the
one-run window is stood in for by **4-fold cross-validation within the first run**: each fold
holds every 4th trial of each class (24 calibration trials, 8 development trials; the runs are
recorded in class blocks, so consecutive folds would lack a class). The test runs are never
read. Windows ``1`` and ``2`` are those of ``dev_first_run.py``. Scores are plain accuracy pooled
over a subject's folds (``dev_first_run.py`` reports balanced accuracy). The folds interleave the
trials, so a development trial has calibration trials recorded next to it: this favours
classifiers fitted on the patient alone::

    python benchmarks/dev_one_run.py --subjects 1-6 --out benchmarks/out/one_a --pop-cache POPS &
    python benchmarks/dev_one_run.py --subjects 7-11 --out benchmarks/out/one_b --pop-cache POPS &
    python benchmarks/dev_one_run.py --merge benchmarks/out/one_a benchmarks/out/one_b \\
        --out benchmarks/results/dev_one_run

``auto without ts`` is ``auto`` with its ``+ts`` candidates removed (the previous release's).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
from _devset import dev_arguments, dev_data, merge_parts, population, subject_list

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", category=FutureWarning)
N_FOLDS = 4
STRATEGIES = ("cca", "bn+cca", "ts", "cca+ts", "bn+cca+ts")


def main(argv: list[str] | None = None) -> int:
    from eegtransfer.adaptation import adapt, auto
    from eegtransfer.evaluation.protocol import split_target, target_window

    a = dev_arguments(__doc__.splitlines()[0], argv, pop_cache_help="folder for the pretrained populations")
    if a.merge:
        df = merge_parts(a.merge, "dev_one_run.csv", a.out)
        write_tables(df, a.out, subject_list(df))
        return 0
    d, meta, X, y_all = dev_data()
    without_ts = auto.auto_candidates
    rows = []
    a.out.mkdir(parents=True, exist_ok=True)
    for target in a.targets:
        t = (meta["subject"].astype(str) == str(target)).to_numpy()
        mt = meta[t].reset_index(drop=True)
        first, _ = split_target(mt)
        Xt, yt = X[t], y_all[t]
        pops = {aligned: population(d, ~t, aligned, target, a.pop_cache, recipe=a.recipe) for aligned in (False, True)}
        for window, cal, dev in splits(mt, first, yt, d["net"].tmax, target_window):
            fits = {s: adapt(pops[False], Xt[cal], yt[cal], strategy=s, guard=False, device="cpu", seed=0)
                    for s in STRATEGIES}
            for name, aligned in (("auto", False), ("auto (aligned population)", True)):
                fits[name] = adapt(pops[aligned], Xt[cal], yt[cal], strategy="auto", device="cpu", seed=0)
                with mock.patch.object(auto, "auto_candidates",
                                       lambda b, y: [c for c in without_ts(b, y) if not c.endswith("+ts")]):
                    fits[name.replace("auto", "auto without ts")] = adapt(
                        pops[aligned], Xt[cal], yt[cal], strategy="auto", device="cpu", seed=0)
            for name, b in fits.items():
                pred = b.predict(Xt[dev])
                rows.append({"subject": target, "window": window, "method": name, "n_cal": int(cal.sum()),
                             "n_dev": int(dev.sum()), "correct": int((pred == yt[dev]).sum()),
                             "chosen": b.adaptation.chosen if name.startswith("auto") else None})
        pd.DataFrame(rows).to_csv(a.out / "dev_one_run.csv", index=False)
    write_tables(pd.DataFrame(rows), a.out, a.subjects)
    return 0


def splits(mt: pd.DataFrame, first: np.ndarray, y: np.ndarray, trial_seconds: float,
           target_window: Callable[..., tuple[float, np.ndarray]]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(window, calibration mask, development mask): windows 1 and 2, then the folds of ``run``."""
    for label in ("1", "2"):
        cal = target_window(mt, first, label, trial_seconds=trial_seconds)[1]
        yield label, cal, first & ~cal
    fold = np.full(len(first), -1)
    for c in np.unique(y[first]):
        idx = np.flatnonzero(first & (y == c))
        fold[idx] = np.arange(len(idx)) % N_FOLDS
    for k in range(N_FOLDS):
        yield "run", first & (fold != k), fold == k


def write_tables(df: pd.DataFrame, out: Path, subjects: str) -> None:
    """dev_one_run.md: accuracy per method and window (pooled over a subject's folds), and auto's picks."""
    per = df.groupby(["subject", "window", "method"])[["correct", "n_dev"]].sum()
    per["accuracy"] = 100 * per["correct"] / per["n_dev"]
    table = per.reset_index().pivot_table(index="method", columns="window", values="accuracy", aggfunc="mean")
    n = df.groupby("method")["subject"].nunique()
    picks = df.dropna(subset=["chosen"]).groupby(["method", "window"])["chosen"].value_counts().unstack(fill_value=0)
    subj = per.reset_index().pivot_table(index=["window", "subject"], columns="method", values="accuracy")
    (out / "dev_one_run.md").write_text("\n".join([
        "# Development set with a one-run window: cross-validation within each first run "
        "(the test runs are never read)", "",
        f"Command: `python benchmarks/dev_one_run.py --subjects {subjects} --out {out}`. Accuracy (%) on the "
        f"development trials, mean over subjects (n per row); window `run`: {N_FOLDS}-fold cross-validation "
        "within the first run, each subject's folds pooled. Calibration and development trials per subject "
        f"and fold, mean: {df.groupby('window')['n_cal'].mean().round(1).to_dict()} and "
        f"{df.groupby('window')['n_dev'].mean().round(1).to_dict()}.", "",
        table.round(1).assign(n=n).sort_values("run").to_markdown(), "",
        "What `auto` chose (folds per window):", "", picks.to_markdown(), "",
        "Per subject:", "", subj.round(0).to_markdown(), ""]))


if __name__ == "__main__":
    raise SystemExit(main())
