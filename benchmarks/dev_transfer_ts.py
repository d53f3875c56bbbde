"""A population tangent-space classifier in ``auto``'s product, on the nested development set (not adopted).

The issue asked for the network's probabilities fused with a *transfer* TS+LR. The ``ts`` step
fits the patient's own TS+LR on the calibration trials; this measures the population's instead,
re-centred as in pyRiemann's RCT: each population subject's covariances (those of the ``ts``
step, :class:`eegtransfer.covariance.TangentSpaceExpert`) are moved to the identity by their own
Riemannian mean and a logistic regression with balanced class weights is fitted on the tangent
vectors there; the validation subject is re-centred with the mean of its calibration window
(inductive: its later runs are never read for it), then scored. Rows, on the cells of
``dev_nested.py`` (same pairs, populations and ``auto`` choices):

- ``auto``: ``auto``'s winner (as ``dev_nested.py``);
- ``rts``: the population's re-centred TS+LR alone;
- ``auto x rts^w``: the winner's probabilities times ``rts``'s to the power ``w`` (0.5, 1),
  renormalised.

Populations come from ``--pop-cache`` (the folder of a ``dev_nested.py`` run with the same
recipe) or are pretrained. ::

    python benchmarks/dev_transfer_ts.py --pairs 0-27 --out benchmarks/out/rts_a --pop-cache DIR &
    python benchmarks/dev_transfer_ts.py --pairs 28-54 --out benchmarks/out/rts_b --pop-cache DIR &
    python benchmarks/dev_transfer_ts.py --merge benchmarks/out/rts_a benchmarks/out/rts_b \\
        --out benchmarks/results/dev_transfer_ts
"""

from __future__ import annotations

import argparse
import itertools
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from _devset import add_pair_arguments, dev_data, merge_parts, pair_indices, population, run_pairs
from dev_nested import HARM, choose, cross_fitted

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", category=FutureWarning)

if TYPE_CHECKING:  # pragma: no cover
    from sklearn.linear_model import LogisticRegression

WEIGHTS = (0.5, 1.0)


def recentred_tangent(C: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Tangent vectors at the identity of covariances ``C`` re-centred by ``mean`` (RCT)."""
    from pyriemann.utils.base import invsqrtm
    from pyriemann.utils.tangentspace import tangent_space

    P = invsqrtm(mean)
    return tangent_space(P @ C @ P, np.eye(len(mean)))


def population_ts(C: np.ndarray, y: np.ndarray, subjects: np.ndarray) -> LogisticRegression:
    """Balanced logistic regression on every population subject's re-centred tangent vectors."""
    from pyriemann.utils.mean import mean_riemann
    from sklearn.linear_model import LogisticRegression

    T = np.concatenate([recentred_tangent(C[subjects == s], mean_riemann(C[subjects == s]))
                        for s in np.unique(subjects)])
    order = np.concatenate([np.flatnonzero(subjects == s) for s in np.unique(subjects)])
    return LogisticRegression(class_weight="balanced", max_iter=2000).fit(T, y[order])


def run_pair(d: dict[str, Any], C: np.ndarray, pair: tuple[int, int], index: int, cache: Path | None
             ) -> list[dict[str, Any]]:
    """Every row of one pair: both validation subjects, three windows, every rule."""
    from pyriemann.utils.mean import mean_riemann

    from eegtransfer.adaptation.guard import MARGIN
    from eegtransfer.evaluation.loso import PRETRAIN
    from eegtransfer.evaluation.protocol import split_target, target_window

    meta, X = d["meta"], d["Xn"]
    y = meta["label"].astype(str).to_numpy()
    sub = meta["subject"].astype(int).to_numpy()
    pop = ~np.isin(sub, pair)
    bundle = population(d, pop, False, f"{pair[0]}-{pair[1]}", cache)
    lr = population_ts(C[pop], y[pop], sub[pop])
    order = [list(lr.classes_).index(c) for c in bundle.classes]
    rows = []
    for subject, partner in (pair, pair[::-1]):
        t = sub == subject
        mt, Xs, ys, Cs = meta[t].reset_index(drop=True), X[t], y[t], C[t]
        first, test = split_target(mt)
        zero = float((bundle.predict(Xs[test]) == ys[test]).mean())
        for label in ("1", "2", "run"):
            _, cal = target_window(mt, first, label, trial_seconds=d["net"].tmax)
            cands, fits, scores = cross_fitted(bundle, Xs[cal], ys[cal])
            chosen = choose("auto", scores, cands, ys[cal], MARGIN)
            log_auto = np.log(fits[chosen](np.ones(cal.sum(), bool)).predict_proba(Xs[test]) + 1e-12)
            log_rts = lr.predict_log_proba(recentred_tangent(Cs[test], mean_riemann(Cs[cal])))[:, order]
            rules = {"auto": log_auto, "rts": log_rts, **{f"auto x rts^{w:g}": log_auto + w * log_rts
                                                          for w in WEIGHTS}}
            for rule, logp in rules.items():
                acc = float((np.asarray(bundle.classes)[logp.argmax(1)] == ys[test]).mean())
                rows.append({"pair": index, "subject": subject, "partner": partner, "window": label,
                             "rule": rule, "chosen": chosen, "accuracy": acc, "zero_shot": zero,
                             "n_calibration": int(cal.sum()), "n_test": int(test.sum()),
                             "pretraining": f"{PRETRAIN['epochs']} epochs, patience {PRETRAIN['patience']}"})
    return rows


def write_table(df: pd.DataFrame, out: Path) -> None:
    """transfer_ts.md: accuracy and harmed cells per rule, and each fusion against ``auto``."""
    from scipy.stats import wilcoxon

    df = df.assign(window=df["window"].astype(str))
    acc = (100 * df.pivot_table(index="rule", columns="window", values="accuracy")[["1", "2", "run"]]).round(1)
    harmed = (df["accuracy"] < df["zero_shot"] - HARM - 1e-9).groupby([df["rule"], df["window"]]).sum().unstack()
    wide = df.pivot_table(index=["pair", "subject", "window"], columns="rule", values="accuracy")
    lines = ["| rule | window | minus auto (points) | p (Wilcoxon, 11 subjects' means) | subjects better / worse |",
             "|---|---|---|---|---|"]
    for rule in [r for r in acc.index if r.startswith("auto x")]:
        for w in ("1", "2", "run"):
            per = (wide[rule] - wide["auto"]).xs(w, level="window").groupby(level="subject").mean().round(9)
            p = wilcoxon(per).pvalue if (per != 0).any() else 1.0
            lines.append(f"| {rule} | {w} | {100 * per.mean():+.1f} | {p:.3f} | "
                         f"{int((per > 0).sum())} / {int((per < 0).sum())} |")
    cells = len(df.drop_duplicates(["pair", "subject"]))
    (out / "transfer_ts.md").write_text("\n".join([
        "# A population (re-centred) TS+LR in auto's product: nested development set", "",
        f"{df['pair'].nunique()} pairs, {cells} (population, validation subject) cells; see the docstring of "
        f"`benchmarks/dev_transfer_ts.py`. Pretraining: "
        f"{'; '.join(df.get('pretraining', pd.Series(['not recorded'])).astype(str).unique())}. "
        f"Zero-shot network: {100 * df['zero_shot'].mean():.1f} %.", "",
        "Accuracy %, mean over cells:", "", acc.to_markdown(), "",
        f"Cells more than 5 points below the zero-shot network (of {cells} per window):", "",
        harmed.to_markdown(), "", *lines, ""]))


def main(argv: list[str] | None = None) -> int:
    """Run ``--pairs`` into ``--out``, or ``--merge`` finished parts."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pair_arguments(p, pop_cache_help="populations of a dev_nested.py run, same recipe")
    a = p.parse_args(argv)
    if a.merge:
        write_table(merge_parts(a.merge, "transfer_ts.csv", a.out), a.out)
        return 0
    from eegtransfer.covariance import TangentSpaceExpert

    d, meta, X, y = dev_data()
    pairs = list(itertools.combinations(sorted(meta["subject"].astype(int).unique().tolist()), 2))
    indices = pair_indices(p, a.pairs, len(pairs))
    C = TangentSpaceExpert(sorted(set(y)), d["net"].sfreq).covariances(X)
    df = run_pairs(indices, pairs, lambda i, pair: run_pair(d, C, pair, i, a.pop_cache), a.out, "transfer_ts.csv")
    write_table(df, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
