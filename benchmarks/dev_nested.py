"""Rules of ``auto`` chosen by nested leave-one-subject-out: validation subjects' later runs.

The first-run development sets (``dev_first_run.py``, ``dev_one_run.py``) cannot see what
happens between a calibration run and the runs after it; subject 2 of the test runs is the case
in point. This script gives every target subject ``s`` a development set with that drift that
never reads ``s``: for every pair ``{s, p}`` of subjects, a population is pretrained on the other
nine (the protocol's recipe, plain population), and the **validation subject** ``p`` is
calibrated on its first run (1 min, 2 min, the run: the protocol's windows) and scored on its
later runs, as the protocol scores a target. A pair's population serves both of its subjects.

Rules compared, all from one cross-fitting of ``auto``'s candidates plus the zero-shot network:

- ``auto``: the current rule (lowest cross-fitted log-loss; beat the simplest candidate by the
  margin);
- ``auto, guarded``: its winner must also beat the zero-shot network by the guard's margin, as
  every single strategy must (:func:`eegtransfer.adaptation.guard.decide`), else zero-shot;
- ``auto, ts from 6``: the ``+ts`` candidates only where every class has 6 calibration trials;
- ``auto, guarded, ts from 6``: both.

Selection, fixed before the first run of this script: for target ``s``, over its ten validation
subjects and the three windows, the rule with the fewest cells more than 5 points below the
zero-shot network (the issue's harm criterion), ties broken by the higher mean accuracy, then by
the order above. ``nested.md`` lists each target's choice. The product has one rule for
every patient: a rule chosen by most targets replaces ``auto``'s, and the test runs
(``benchmarks/loso.py``) are then scored once with it. (Outcome: 6 of 11 targets kept ``auto``,
4 chose ``ts from 6``, 1 both changes, so ``auto`` is unchanged and the test runs were not
rescored per target. With the longer pretraining of the next round, ``results/dev_recipe/epochs50``:
5 kept ``auto``, 4 chose ``ts from 6``, 2 both changes; ``auto`` again unchanged.) ::

    python benchmarks/dev_nested.py --pairs 0-27 --out benchmarks/out/nested_a --pop-cache DIR &
    python benchmarks/dev_nested.py --pairs 28-54 --out benchmarks/out/nested_b --pop-cache DIR &
    python benchmarks/dev_nested.py --merge benchmarks/out/nested_a benchmarks/out/nested_b \\
        --out benchmarks/results/dev_nested

Populations are pretrained with the protocol's recipe (``eegtransfer.evaluation.loso.PRETRAIN``);
``--epochs`` and ``--patience`` change it (``results/dev_nested`` was made with 25 and 10, the
recipe of its round: ``--epochs 25 --patience 10``), and every row says which it had. ``--compare
A B ...`` writes ``recipes.md``: ``auto`` and the zero-shot network of finished runs against the
first, paired by cell (``results/dev_recipe``, which chose the current recipe).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from _devset import (
    add_pair_arguments,
    add_recipe_arguments,
    dev_data,
    merge_parts,
    pair_indices,
    parsed_recipe,
    population,
    run_pairs,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", category=FutureWarning)

if TYPE_CHECKING:  # pragma: no cover
    from eegtransfer.bundle import Bundle

RULES = ("auto", "auto, guarded", "auto, ts from 6", "auto, guarded, ts from 6")
TS_FROM = 6
HARM = 0.05


def choose(rule: str, scores: dict, cands: list[str], labels: np.ndarray, margin: float) -> str:
    """The strategy that ``rule`` keeps, from one cross-fitting (``scores`` includes zero-shot)."""
    from eegtransfer.adaptation.auto import choose_candidate

    if "ts from" in rule and min(np.unique(labels, return_counts=True)[1]) < TS_FROM:
        cands = [c for c in cands if not c.endswith("+ts")]
    chosen = choose_candidate(scores, cands, margin)
    if "guarded" in rule and scores["zero-shot"]["log_loss"] - scores[chosen]["log_loss"] < margin:
        chosen = "zero-shot"
    return chosen


def fitters(bundle: Bundle, Xc: np.ndarray, yc: np.ndarray) -> tuple[list[str], dict]:
    """``auto``'s candidates and, for each, a function of a mask of ``Xc`` that fits it there."""
    from eegtransfer.adaptation import parse_strategy, run_steps
    from eegtransfer.adaptation.auto import auto_candidates

    cands = auto_candidates(bundle, yc)

    def fitter(cand: str):
        steps = parse_strategy(cand)
        return lambda mask: run_steps(bundle, steps, Xc[mask], yc[mask], device="cpu", seed=0)

    return cands, {c: fitter(c) for c in cands}


def cross_fitted(bundle: Bundle, Xc: np.ndarray, yc: np.ndarray) -> tuple[list[str], dict, dict]:
    """``auto``'s candidates, their fitters and their cross-fitted scores (zero-shot scored too)."""
    from eegtransfer.adaptation.guard import cross_fit

    cands, fits = fitters(bundle, Xc, yc)
    return cands, fits, cross_fit({**fits, "zero-shot": lambda mask: bundle}, Xc, yc)


def evaluate(bundles: list[Bundle], X: np.ndarray, y: np.ndarray, mt: pd.DataFrame, trial_seconds: float, check: bool
             ) -> list[dict]:
    """Every rule on one validation subject's windows: one row per window and rule.

    ``bundles[0]`` is the population of seed 0; with more, ``auto`` is also run on each and their
    probabilities averaged (``auto, N seeds``; ``zero-shot, N seeds`` averages the networks).
    """
    from eegtransfer.adaptation import adapt
    from eegtransfer.adaptation.guard import MARGIN
    from eegtransfer.evaluation.protocol import split_target, target_window

    bundle, k = bundles[0], len(bundles)
    first, test = split_target(mt)
    zero = float((bundle.predict(X[test]) == y[test]).mean())
    classes = np.asarray(bundle.classes)
    rows = []
    for label in ("1", "2", "run"):
        w, cal = target_window(mt, first, label, trial_seconds=trial_seconds)
        Xc, yc = X[cal], y[cal]
        cands, fits, scores = cross_fitted(bundle, Xc, yc)
        acc = {"zero-shot": zero}
        for rule in RULES:
            chosen = choose(rule, scores, cands, yc, MARGIN)
            if rule == "auto" and check:  # the replica of auto's rule is auto's rule
                assert adapt(bundle, Xc, yc, strategy="auto", device="cpu").adaptation.chosen == chosen
            if chosen not in acc:
                acc[chosen] = float((fits[chosen](np.ones(len(yc), bool)).predict(X[test]) == y[test]).mean())
            rows.append({"window": label, "rule": rule, "chosen": chosen, "accuracy": acc[chosen]})
        if k > 1:
            ens, zs = 0.0, 0.0
            for b in bundles:
                c, f, sc = (cands, fits, scores) if b is bundle else cross_fitted(b, Xc, yc)
                ens = ens + f[choose("auto", sc, c, yc, MARGIN)](np.ones(len(yc), bool)).predict_proba(X[test])
                zs = zs + b.predict_proba(X[test])
            for rule, p in ((f"auto, {k} seeds", ens), (f"zero-shot, {k} seeds", zs)):
                rows.append({"window": label, "rule": rule, "chosen": "", "accuracy": float(
                    (classes[p.argmax(1)] == y[test]).mean())})
        for r in rows[-len(RULES) - 2 * (k > 1):]:
            r.update(zero_shot=zero, n_calibration=int(cal.sum()), n_test=int(test.sum()))
    return rows


def main(argv: list[str] | None = None, *, variant: str = "") -> int:
    """Run ``--pairs`` into ``--out``, or ``--merge`` parts, or ``--compare`` finished runs.

    ``variant`` names what a wrapping script changed (``dev_augment.py``); it goes into every row.
    """
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pair_arguments(p, pop_cache_help="one folder per recipe: names do not say it")
    p.add_argument("--compare", type=Path, nargs="+", metavar="DIR",
                   help="finished runs (folders with nested.csv) against the first: writes recipes.md")
    p.add_argument("--seeds", type=int, default=1, help="populations per pair for the seed ensemble rows")
    add_recipe_arguments(p)
    a = p.parse_args(argv)
    recipe = parsed_recipe(p, a)
    if a.seeds < 1:
        p.error(f"--seeds must be at least 1, got {a.seeds}")
    if a.merge:
        write_tables(merge_parts(a.merge, "nested.csv", a.out), a.out)
        return 0
    if a.compare:
        compare_runs(a.compare, a.out)
        return 0
    d, meta, X, y = dev_data()
    sub = meta["subject"].astype(int).to_numpy()
    pairs = list(itertools.combinations(sorted(set(sub.tolist())), 2))
    indices = pair_indices(p, a.pairs, len(pairs))
    pretraining = f"{a.epochs} epochs, patience {a.patience}" + (f", {variant}" if variant else "")

    def rows_of(i: int, pair: tuple[int, int]) -> list[dict]:
        bundles = [population(d, ~np.isin(sub, pair), False, f"{pair[0]}-{pair[1]}", a.pop_cache, seed=k,
                              recipe=recipe) for k in range(a.seeds)]
        rows = []
        for subject, partner in (pair, pair[::-1]):
            t = sub == subject
            for r in evaluate(bundles, X[t], y[t], meta[t].reset_index(drop=True), d["net"].tmax,
                              check=i == indices[0]):
                rows.append({"pair": i, "subject": subject, "partner": partner, **r, "pretraining": pretraining})
        return rows

    write_tables(run_pairs(indices, pairs, rows_of, a.out, "nested.csv"), a.out)
    return 0


COMPARE_NOTE = ("Differences are in points; p is a paired Wilcoxon test over the validation subjects' means "
                "(n = 11; each subject is in 10 cells); W / T / L counts those subjects; harmed counts cells "
                "more than 5 points below their own population's zero-shot network.")


def compare_runs(folders: list[Path], out: Path) -> None:
    """recipes.md: zero-shot and ``auto`` of each run against the first, paired by cell and subject.

    See :data:`COMPARE_NOTE` for what the cells say.
    """
    from scipy.stats import wilcoxon

    key = ["pair", "subject", "window"]
    runs = [pd.read_csv(f / "nested.csv", dtype={"window": str}) for f in folders]
    runs = [r[r["rule"] == "auto"].set_index(key).sort_index() for r in runs]
    ref = runs[0]
    lines = ["# Variants on the nested development set, against the first run", "",
             f"Each run against the first ({ref['pretraining'].iloc[0] if 'pretraining' in ref else folders[0]}); "
             f"{len(ref) // 3} (population, validation subject) cells per window, the same in every run. "
             + COMPARE_NOTE, "",
             "| pretraining | what | 1 min | 2 min | one run | harmed cells |", "|---|---|---|---|---|---|"]
    for folder, run in zip(folders, runs):
        if not run.index.equals(ref.index):
            raise SystemExit(f"{folder}: not the same cells as {folders[0]}")
        name = run["pretraining"].iloc[0] if "pretraining" in run else str(folder)
        for what, col in (("zero-shot", "zero_shot"), ("auto", "accuracy")):
            cells = []
            for w in ("1", "2", "run"):
                d = (run[col] - ref[col]).xs(w, level="window")
                per = d.groupby(level="subject").mean().round(9)  # float noise is not a difference
                p = wilcoxon(per).pvalue if (per != 0).any() else 1.0
                mean = 100 * run[col].xs(w, level="window").mean()
                cells.append(f"{mean:.1f}" if run is ref else
                             f"{mean:.1f} ({100 * d.mean():+.1f}, p = {p:.3f}, "
                             f"{int((per > 0).sum())}/{int((per == 0).sum())}/{int((per < 0).sum())})")
            harmed = run["accuracy"] < run["zero_shot"] - HARM - 1e-9
            n_harmed = "" if what == "zero-shot" else " / ".join(
                str(int(harmed.xs(w, level="window").sum())) for w in ("1", "2", "run"))
            lines.append(f"| {name} | {what} | " + " | ".join(cells) + f" | {n_harmed} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipes.md").write_text("\n".join(lines + ["", *per_target_lines(folders, runs)]) + "\n")


def per_target_lines(folders: list[Path], runs: list[pd.DataFrame]) -> list[str]:
    """``auto``'s harmed cells / mean accuracy per target (over its validation subjects) in each run."""
    names = [r["pretraining"].iloc[0] if "pretraining" in r else str(f) for f, r in zip(folders, runs)]
    lines = ["Per target, `auto` over its 10 validation subjects and 3 windows: harmed cells / mean %.", "",
             "| target | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    cells = [r.assign(harmed=r["accuracy"] < r["zero_shot"] - HARM - 1e-9).groupby("partner")
             .agg(harmed=("harmed", "sum"), accuracy=("accuracy", "mean")) for r in runs]
    for target in cells[0].index:
        lines.append(f"| {target} | " + " | ".join(
            f"{int(c.loc[target, 'harmed'])} / {100 * c.loc[target, 'accuracy']:.1f}" for c in cells) + " |")
    return lines


def selection(df: pd.DataFrame, rules: tuple[str, ...] = RULES) -> pd.DataFrame:
    """Per target: each rule's harmed cells and mean accuracy on its validation subjects, and the choice.

    The choice is the docstring's: fewest harmed cells, then the higher mean, then the order of ``rules``.
    """
    df = df[df["rule"].isin(rules)]
    df = df.assign(harmed=df["accuracy"] < df["zero_shot"] - HARM - 1e-9)
    out = []
    for target, g in df.groupby("partner"):
        per = g.groupby("rule").agg(harmed=("harmed", "sum"), accuracy=("accuracy", "mean"))
        per = per.assign(order=[rules.index(r) for r in per.index])
        best = per.sort_values(["harmed", "accuracy", "order"], ascending=[True, False, True]).index[0]
        out.append({"target": target, "chosen rule": best, "n validation subjects": g["subject"].nunique(),
                    **{f"{r}: harmed / mean %": f"{int(per.loc[r, 'harmed'])} / {100 * per.loc[r, 'accuracy']:.1f}"
                       for r in rules}})
    return pd.DataFrame(out)


def write_tables(df: pd.DataFrame, out: Path) -> None:
    """nested.md: the choice per target, and every rule over all (pair, subject) cells."""
    df = df.assign(window=df["window"].astype(str))
    pooled = df.pivot_table(index="rule", columns="window", values="accuracy", aggfunc="mean")[["1", "2", "run"]]
    harmed = (df["accuracy"] < df["zero_shot"] - HARM - 1e-9).groupby([df["rule"], df["window"]]).sum().unstack()
    zero = df[df["rule"] == "auto"].groupby("window")["zero_shot"].mean()
    picks = df.groupby(["rule", "window"])["chosen"].value_counts().unstack(fill_value=0)
    (out / "nested.md").write_text("\n".join([
        "# Nested leave-one-subject-out: auto's rules on validation subjects' later runs", "",
        f"{df['pair'].nunique()} pairs, {len(df.drop_duplicates(['pair', 'subject']))} (population, validation "
        "subject) cells, plain populations; test trials = the validation subject's later runs. See the "
        "docstring of `benchmarks/dev_nested.py` for the protocol and the selection rule. Pretraining: "
        + "; ".join(df.get("pretraining", pd.Series(["not recorded"])).astype(str).unique()) + ".", "",
        "## The rule each target chose (from its 10 validation subjects, 3 windows each)", "",
        selection(df).to_markdown(index=False), "",
        "## Every rule over all cells (accuracy %, mean; the zero-shot network's: "
        + ", ".join(f"{w} {100 * zero[w]:.1f}" for w in ("1", "2", "run")) + ")", "",
        (pooled * 100).round(1).to_markdown(), "",
        "Cells more than 5 points below the zero-shot network (of "
        f"{len(df.drop_duplicates(['pair', 'subject']))} per window):", "", harmed.to_markdown(), "",
        "What each rule kept (cells):", "", picks.to_markdown(), "", *seed_lines(df)]))


def seed_lines(df: pd.DataFrame) -> list[str]:
    """The seed ensembles against one population, paired by cell (none when not run)."""
    ens = sorted(r for r in df["rule"].unique() if "seeds" in r)
    if not ens:
        return []
    wide = df.pivot_table(index=["pair", "subject", "window"], columns="rule", values="accuracy")
    zero = df[df["rule"] == "auto"].set_index(["pair", "subject", "window"])["zero_shot"]
    from scipy.stats import wilcoxon

    lines = ["## Ensembles over pretraining seeds (probabilities averaged)", "",
             "Ensemble minus seed 0, in points: the mean over cells, then each validation subject's mean over "
             "its 10 cells compared by a paired Wilcoxon test over the 11 subjects (subjects better / worse).",
             "Each seed's population also draws its own 2 validation subjects.", "",
             "| | 1 | 2 | run |", "|---|---|---|---|"]
    for name, single in (("auto", wide["auto"]), ("zero-shot", zero)):
        rule = next(r for r in ens if r.startswith(name + ","))
        cells = []
        for w in ("1", "2", "run"):
            diff = (wide[rule] - single).xs(w, level="window")
            per = diff.groupby(level="subject").mean()
            p = wilcoxon(per).pvalue if (per != 0).any() else 1.0
            cells.append(f"{100 * diff.mean():+.1f}, p = {p:.3f} ({int((per > 0).sum())} / {int((per < 0).sum())})")
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return lines + [""]


if __name__ == "__main__":
    raise SystemExit(main())
