"""Weighing ``auto``'s candidates instead of choosing one, on the nested development set (not adopted).

``auto`` keeps one candidate, chosen by its cross-fitted log-loss on 14 to 32 calibration trials.
A soft combination is the usual remedy for a noisy choice, and the zero-shot network can take
part in it, so a patient whose fused products only look better on the calibration run might
keep some of the network. Rules, all from one 2-fold chronological cross-fitting of ``auto``'s
candidates and the zero-shot network (the folds of :func:`eegtransfer.adaptation.guard.cross_fit`),
on the cells of ``dev_nested.py`` (same pairs, populations, windows and test trials):

- ``auto``: its winner (as ``dev_nested.py``);
- ``auto, guarded``: the winner where it beats the network by the guard's margin, else the network;
- ``pseudo-BMA``: the candidates and the network mixed with weights proportional to their
  cross-fitted likelihoods, ``exp(-summed out-of-fold log-loss)`` (Yao et al. 2018's pseudo-BMA);
- ``stacking``: mixed with the simplex weights that maximise the out-of-fold likelihood of the
  mixture (Yao et al. 2018's stacking of predictive distributions);
- ``auto, soft guard``: the winner where it beats the network by the margin, else the two mixed
  half and half.

Each mixture averages the members' test probabilities, every member refitted on all the
calibration trials. Selection, written down before the first run: ``dev_nested.py``'s (per
target, over its ten validation subjects and three windows, the rule with the fewest cells more
than 5 points below the zero-shot network, then the higher mean, then the order above); a rule
replaces ``auto``'s only if 6 or more of the 11 targets choose it. Outcome: with the expert's
full say on ``rest`` (the package before ``REST_EVIDENCE``; ``results/dev_combine/full_say``), no
rule removed the harm and none was chosen by more than 4 targets. With the package's expert
(``results/dev_combine``) the guarded rules and pseudo-BMA harm fewer cells (3 against 5 at 1 and
2 minutes), but ``auto`` kept 5 targets and pseudo-BMA won 4: ``auto`` unchanged.

``combine.md`` also counts, per validation subject, the stimulated trials of its later runs
that ``auto``'s winner and the network call ``rest`` (where the harm comes from), and two
label-free signs of drift (its agreement with the network and its confidence, calibration
run against later runs). ::

    python benchmarks/dev_combine.py --pairs 0-27 --out benchmarks/out/comb_a --pop-cache DIR &
    python benchmarks/dev_combine.py --pairs 28-54 --out benchmarks/out/comb_b --pop-cache DIR &
    wait; python benchmarks/dev_combine.py --merge benchmarks/out/comb_a benchmarks/out/comb_b \\
        --out benchmarks/results/dev_combine

and the same with ``--rest-evidence 1`` (every expert's full say on ``rest``) into
``results/dev_combine/full_say``.
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
from _devset import (
    add_pair_arguments,
    add_recipe_arguments,
    dev_data,
    merge_parts,
    pair_indices,
    parsed_recipe,
    population,
    rest_evidence,
    run_pairs,
    share,
)
from dev_nested import HARM, cross_fitted, fitters, selection

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", category=FutureWarning)

RULES = ("auto", "auto, guarded", "pseudo-BMA", "stacking", "auto, soft guard")
REST = "rest"


def out_of_fold(fits: dict[str, Any], X: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Each fitter's out-of-fold class probabilities on the calibration trials, cross_fit's folds."""
    from eegtransfer.adaptation.guard import chronological_folds

    folds = chronological_folds(y, 2)
    oof = {}
    for name, fit in fits.items():
        parts = [fit(folds != k).predict_proba(X[folds == k]) for k in range(2)]
        oof[name] = np.empty((len(y), parts[0].shape[1]))
        for k, part in enumerate(parts):
            oof[name][folds == k] = part
    return oof


def likelihoods(P: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Each model's probability of the true class, (n_models, n_trials), clipped as the guard clips."""
    return np.clip(P[:, np.arange(len(idx)), idx], 1e-7, 1.0)


def bma_weights(L: np.ndarray) -> np.ndarray:
    """Pseudo-BMA: weights proportional to each model's summed out-of-fold log-likelihood, exponentiated."""
    s = np.log(L).sum(axis=1)
    w = np.exp(s - s.max())
    return w / w.sum()


def stacking_weights(L: np.ndarray) -> np.ndarray:
    """Simplex weights maximising the out-of-fold log-likelihood of the mixture (softmax parametrised)."""
    from scipy.optimize import minimize

    def loss(z: np.ndarray) -> float:
        w = np.exp(z - z.max())
        return float(-np.log((w / w.sum()) @ L).sum())

    z = minimize(loss, np.zeros(len(L)), method="L-BFGS-B").x
    w = np.exp(z - z.max())
    return w / w.sum()


def rule_probas(names: list[str], oof: dict[str, np.ndarray], test: dict[str, np.ndarray], chosen: str,
                ahead: bool, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Every rule's test probabilities (``names``: the candidates, then ``zero-shot``)."""
    L = likelihoods(np.stack([oof[n] for n in names]), idx)
    T = np.stack([test[n] for n in names])
    net = test["zero-shot"]
    return {"auto": test[chosen], "auto, guarded": test[chosen] if ahead else net,
            "pseudo-BMA": np.tensordot(bma_weights(L), T, axes=1),
            "stacking": np.tensordot(stacking_weights(L), T, axes=1),
            "auto, soft guard": test[chosen] if ahead else (test[chosen] + net) / 2}


def evaluate(bundle: Any, X: np.ndarray, y: np.ndarray, mt: pd.DataFrame, trial_seconds: float, check: bool
             ) -> list[dict[str, Any]]:
    """Every rule on one validation subject's three windows: one row per window and rule.

    With ``check``, the out-of-fold probabilities are shown to give ``cross_fit``'s scores.
    """
    from eegtransfer.adaptation.auto import choose_candidate
    from eegtransfer.adaptation.guard import MARGIN, _score
    from eegtransfer.evaluation.protocol import split_target, target_window

    first, test = split_target(mt)
    classes = np.asarray(bundle.classes)
    zero = bundle.predict_proba(X[test])
    zero_pred, stim = classes[zero.argmax(1)], y[test] != REST
    rows = []
    for label in ("1", "2", "run"):
        w, cal = target_window(mt, first, label, trial_seconds=trial_seconds)
        Xc, yc, idx = X[cal], y[cal], bundle.encode(y[cal])
        cands, fits = fitters(bundle, Xc, yc)
        names = [*cands, "zero-shot"]
        oof = out_of_fold({**fits, "zero-shot": lambda mask: bundle}, Xc, yc)
        scores = {n: {"log_loss": _score(oof[n], idx)[0] / len(yc)} for n in names}
        if check:  # float32 sums differ in the last digits
            ref = cross_fitted(bundle, Xc, yc)[2]
            assert all(abs(scores[n]["log_loss"] - ref[n]["log_loss"]) < 1e-6 for n in names)
        chosen = choose_candidate(scores, cands, MARGIN)
        ahead = scores["zero-shot"]["log_loss"] - scores[chosen]["log_loss"] >= MARGIN
        full = np.ones(len(yc), bool)
        test_p = {**{n: fits[n](full).predict_proba(X[test]) for n in cands}, "zero-shot": zero}
        cal_rest = float((classes[oof[chosen].argmax(1)][yc != REST] == REST).mean())
        drift = {  # label-free: could the winner's behaviour on a new recording flag the harm?
            "agreement_calibration": float((oof[chosen].argmax(1) == oof["zero-shot"].argmax(1)).mean()),
            "agreement_later": float((test_p[chosen].argmax(1) == zero.argmax(1)).mean()),
            "confidence_calibration": float(oof[chosen].max(1).mean()),
            "confidence_later": float(test_p[chosen].max(1).mean())}
        for rule, p in rule_probas(names, oof, test_p, chosen, ahead, idx).items():
            pred = classes[p.argmax(1)]
            rows.append({"window": label, "rule": rule, "chosen": chosen, "accuracy": float((pred == y[test]).mean()),
                         "zero_shot": float((zero_pred == y[test]).mean()),
                         "stimulated_called_rest": float((pred[stim] == REST).mean()),
                         "zero_shot_stimulated_called_rest": float((zero_pred[stim] == REST).mean()),
                         "winner_out_of_fold_stimulated_called_rest": cal_rest, **drift,
                         "n_calibration": int(cal.sum()), "n_test": int(test.sum())})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run ``--pairs`` into ``--out``, or ``--merge`` parts into ``--out``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pair_arguments(p, pop_cache_help="a dev_nested.py population folder of this recipe")
    p.add_argument("--rest-evidence", type=share, default=None,
                   help="every expert's say on rest, 0 to 1 (as dev_rest_evidence.py); default: the package's")
    add_recipe_arguments(p)
    a = p.parse_args(argv)
    recipe = parsed_recipe(p, a)
    if a.merge:
        write_tables(merge_parts(a.merge, "combine.csv", a.out), a.out)
        return 0
    d, meta, X, y = dev_data()
    sub = meta["subject"].astype(int).to_numpy()
    pairs = list(itertools.combinations(sorted(set(sub.tolist())), 2))
    indices = pair_indices(p, a.pairs, len(pairs))
    expert = "the package's" if a.rest_evidence is None else f"say on rest {a.rest_evidence:g}"

    def rows_of(i: int, pair: tuple[int, int]) -> list[dict]:
        bundle = population(d, ~np.isin(sub, pair), False, f"{pair[0]}-{pair[1]}", a.pop_cache, recipe=recipe)
        rows = []
        for subject, partner in (pair, pair[::-1]):
            t = sub == subject
            for r in evaluate(bundle, X[t], y[t], meta[t].reset_index(drop=True), d["net"].tmax, i == indices[0]):
                rows.append({"pair": i, "subject": subject, "partner": partner, **r,
                             "pretraining": f"{a.epochs} epochs, patience {a.patience}", "expert": expert})
        return rows

    with rest_evidence(a.rest_evidence):
        df = run_pairs(indices, pairs, rows_of, a.out, "combine.csv")
    write_tables(df, a.out)
    return 0


def write_tables(df: pd.DataFrame, out: Path) -> None:
    """combine.md: every rule over all cells, harmed cells and subjects, each target's choice, and ``rest``."""
    df = df.assign(window=df["window"].astype(str), harmed=df["accuracy"] < df["zero_shot"] - HARM - 1e-9)
    n_cells = len(df.drop_duplicates(["pair", "subject"]))
    mean = (100 * df.pivot_table(index="rule", columns="window", values="accuracy")).round(1).loc[list(RULES)]
    harmed = df.pivot_table(index="rule", columns="window", values="harmed", aggfunc="sum").loc[list(RULES)]
    by_subject = df[df["harmed"]].groupby(["rule", "subject"]).size().unstack(fill_value=0).reindex(list(RULES))
    picks = selection(df, RULES)
    auto = df[(df["rule"] == "auto") & (df["window"] != "run")]
    rest = (100 * auto.groupby("subject")[["winner_out_of_fold_stimulated_called_rest", "stimulated_called_rest",
                                           "zero_shot_stimulated_called_rest", "harmed"]].mean()).round(0)
    (out / "combine.md").write_text("\n".join([
        "# Weighing auto's candidates instead of choosing one (nested development set)", "",
        f"{df['pair'].nunique()} pairs, {n_cells} (population, validation subject) cells; see the docstring of "
        "`benchmarks/dev_combine.py` for the rules and the selection fixed before the run. Pretraining: "
        + "; ".join(df["pretraining"].astype(str).unique()) + ". The CCA expert: "
        + "; ".join(df.get("expert", pd.Series(["full say on rest (before it was an option)"])).astype(str).unique())
        + ".", "",
        "Accuracy %, mean over the cells (the zero-shot network's: "
        + ", ".join(f"{w} {100 * df[df['rule'] == 'auto'].groupby('window')['zero_shot'].mean()[w]:.1f}"
                    for w in ("1", "2", "run")) + "):", "", mean.to_markdown(), "",
        f"Cells more than 5 points below the zero-shot network (of {n_cells} per window):", "",
        harmed.to_markdown(), "", "The same cells by validation subject (all windows):", "",
        by_subject.fillna(0).astype(int).to_markdown(), "",
        "## The rule each target chose (from its 10 validation subjects, 3 windows each)", "",
        picks.to_markdown(index=False), "",
        "Targets per rule: " + ", ".join(f"{r} {n}" for r, n in picks["chosen rule"].value_counts().items())
        + f" (a new rule needed {len(picks) // 2 + 1} of {len(picks)}).", "",
        "## Where the harm comes from: stimulated trials called rest", "",
        "Per validation subject, mean over its cells at 1 and 2 minutes: the share (%) of stimulated trials "
        "called `rest` by `auto`'s winner on its calibration trials (out of fold) and on its later runs, and by "
        "the zero-shot network on the later runs; and the share of its cells harmed.", "",
        rest.rename(columns={"winner_out_of_fold_stimulated_called_rest": "auto, calibration (out of fold)",
                             "stimulated_called_rest": "auto, later runs",
                             "zero_shot_stimulated_called_rest": "zero-shot, later runs",
                             "harmed": "harmed cells"}).to_markdown(), "", *drift_lines(auto)]))


def drift_lines(auto: pd.DataFrame) -> list[str]:
    """Per validation subject: label-free signs of drift between the calibration run and the later runs."""
    cols = ["agreement_calibration", "agreement_later", "confidence_calibration", "confidence_later"]
    if not set(cols) <= set(auto.columns):
        return []
    per = auto.groupby("subject")[[*cols, "harmed"]].mean()
    per = per.assign(agreement_change=per["agreement_later"] - per["agreement_calibration"],
                     confidence_change=per["confidence_later"] - per["confidence_calibration"])
    return ["## A label-free drift check?", "",
            "Per validation subject, mean over its cells at 1 and 2 minutes: how often `auto`'s winner agrees with "
            "the zero-shot network, and its mean top probability, on the calibration trials (out of fold) and on "
            "the later runs (no labels needed), and the share of its cells harmed.", "",
            per[[*cols, "agreement_change", "confidence_change", "harmed"]].round(2).to_markdown(), ""]


if __name__ == "__main__":
    raise SystemExit(main())
