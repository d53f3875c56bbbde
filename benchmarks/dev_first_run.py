"""Design choices measured on each subject's first run only (the test runs are never read).

For every target of a leave-one-subject-out split, the calibration window (1 or 2 minutes, grown
as in the protocol) fits each candidate and the **rest of the first run** scores it. This is the
development set on which the choices of the accuracy work were made (fusion with the CCA
expert, its pull towards the population, the pretraining monitor); the protocol's test runs
(:mod:`eegtransfer.evaluation.protocol`) are scored once, afterwards, by ``benchmarks/loso.py``::

    python benchmarks/dev_first_run.py --subjects 1-6 --out benchmarks/out/dev_a &
    python benchmarks/dev_first_run.py --subjects 7-11 --out benchmarks/out/dev_b &

``--pop-cache DIR`` keeps each target's two pretrained populations there and reuses them on the
next run (their CCA experts are refitted with the current code), so that a change to
adaptation is measured in minutes.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _devset import dev_arguments, dev_data, merge_parts, population, subject_list

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    from sklearn.metrics import balanced_accuracy_score

    from eegtransfer.adaptation import CCA, Align, Head, adapt, run_steps
    from eegtransfer.evaluation.protocol import split_target, target_window
    from eegtransfer.ssvep import CCAExpert

    a = dev_arguments(__doc__.splitlines()[0], argv, pop_cache_help="folder for the pretrained populations")
    if a.merge:
        df = merge_parts(a.merge, "dev.csv", a.out)
        write_tables(df, a.out, subject_list(df))
        return 0
    targets = a.targets
    d, meta, X, y_all = dev_data()
    rows, chosen = [], {}
    a.out.mkdir(parents=True, exist_ok=True)
    for target in targets:
        t = (meta["subject"].astype(str) == str(target)).to_numpy()
        mt = meta[t].reset_index(drop=True)
        first, _ = split_target(mt)
        Xt, yt, pop = X[t], y_all[t], ~t
        pops = {aligned: population(d, pop, aligned, target, a.pop_cache, recipe=a.recipe) for aligned in (False, True)}
        plain_cca = CCAExpert.for_classes(pops[False].classes, d["net"].sfreq, max_freq=d["net"].h_freq, weight=0.0,
                                          bands=[None], n_components=1).fit(X[pop], y_all[pop], l2=1e-3)
        for label in ("1", "2"):
            w, cal = target_window(mt, first, label, trial_seconds=d["net"].tmax)
            dev = first & ~cal
            Xc, yc, Xd, yd = Xt[cal], yt[cal], Xt[dev], yt[dev]
            probs = {"cca expert of the population alone": pops[False].cca.log_proba(Xd),
                     "plain-CCA expert of the population alone": plain_cca.log_proba(Xd)}
            for aligned, pre in ((False, []), (True, [Align()])):
                old = pops[aligned].copy()
                old.cca = plain_cca
                b = run_steps(old, pre + [CCA()], Xc, yc, device="cpu", seed=0)
                probs[("align+" if aligned else "") + "cca, plain-CCA expert"] = np.log(b.predict_proba(Xd) + 1e-12)
            for l2 in (0.1, 1.0, 10.0):
                e = CCA(l2=l2).fit(pops[False].copy(), Xc, yc).cca
                probs[f"cca expert calibrated, l2={l2:g}, alone"] = e.log_proba(Xd)
            for aligned, pre in ((False, []), (True, [Align()])):
                name = "align+" if aligned else ""
                chains = {"none": [], "head": [Head()], "cca": [CCA()], "cca weight 1": [CCA(weight=1.0)],
                          "head+cca": [Head(), CCA()], "head+cca weight 1": [Head(), CCA(weight=1.0)]}
                for strat, steps in chains.items():
                    b = run_steps(pops[aligned], pre + steps, Xc, yc, device="cpu", seed=0)
                    probs[(name + strat).replace("+none", "") or "none"] = np.log(b.predict_proba(Xd) + 1e-12)
                b = adapt(pops[aligned], Xc, yc, strategy="auto", device="cpu", seed=0)
                probs["auto" + (" (aligned population)" if aligned else "")] = np.log(b.predict_proba(Xd) + 1e-12)
                chosen["auto" + (" (aligned population)" if aligned else "")] = b.adaptation.chosen
            popb = pops[False]
            for name, lp in probs.items():
                pred = np.asarray(popb.classes)[lp.argmax(1)]
                rows.append({"subject": target, "window": label, "method": name, "n_cal": int(cal.sum()),
                             "n_dev": int(dev.sum()), "accuracy": float((pred == yd).mean()),
                             "balanced_accuracy": float(balanced_accuracy_score(yd, pred)),
                             "chosen": chosen.get(name), "weight_plain": pops[False].cca.fitted_weight_,
                             "weight_aligned": pops[True].cca.fitted_weight_,
                             "net_weight_plain": pops[False].cca.fitted_net_weight_,
                             "net_weight_aligned": pops[True].cca.fitted_net_weight_})
        pd.DataFrame(rows).to_csv(a.out / "dev.csv", index=False)
    write_tables(pd.DataFrame(rows), a.out, a.subjects)
    return 0


def write_tables(df: pd.DataFrame, out: Path, subjects: str) -> None:
    """dev.md: mean balanced accuracy per method and window, and what auto chose."""
    table = df.pivot_table(index="method", columns="window", values="balanced_accuracy", aggfunc="mean") * 100
    n = df.groupby("method")["subject"].nunique()
    picks = df.dropna(subset=["chosen"]).groupby(["method", "window"])["chosen"].value_counts().unstack(fill_value=0)
    (out / "dev.md").write_text("\n".join([
        "# Development set: the rest of each subject's first run (the test runs are never read)", "",
        f"Command: `python benchmarks/dev_first_run.py --subjects {subjects} --out {out}`. Balanced accuracy "
        "(%) of the trials of the first run after the calibration window, mean over subjects (n per row); "
        f"calibration and development trials per subject, mean: {df.groupby('window')['n_cal'].mean().round(1).to_dict()}"
        f" and {df.groupby('window')['n_dev'].mean().round(1).to_dict()}.", "",
        table.round(1).assign(n=n).sort_values(table.columns[-1]).to_markdown(), "",
        "What `auto` chose (subjects per window):", "", picks.to_markdown(), "",
        "The CCA expert's and the network's exponents in the product, fitted on each population's "
        "validation subjects (`CCAExpert.fit_weight`), per target, plain / aligned population: " + ", ".join(
            f"{t}: {_pair(g, 'plain')} / {_pair(g, 'aligned')}" for t, g in df.groupby("subject")) + ".", ""]))


def _pair(g: pd.DataFrame, which: str) -> str:
    """'expert, network' exponents of one target's population (network missing in older CSVs)."""
    net = g[f"net_weight_{which}"].iloc[0] if f"net_weight_{which}" in g else float("nan")
    return f"{g[f'weight_{which}'].iloc[0]:.2f}, {net:.2f}"


if __name__ == "__main__":
    raise SystemExit(main())
