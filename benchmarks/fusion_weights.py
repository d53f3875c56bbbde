"""How much the CCA expert should count against the network: measured on development trials only.

The development set of ``benchmarks/dev_first_run.py`` (each target's first run, the rest after
the 1- or 2-minute calibration window; the test runs are never read), the plain population of
each leave-one-subject-out split and the ``cca`` product: the zero-shot network times the expert
calibrated on the window. Rows are ways to set the exponents of the product
``a * log p_network + w * log p_expert`` (only ``w / a`` changes a prediction):

- fixed ``w`` with ``a = 1``, and the expert alone;
- ``w`` fitted by log-loss on the population's validation subjects with ``a = 1`` (the previous
  release), the same with an expert that did not see those subjects, and ``w`` fitted on the
  patient's own calibration trials (network and population expert, both unfitted there);
- ``a`` and ``w`` fitted together on the validation subjects (``CCAExpert.fit_weight``, the
  default), and with the held-out expert.

About 2 minutes per half with ``--pop-cache`` (populations saved by ``dev_first_run.py``), else
the populations are pretrained first::

    python benchmarks/fusion_weights.py --subjects 1-6 --pop-cache DIR --out benchmarks/out/fw_a &
    python benchmarks/fusion_weights.py --subjects 7-11 --pop-cache DIR --out benchmarks/out/fw_b &
    wait; python benchmarks/fusion_weights.py --merge benchmarks/out/fw_a benchmarks/out/fw_b \\
        --out benchmarks/results/fusion_weights
"""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _devset import dev_arguments, merge_parts, subject_list

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")
FIXED = (1.0, 3.0, 5.0, 10.0)


def fit_exponents(expert: Any, net: np.ndarray, X: np.ndarray, y: np.ndarray, *, both: bool) -> tuple[float, float]:
    """(a, w) for ``a * net + w * expert.log_proba(X)``: ``CCAExpert.fit_weight`` when ``both``,
    else ``w`` alone by log-loss with ``a = 1`` (the previous release's fit)."""
    from scipy.optimize import minimize_scalar

    from eegtransfer.ssvep import MAX_WEIGHT, _log_softmax

    if both:
        e = copy.deepcopy(expert)
        e.fit_weight(net, X, y)
        return e.fitted_net_weight_, e.fitted_weight_
    rows, cols, lp = np.arange(len(y)), expert._class_index(y), expert.log_proba(X)
    return 1.0, float(minimize_scalar(lambda w: -_log_softmax(net + w * lp)[rows, cols].mean(),
                                      bounds=(0.0, MAX_WEIGHT), method="bounded").x)


def one_target(target: int, d: dict, pop_cache: Path | None, recipe: dict | None = None) -> list[dict]:
    """Accuracy of every exponent rule for one target, both windows."""
    from sklearn.metrics import balanced_accuracy_score

    from eegtransfer.adaptation import CCA, run_steps
    from eegtransfer.bundle import Bundle
    from eegtransfer.evaluation.loso import PRETRAIN
    from eegtransfer.evaluation.protocol import split_target, target_window
    from eegtransfer.ssvep import CCAExpert
    from eegtransfer.training.pretraining import _log_proba, pretrain

    meta, X = d["meta"], d["Xn"]
    y_all = meta["label"].astype(str).to_numpy()
    subj = meta["subject"].astype(str).to_numpy()
    t, r = subj == str(target), d["net"]
    cached = pop_cache / f"{target}-plain" if pop_cache else None
    pop = (Bundle.load(cached) if cached is not None and cached.exists() else
           pretrain(X[~t], y_all[~t], meta[~t], r, device="cpu", seed=0, **{**PRETRAIN, **(recipe or {})}))
    Xp, yp = X[~t], y_all[~t]
    val = np.isin(subj[~t], pop.provenance["validation_subjects"])
    experts = {name: CCAExpert.for_classes(pop.classes, r.sfreq, max_freq=r.h_freq, weight=0.0).fit(
        Xp[keep], yp[keep], l2=1e-3) for name, keep in (("in", np.ones(len(yp), bool)), ("held-out", ~val))}
    net_v = _log_proba(pop.model, Xp[val], "cpu")
    fits = {"validation subjects, expert that saw them, a = 1 (the previous release)": ("in", False),
            "validation subjects, expert that saw them, a and w (the default)": ("in", True),
            "validation subjects, expert that did not see them, a = 1": ("held-out", False),
            "validation subjects, expert that did not see them, a and w": ("held-out", True)}
    rules = {name: fit_exponents(experts[which], net_v, Xp[val], yp[val], both=both)
             for name, (which, both) in fits.items()}
    mt = meta[t].reset_index(drop=True)
    first, _ = split_target(mt)
    Xt, yt = X[t], y_all[t]
    rows = []
    for window in ("1", "2"):
        _, cal = target_window(mt, first, window, trial_seconds=r.tmax)
        dev = first & ~cal
        zero_shot = pop.copy()
        zero_shot.cca = experts["in"]
        net_d, net_c = (_log_proba(pop.model, Xt[m], "cpu") for m in (dev, cal))
        calibrated = run_steps(zero_shot, [CCA(weight=1.0)], Xt[cal], yt[cal], device="cpu", seed=0).cca
        exp_d = calibrated.log_proba(Xt[dev])
        own = {"the patient's calibration trials, a = 1": fit_exponents(experts["in"], net_c, Xt[cal], yt[cal],
                                                                        both=False)}
        pairs = {**{f"fixed w = {w:g}, a = 1": (1.0, w) for w in FIXED}, **rules, **own}
        scores = {name: a * net_d + w * exp_d for name, (a, w) in pairs.items()}
        scores["expert alone"] = exp_d
        for name, s in scores.items():
            pred = np.asarray(pop.classes)[s.argmax(1)]
            a, w = pairs.get(name, (0.0, 1.0))  # the expert alone: the network's exponent 0
            rows.append({"subject": target, "window": window, "rule": name, "a": a, "w": w,
                         "balanced_accuracy": balanced_accuracy_score(yt[dev], pred)})
    return rows


def write_table(df: pd.DataFrame, out: Path) -> None:
    """fusion_weights.md: mean balanced accuracy per rule and window, median ratio of the exponents."""
    subjects = subject_list(df)
    table = df.pivot_table(index="rule", columns="window", values="balanced_accuracy") * 100
    ratio = (df["w"] / df["a"].where(df["a"] > 0)).groupby(df["rule"]).median().round(2).astype(object)
    ratio["expert alone"] = "network left out"
    table = table.assign(**{"median w / a": ratio, "n": df.groupby("rule")["subject"].nunique()})
    (out / "fusion_weights.md").write_text("\n".join([
        "# The expert's and the network's exponents in the `cca` product (development trials only)", "",
        f"Command: `python benchmarks/fusion_weights.py --subjects {subjects} ...` (see the script). Balanced "
        "accuracy (%) on the rest of each target's first run after its 1- or 2-minute calibration window, "
        "plain population, zero-shot network times the calibrated expert, mean over subjects (n per row). "
        "`a`: the network's exponent, `w`: the expert's.", "",
        table.round(1).sort_values("2").to_markdown(), ""]))


def main(argv: list[str] | None = None) -> int:
    """Run the targets of ``--subjects`` (or merge parts) and write the CSV and the table."""
    from eegtransfer.evaluation.loso import load

    a = dev_arguments(__doc__.splitlines()[0], argv, pop_cache_help="populations saved by dev_first_run.py")
    if a.merge:
        write_table(merge_parts(a.merge, "fusion_weights.csv", a.out), a.out)
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    d = load("Kalunga2016", sfreq=64.0)
    rows = [row for target in a.targets for row in one_target(target, d, a.pop_cache, a.recipe)]
    df = pd.DataFrame(rows)
    df.to_csv(a.out / "fusion_weights.csv", index=False)
    write_table(df, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
