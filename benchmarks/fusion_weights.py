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

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")
FIXED = (1.0, 3.0, 5.0, 10.0)


def fit_exponents(net: np.ndarray, expert: np.ndarray, cols: np.ndarray, *, both: bool) -> tuple[float, float]:
    """(a, w) minimising the log-loss of ``a * net + w * expert``; ``a = 1`` unless ``both``."""
    from scipy.optimize import minimize, minimize_scalar

    from eegtransfer.ssvep import MAX_WEIGHT, _log_softmax

    rows = np.arange(len(cols))

    def loss(a: float, w: float) -> float:
        return float(-_log_softmax(a * net + w * expert)[rows, cols].mean())

    if both:
        a, w = minimize(lambda p: loss(*p), np.ones(2), method="L-BFGS-B", bounds=[(0.0, MAX_WEIGHT)] * 2).x
        return float(a), float(w)
    return 1.0, float(minimize_scalar(lambda w: loss(1.0, w), bounds=(0.0, MAX_WEIGHT), method="bounded").x)


def one_target(target: int, d: dict, pop_cache: Path | None) -> list[dict]:
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
           pretrain(X[~t], y_all[~t], meta[~t], r, device="cpu", seed=0, **PRETRAIN))
    Xp, yp = X[~t], y_all[~t]
    val = np.isin(subj[~t], pop.provenance["validation_subjects"])
    experts = {name: CCAExpert.for_classes(pop.classes, r.sfreq, max_freq=r.h_freq, weight=0.0).fit(
        Xp[keep], yp[keep], l2=1e-3) for name, keep in (("in", np.ones(len(yp), bool)), ("held-out", ~val))}
    cols_v = experts["in"]._class_index(yp[val])
    net_v = _log_proba(pop.model, Xp[val], "cpu")
    fits = {"validation subjects, expert that saw them, a = 1 (the previous release)": ("in", False),
            "validation subjects, expert that saw them, a and w (the default)": ("in", True),
            "validation subjects, expert that did not see them, a = 1": ("held-out", False),
            "validation subjects, expert that did not see them, a and w": ("held-out", True)}
    rules = {name: fit_exponents(net_v, experts[which].log_proba(Xp[val]), cols_v, both=both)
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
        own = {"the patient's calibration trials, a = 1": fit_exponents(
            net_c, experts["in"].log_proba(Xt[cal]), experts["in"]._class_index(yt[cal]), both=False)}
        pairs = {**{f"fixed w = {w:g}, a = 1": (1.0, w) for w in FIXED}, **rules, **own}
        scores = {name: a * net_d + w * exp_d for name, (a, w) in pairs.items()}
        scores["expert alone"] = exp_d
        for name, s in scores.items():
            pred = np.asarray(pop.classes)[s.argmax(1)]
            a, w = pairs.get(name, (0.0, 1.0))
            rows.append({"subject": target, "window": window, "rule": name, "a": a, "w": w,
                         "balanced_accuracy": balanced_accuracy_score(yt[dev], pred)})
    return rows


def write_table(df: pd.DataFrame, out: Path, subjects: str) -> None:
    table = df.pivot_table(index="rule", columns="window", values="balanced_accuracy") * 100
    ratio = (df["w"] / df["a"].where(df["a"] > 0)).groupby(df["rule"]).median()
    table = table.assign(**{"median w / a": ratio.round(2), "n": df.groupby("rule")["subject"].nunique()})
    (out / "fusion_weights.md").write_text("\n".join([
        "# The expert's and the network's exponents in the `cca` product (development trials only)", "",
        f"Command: `python benchmarks/fusion_weights.py --subjects {subjects} ...` (see the script). Balanced "
        "accuracy (%) on the rest of each target's first run after its 1- or 2-minute calibration window, "
        "plain population, zero-shot network times the calibrated expert, mean over subjects (n per row). "
        "`a`: the network's exponent, `w`: the expert's.", "",
        table.round(1).sort_values("2").to_markdown(), ""]))


def main(argv: list[str] | None = None) -> int:
    from eegtransfer.evaluation.loso import load

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", default="1-11")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pop-cache", type=Path, default=None, help="populations saved by dev_first_run.py")
    p.add_argument("--merge", type=Path, nargs="+", help="folders of parts to merge into --out (nothing is run)")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.merge:
        df = pd.concat([pd.read_csv(f / "fusion_weights.csv", dtype={"window": str}) for f in a.merge])
        df.to_csv(a.out / "fusion_weights.csv", index=False)
        write_table(df, a.out, "1-11")
        return 0
    lo, _, hi = a.subjects.partition("-")
    d = load("Kalunga2016", sfreq=64.0)
    rows = [row for target in range(int(lo), int(hi or lo) + 1) for row in one_target(target, d, a.pop_cache)]
    df = pd.DataFrame(rows)
    df.to_csv(a.out / "fusion_weights.csv", index=False)
    write_table(df, a.out, a.subjects)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
