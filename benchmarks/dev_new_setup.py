"""The new set-up of ``new_setup.py`` on validation subjects' later runs (nested development set).

``new_setup.py`` scores a new class set on a new cap on the targets' later runs; nothing about
that case was ever chosen on a development set. This gives it one, as ``dev_nested.py`` does for
the protocol: for every pair ``{s, p}`` of subjects, a plain population of the other nine
**without the 17 Hz class** (``new_setup.py``'s recipe), and the validation subject ``p`` on a cap
without ``MISSING`` (interpolated), calibrated on the first 2 trials of each class of its first
run and scored on its later runs. A pair's population serves both of its subjects.

It measures the expert's say on ``rest`` (:data:`eegtransfer.ssvep.REST_EVIDENCE`) where the
expert has no population prior (a new class set: it starts from the CCA rule, exponents 1 and
1), which ``dev_rest_evidence.py`` did not cover: ``head+cca`` and ``auto`` with the expert's full
say (1) and half (0.5). Decision, written down before the run: if ``auto``'s mean with half is
more than 0.5 points below its mean with the full say, experts without a population prior keep
their full say. Outcome (``results/dev_new_setup``): half cost ``auto`` 2.5 points and ``head+cca``
3.2 (10 of 11 validation subjects worse), so the ``cca`` step gives an expert without a prior its
full say. ::

    python benchmarks/dev_new_setup.py --pairs 0-27 --out benchmarks/out/dns_a --pop-cache DIR &
    python benchmarks/dev_new_setup.py --pairs 28-54 --out benchmarks/out/dns_b --pop-cache DIR &
    wait; python benchmarks/dev_new_setup.py --merge benchmarks/out/dns_a benchmarks/out/dns_b \\
        --out benchmarks/results/dev_new_setup

``--epochs`` and ``--patience`` default to 25 and 10, the recipe of ``new_setup.py``'s results.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _devset import add_pair_arguments, merge_parts, pair_indices, parsed_recipe, rest_evidence, run_pairs
from new_setup import NEW_CLASS, calibration_and_test, load, target_trials

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", category=FutureWarning)

STRATEGIES = ("head+cca", "auto")
SHARES = (1.0, 0.5)


def population(d: dict[str, Any], pair: tuple[int, int], cache: Path | None, recipe: dict[str, int]) -> Any:
    """The plain population of every subject but ``pair``, without the new class (cached by pair)."""
    from eegtransfer.bundle import Bundle
    from eegtransfer.evaluation.loso import PRETRAIN
    from eegtransfer.training.pretraining import pretrain

    folder = cache / f"{pair[0]}-{pair[1]}" if cache else None
    if folder is not None and folder.exists():
        return Bundle.load(folder)
    subjects = d["meta"]["subject"].astype(int).to_numpy()
    pop = ~np.isin(subjects, pair) & (d["y"] != NEW_CLASS)
    b = pretrain(d["X"][pop], d["y"][pop], d["meta"][pop], d["net"], device="cpu", seed=0,
                 **{**PRETRAIN, **recipe})
    if folder is not None:
        b.save(folder)
    return b


def evaluate(bundle: Any, t: dict[str, Any]) -> list[dict[str, Any]]:
    """``STRATEGIES`` with each of ``SHARES`` on one validation subject: a row each."""
    from eegtransfer.adaptation import adapt

    y = t["meta"]["label"].astype(str).to_numpy()
    cal, test = calibration_and_test(t["meta"])
    rows = []
    for value in SHARES:
        with rest_evidence(value):
            for s in STRATEGIES:
                out = adapt(bundle, t["net"][cal], y[cal], strategy=s, device="cpu", seed=0, epochs=100, patience=20)
                rows.append({"strategy": s, "rest_evidence": value, "chosen": out.adaptation.chosen or "",
                             "accuracy": float((out.predict(t["net"][test]) == y[test]).mean()),
                             "n_calibration": int(cal.sum()), "n_test": int(test.sum())})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run ``--pairs`` into ``--out``, or ``--merge`` parts."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pair_arguments(p, pop_cache_help="populations of this script and recipe")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--patience", type=int, default=10)
    a = p.parse_args(argv)
    recipe = parsed_recipe(p, a)
    if a.merge:
        write_table(merge_parts(a.merge, "dev_new_setup.csv", a.out), a.out)
        return 0
    subjects = list(range(1, 12))
    pairs = list(itertools.combinations(subjects, 2))
    indices = pair_indices(p, a.pairs, len(pairs))
    d = load(subjects)
    targets: dict[int, dict[str, Any]] = {}  # each subject's interpolated trials, cut once

    def rows_of(i: int, pair: tuple[int, int]) -> list[dict]:
        bundle = population(d, pair, a.pop_cache, recipe)
        rows = []
        for subject, partner in (pair, pair[::-1]):
            targets.setdefault(subject, target_trials(d, subject))
            for r in evaluate(bundle, targets[subject]):
                rows.append({"pair": i, "subject": subject, "partner": partner, **r,
                             "pretraining": f"{a.epochs} epochs, patience {a.patience}"})
        return rows

    write_table(run_pairs(indices, pairs, rows_of, a.out, "dev_new_setup.csv"), a.out)
    return 0


def write_table(df: pd.DataFrame, out: Path) -> None:
    """dev_new_setup.md: each strategy with each share, and half against full paired by validation subject."""
    from scipy.stats import wilcoxon

    n_cells = len(df.drop_duplicates(["pair", "subject"]))
    mean = (100 * df.pivot_table(index="strategy", columns="rest_evidence", values="accuracy")).round(1)
    lines = ["# The new set-up on validation subjects' later runs: the expert's say on rest without a prior", "",
             f"{df['pair'].nunique()} pairs, {n_cells} (population, validation subject) cells; see the docstring of "
             "`benchmarks/dev_new_setup.py`. Pretraining: " + "; ".join(df["pretraining"].astype(str).unique())
             + ".", "", "Accuracy %, mean over the cells, by the expert's say on `rest` (1: full; 0.5: half):", "",
             mean.to_markdown(), "", "Half against full, in points: the mean over cells; each validation subject's "
             "mean over its cells compared by a paired Wilcoxon test (subjects better / tied / worse):", ""]
    for s, g in df.groupby("strategy"):
        w = g.pivot_table(index=["pair", "subject"], columns="rest_evidence", values="accuracy")
        diff = w[0.5] - w[1.0]
        per = diff.groupby(level="subject").mean().round(9)
        pval = wilcoxon(per).pvalue if (per != 0).any() else 1.0
        lines.append(f"- `{s}`: {100 * diff.mean():+.1f}, p = {pval:.3f} ({int((per > 0).sum())} / "
                     f"{int((per == 0).sum())} / {int((per < 0).sum())})")
    (out / "dev_new_setup.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
