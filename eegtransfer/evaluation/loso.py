"""Leave-one-subject-out through the one protocol, ours against the baselines, for any MOABB dataset.

For every target subject (:mod:`eegtransfer.evaluation.protocol`): the test is all of its runs
after the first; calibration is each window (first 1 or 2 minutes, or the whole first run,
grown until every class has 2 trials), the same trials for every method; the population is
every other subject, known duplicated recordings removed on load. Ours: one network pretrained
per target (and once with Euclidean alignment), then each adaptation strategy (those with the
CCA expert for SSVEP classes only; ``auto`` on both populations, the plain one being what the
command line makes; with ``seeds`` > 1 also an ensemble of plain populations pretrained with
that many seeds, zero-shot and ``auto``, and each seed's population alone, family ``"seed"``, kept
out of the main tables). Baselines (:mod:`eegtransfer.evaluation.baselines`):
covariance TS+LR and MDM within subject (filter-bank covariances for SSVEP classes, broadband otherwise), RCT and RPA
with the population, CCA and filter-bank CCA detectors for SSVEP, the network from scratch; zero-shot is the reference. The transductive
protocol, kept out of the main tables: zero-shot and ``auto`` with each later run's classes
balanced without labels (:func:`balanced_rows`), RCT and RPA with each later run re-centred on its
own mean and then also balanced, the within-subject classifiers balanced. One row per subject, window and method: :func:`run_target` returns them and
:func:`write_results` makes every table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..covariance import covariances, filter_bank
from . import baselines as bl
from .protocol import recordings, split_target, target_window

PLAIN = ("bn", "head", "bn+head", "last-k", "ts", "cca", "bn+cca", "head+cca", "cca+ts", "bn+cca+ts", "auto")
ALIGNED = ("align", "align+head", "align+last-k", "align+cca", "align+head+cca", "align+cca+ts", "auto")
PRETRAIN = {"epochs": 50, "patience": 20, "lr": 1e-2, "batch_size": 64}
WINDOWS = ("1", "2", "run")
TRANSDUCTIVE, TRANSDUCTIVE_BASELINE = "transductive", "transductive baseline"  # read the later runs, without labels


def load(dataset: Any, sfreq: float | None = None) -> dict[str, Any]:
    """Every subject at the network's recipe and at the dataset's default recipe for the baselines.

    Both recipes cut the same trials (checked). ``sfreq`` lowers the network's input rate (its
    low-pass follows); ``None`` keeps the default.
    """
    from ..io.moabb import dataset_name, default_recipe, get_dataset, load_dataset

    dataset = get_dataset(dataset) if isinstance(dataset, str) else dataset
    base = default_recipe(dataset)
    net = base if sfreq is None else default_recipe(dataset, sfreq=sfreq, h_freq=min(base.h_freq, sfreq / 2 - 2))
    subjects = list(dataset.subject_list)
    Xn, meta, _ = load_dataset(dataset, subjects, net, on_missing="skip")
    Xb, meta_b = (Xn, meta) if net is base else load_dataset(dataset, subjects, base, on_missing="skip")[:2]
    cols = ["subject", "session", "run", "onset", "label"]
    if not meta[cols].equals(meta_b[cols]):
        raise RuntimeError("the two recipes cut different trials")
    freqs = bl.ssvep_frequencies(sorted(meta["label"].unique()))
    ext = filter_bank(Xb, base.sfreq, list(freqs.values())) if freqs else Xb
    return {"name": dataset_name(dataset), "Xn": Xn, "Xb": Xb, "C": covariances(ext), "meta": meta,
            "net": net, "base": base, "ssvep": bool(freqs)}


def ours(pops: dict[bool, Any], X: np.ndarray, y: np.ndarray, cal: np.ndarray, test: np.ndarray, *,
         model: str, device: str, seed: int, adapt_epochs: int) -> list[dict[str, Any]]:
    """Every strategy on the plain and the aligned population: name, predictions, seconds, guard.

    The strategies with the CCA expert run only where the population has one (SSVEP classes).
    """
    from ..adaptation import adapt

    rows = []
    for aligned, strategies in ((False, PLAIN), (True, ALIGNED)):
        for strategy in (s for s in strategies if "cca" not in s or pops[aligned].cca is not None):
            t0 = time.perf_counter()
            b = adapt(pops[aligned], X[cal], y[cal], strategy=strategy, device=device, seed=seed,
                      epochs=adapt_epochs, patience=20)
            a = b.adaptation
            name = f"{model} {strategy}" + (" (aligned population)" if aligned and strategy == "auto" else "")
            proba = b.predict_proba(X[test])
            rows.append({"method": name, "family": "ours", "pred": np.asarray(b.classes)[proba.argmax(1)],
                         "seconds": time.perf_counter() - t0, "guard": a.guard.kept if a.guard else None,
                         "chosen": a.chosen})
            if strategy == "auto" and not aligned:  # for the transductive rows (balanced_rows)
                rows[-1]["proba"] = proba
    return rows


def baseline_rows(d: dict[str, Any], t: np.ndarray, cal: np.ndarray, test: np.ndarray, *, model: str,
                  device: str, seed: int, adapt_epochs: int, rpa: bool) -> list[dict[str, Any]]:
    """Every baseline on the same calibration and test trials."""
    meta, C = d["meta"], d["C"]
    y = meta["label"].astype(str).to_numpy()
    Ct, yt, Xb = C[t], y[t], d["Xb"][t]
    rows = []

    def timed(name: str, fn: Callable[[], np.ndarray]) -> None:
        t0 = time.perf_counter()
        rows.append({"method": name, "family": "baseline", "pred": fn(), "seconds": time.perf_counter() - t0})

    prefix = "FB " if d["ssvep"] else ""
    runs = recordings(meta[t])[test]
    for name, pipe in bl.within_subject_pipelines().items():
        timed(prefix + name.removeprefix("FB "), lambda p=pipe: p.fit(Ct[cal], yt[cal]).predict(Ct[test]))
        timed(f"{prefix}{name.removeprefix('FB ')}, balanced recording",
              lambda p=pipe: bl.balanced_predict(p, Ct[test], runs))  # p was just fitted
        rows[-1]["family"] = TRANSDUCTIVE_BASELINE
    if d["ssvep"]:
        for name, fb in (("CCA", False), ("FBCCA", True)):
            timed(name, lambda fb=fb: bl.CCADetector(sfreq=d["base"].sfreq, max_freq=d["base"].h_freq,
                                                     filter_bank=fb).fit(Xb[cal], yt[cal]).predict(Xb[test]))
    pop = ~t
    for kind in ("RCT", "RPA") if rpa else ("RCT",):
        t0 = time.perf_counter()
        preds = bl.transfer_predict(C[pop], y[pop], meta["subject"][pop].to_numpy(), Ct[cal], yt[cal],
                                    Ct[test], rotate=kind == "RPA", test_runs=runs)
        for clf, pred in preds.items():
            rows.append({"method": f"{kind} {clf}", "family": TRANSDUCTIVE_BASELINE if "recording" in clf
                         else "baseline", "pred": pred, "seconds": (time.perf_counter() - t0) / len(preds)})
    Xn = d["Xn"][t]
    timed(f"{model} scratch", lambda: bl.scratch_predict(model, d["net"], sorted(set(y.tolist())), Xn[cal],
                                                        yt[cal], Xn[test], epochs=int(1.5 * adapt_epochs),
                                                        seed=seed, device=device))
    return rows


def run_target(target: int, d: dict[str, Any], *, model: str = "EEGNet", windows: tuple[str, ...] = WINDOWS,
               epochs: int = PRETRAIN["epochs"], adapt_epochs: int = 100, rpa: bool = True,
               device: str = "cpu", seed: int = 0, seeds: int = 1) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All methods for one target subject: (rows, pretraining facts).

    ``seeds`` > 1 also pretrains the plain population with seeds ``seed + 1 ...`` and adds the
    :class:`~eegtransfer.ensemble.BundleEnsemble` rows (zero-shot and ``auto``, every member
    adapted alike) and each of those seeds' own rows (:func:`seed_rows`).
    """
    from ..ensemble import BundleEnsemble
    from ..errors import EEGTransferError
    from ..training.pretraining import pretrain

    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise EEGTransferError(f"seeds= must be a whole number >= 1, got {seeds!r}")
    meta = d["meta"]
    t = (meta["subject"].astype(str) == str(target)).to_numpy()
    mt = meta[t].reset_index(drop=True)
    first, test = split_target(mt)
    y = mt["label"].astype(str).to_numpy()
    Xt, pop = d["Xn"][t], ~t
    settings = {**PRETRAIN, "epochs": epochs}
    pops, info = {}, {"target": target, "n_test": int(test.sum()), "settings": settings}

    def pretrained(aligned: bool, seed: int) -> Any:
        return pretrain(d["Xn"][pop], meta["label"][pop].to_numpy(), meta[pop], d["net"], model=model,
                        align=aligned, device=device, seed=seed, **settings)

    for aligned in (False, True):
        t0 = time.perf_counter()
        pops[aligned] = pretrained(aligned, seed)
        info["aligned" if aligned else "plain"] = {
            "seconds": round(time.perf_counter() - t0, 1), "epochs": len(pops[aligned].history["epochs"]),
            "best_epoch": pops[aligned].history["best_epoch"], "val_acc": pops[aligned].metrics.get("val_acc")}
    members = [pops[False]] + [pretrained(False, seed + k) for k in range(1, seeds)]
    info["seed_val_acc"] = [m.metrics.get("val_acc") for m in members]
    zero_proba = pops[False].predict_proba(Xt[test])
    zero = np.asarray(pops[False].classes)[zero_proba.argmax(1)]  # Bundle.predict, without a second pass
    rows = []
    kw = {"model": model, "device": device, "seed": seed, "adapt_epochs": adapt_epochs}
    for label in windows:
        w, cal = target_window(mt, first, label, trial_seconds=d["net"].tmax)
        cell = {"dataset": d["name"], "subject": target, "window": label, "minutes_used": w.minutes_used,
                "grown": w.grown, "n_calibration": w.n_trials, "n_test": int(test.sum())}
        methods = [{"method": f"{model} zero-shot", "family": "reference", "pred": zero, "seconds": 0.0}]
        methods += ours(pops, Xt, y, cal, test, **kw) + baseline_rows(d, t, cal, test, rpa=rpa, **kw)
        probas = {"zero-shot": zero_proba}
        probas.update(("auto", m.pop("proba")) for m in methods if "proba" in m)  # ours() adds it to auto's row
        methods += balanced_rows(model, pops[False].classes, probas, recordings(mt)[test])
        if seeds > 1:
            ens = BundleEnsemble(members)
            t0 = time.perf_counter()
            auto = ens.adapt(Xt[cal], y[cal], strategy="auto", device=device, seed=seed, epochs=adapt_epochs,
                             patience=20)  # as ours() adapts
            methods += [{"method": f"{model} zero-shot, {seeds} seeds", "family": "ours",
                         "pred": ens.predict(Xt[test]), "seconds": 0.0},
                        {"method": f"{model} auto, {seeds} seeds", "family": "ours", "pred": auto.predict(Xt[test]),
                         "seconds": time.perf_counter() - t0,
                         "chosen": "/".join(m.adaptation.chosen for m in auto.members)}]
            methods += seed_rows(model, seed, members, auto.members, Xt[test])
        for m in methods:
            pred = np.asarray(m.pop("pred")).astype(str)
            rows.append({**cell, **m, "accuracy": float((pred == y[test]).mean())})
    return rows, info


def balanced_rows(model: str, classes: list[str], probas: dict[str, np.ndarray], runs: np.ndarray
                  ) -> list[dict[str, Any]]:
    """The transductive rows of ours: each later recording's classes balanced without labels.

    Family ``"transductive"``: the whole later run is read before any of its trials is predicted,
    so these rows are kept out of the main tables (:func:`transductive_lines`).

    Parameters
    ----------
    model : str
        The network's name, the start of every method's name.
    classes : list of str
        The columns of the probabilities.
    probas : dict
        Name (``"zero-shot"``, ``"auto"``) -> test probabilities, shape (n_test, n_classes).
    runs : ndarray, shape (n_test,)
        The recording of each test trial (:func:`~eegtransfer.evaluation.protocol.recordings`);
        :func:`~eegtransfer.adaptation.balance_classes` balances each on its own.

    Returns
    -------
    rows : list of dict
        ``method``, ``family``, ``pred`` and ``seconds`` per name.
    """
    rows = []
    for name, p in probas.items():
        t0 = time.perf_counter()
        pred = bl.balanced_labels(p, classes, runs)
        rows.append({"method": f"{model} {name}, balanced recording", "family": TRANSDUCTIVE, "pred": pred,
                     "seconds": time.perf_counter() - t0})
    return rows


def seed_rows(model: str, seed: int, members: list[Any], adapted: list[Any], X_test: np.ndarray
              ) -> list[dict[str, Any]]:
    """Zero-shot and ``auto`` of each ensemble member but the first (whose rows are the main ones).

    Family ``"seed"``: kept out of the main tables, summarised by :func:`seed_lines`, so that a
    reader sees how much of a single-seed result is the seed. Their ``seconds`` are 0: the members
    are adapted together, timed in the ensemble's row.
    """
    rows = []
    for k in range(1, len(members)):
        rows += [{"method": f"{model} zero-shot, seed {seed + k}", "family": "seed",
                  "pred": members[k].predict(X_test), "seconds": 0.0},
                 {"method": f"{model} auto, seed {seed + k}", "family": "seed", "pred": adapted[k].predict(X_test),
                  "seconds": 0.0, "chosen": adapted[k].adaptation.chosen}]
    return rows


def seed_lines(df: pd.DataFrame, model: str, seed: int, harm_points: float = 5.0) -> list[str]:
    """One line per pretraining seed: zero-shot and ``auto`` with that seed's population alone.

    ``auto`` is compared with the zero-shot network of its own seed: mean difference, paired
    Wilcoxon p and the subjects more than ``harm_points`` below it (the harm criterion per seed).
    """
    from .stats import format_p, harmed_list, paired_comparison

    seeds = sorted({int(m.rsplit(" ", 1)[1]) for m in df.loc[df["family"] == "seed", "method"]})
    if not seeds:
        return []
    windows = list(dict.fromkeys(df["window"].astype(str)))
    lines = ["", "## Each pretraining seed alone", "",
             f"Zero-shot and `auto` with the population of one seed (seed {seed}: the rows above; the others: "
             "the ensemble's members, each adapted alone). Accuracy %, mean over subjects; `auto` against the "
             f"zero-shot network of the same seed: difference in points, paired Wilcoxon p, and the subjects more "
             f"than {harm_points:g} points below it.", "",
             "| seed | n | zero-shot | " + " | ".join(f"auto, {w}" for w in windows) + " |",
             "|---|---|---|" + "---|" * len(windows)]
    wide = {w: 100 * df[df["window"].astype(str) == w].pivot_table(index="subject", columns="method",
                                                                    values="accuracy") for w in windows}
    means: dict[str, list[float]] = {w: [] for w in windows}
    for s in [seed, *seeds]:
        suffix = "" if s == seed else f", seed {s}"
        cells = []
        for w in windows:
            z, a = wide[w][f"{model} zero-shot{suffix}"], wide[w][f"{model} auto{suffix}"]
            t = paired_comparison(a, z)
            p = format_p(t["p"])
            cells.append(f"{a.mean():.1f} ({t['mean_diff']:+.1f}, p {p if p[0] == '<' else '= ' + p}; "
                         f"harmed: {harmed_list(a - z, harm_points)})")
            means[w].append(a.mean())
        lines.append(f"| {s} | {t['n']} | {z.mean():.1f} | " + " | ".join(cells) + " |")
    lines.append(f"| mean ± std over {len(seeds) + 1} seeds | | | "
                 + " | ".join(f"{np.mean(v):.1f} ± {np.std(v, ddof=1):.1f}" for v in means.values()) + " |")
    return lines


def transductive_lines(df: pd.DataFrame, reference: str, harm_points: float = 5.0) -> list[str]:
    """The transductive protocol's tables: its rows beside the reference and every baseline.

    Ours (:func:`balanced_rows`) and the transductive baselines are compared with the zero-shot
    network (``reference``) and the best baseline, inductive or transductive, as in the main
    tables; then the balanced ``auto`` with the balanced network, the transductive protocol's own
    zero-shot.

    Parameters
    ----------
    df : pandas.DataFrame
        The per-subject rows of one run (no ``"seed"`` family).
    reference : str
        The zero-shot network's method name.
    harm_points : float
        A subject more than this many points below a reference counts as harmed.

    Returns
    -------
    lines : list of str
        Markdown; empty where the run has no transductive rows.
    """
    from .stats import _window_name, benchmark_markdown, format_p, harmed_list, paired_comparison

    fams = {TRANSDUCTIVE: "ours", TRANSDUCTIVE_BASELINE: "baseline"}
    if not df["family"].isin(list(fams)).any():
        return []
    sub = df[df["family"].isin(["reference", "baseline", *fams])].assign(family=lambda t: t["family"].replace(fams))
    model = reference.split()[0]
    auto, net = f"{model} auto, balanced recording", f"{model} zero-shot, balanced recording"
    windows = list(dict.fromkeys(df["window"].astype(str)))
    lines = ["", "## Transductive protocol: each later recording read, without labels, before it is predicted", "",
             "Same subjects, calibration and test trials. Ours: the class probabilities of every later run rescaled "
             "until the run's mean is uniform (`eegtransfer.adaptation.balance_classes`, for runs that hold every "
             f"class equally often; dataset {df['dataset'].iloc[0]}), chosen on Kalunga2016's development set "
             "(`benchmarks/results/dev_balance`). Baselines given the same unlabelled later runs: re-centring (RCT, "
             "and RPA where it ran) with every later run re-centred on its own mean, the original form of "
             "re-centring, then also balanced the same way; the within-subject classifiers balanced; and the "
             "inductive baselines above (the CCA detectors give no probabilities to balance). Kept apart from the "
             "main tables: a patient's trials cannot be predicted online this way.", "",
             benchmark_markdown(sub, reference=reference, primary=auto, harm_points=harm_points,
                                primary_label="the transductive protocol's method"), "",
             f"`{auto}` against `{net}` (the transductive protocol's zero-shot): accuracy %, difference in points, "
             f"paired Wilcoxon p, and the subjects more than {harm_points:g} points below it.", "",
             "| window | n | " + net + " | " + auto + " |", "|---|---|---|---|"]
    for w in windows:
        wide = 100 * df[df["window"].astype(str) == w].pivot_table(index="subject", columns="method",
                                                                   values="accuracy")
        t = paired_comparison(wide[auto], wide[net])
        p = format_p(t["p"])
        lines.append(f"| {_window_name(w)} | {t['n']} | {wide[net].mean():.1f} | {wide[auto].mean():.1f} "
                     f"({t['mean_diff']:+.1f}, p {'< ' + p[1:] if p[0] == '<' else '= ' + p}; "
                     f"harmed: {harmed_list(wide[auto] - wide[net], harm_points)}) |")
    return lines


def moabb_results(df: pd.DataFrame) -> pd.DataFrame:
    """The per-subject table in MOABB's results format (for ``moabb.analysis`` plots and statistics).

    One row per (subject, window, method): ``score``, ``time``, ``samples``, ``subject``,
    ``session``, ``dataset`` and ``pipeline`` (method @ window).
    """
    return pd.DataFrame({"score": df["accuracy"], "time": df["seconds"], "samples": df["n_calibration"],
                         "subject": df["subject"].astype(str), "session": "0",
                         "dataset": df.get("dataset", "dataset"),
                         "pipeline": [f"{m} @ {w}" for m, w in zip(df["method"], df["window"].astype(str))]})


def write_results(df: pd.DataFrame, runs: list[dict[str, Any]], out: Path, *, title: str,
                  merged: str | None = None) -> Path:
    """``loso.csv`` (per subject), ``loso_moabb.csv`` (MOABB format) and ``loso.md`` (every table)."""
    from ..io import duplicates_note
    from .stats import benchmark_markdown

    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "loso.csv", index=False)
    every, df = df, df[df["family"] != "seed"]  # one population per target
    moabb_results(df).to_csv(out / "loso_moabb.csv", index=False)
    df = df[~df["family"].isin([TRANSDUCTIVE, TRANSDUCTIVE_BASELINE])]  # the main tables: the inductive protocol
    pre = sorted((p for r in runs for p in r["pretraining"]), key=lambda p: int(p["target"]))
    model = str(df.loc[df["family"] == "reference", "method"].iloc[0])
    lines = [f"# {title}", "", "Commands (OMP_NUM_THREADS=1; parts run side by side, then merged):", "",
             "```", *[r["command"] for r in runs], *([merged] if merged else []), "```", "",
             f"- Wall time: {max(r['wall_seconds'] for r in runs) / 60:.1f} min (the longest part); seed "
             f"{runs[0]['args']['seed']}; device {runs[0]['args']['device']}.",
             f"- Duplicated recordings: {duplicates_note(runs[0].get('dataset', 'Kalunga2016'))}.",
             f"- Network recipe {json.dumps(runs[0]['recipe_network'])}; baselines use the dataset's "
             f"default recipe {json.dumps(runs[0]['recipe_baselines'])}. Both cut the same trials.",
             f"- Pretraining ({model.split()[0]}, AdamW, early stopping on 2 held-out population subjects): "
             f"{'; '.join(sorted({json.dumps(p['settings']) if 'settings' in p else 'not recorded' for p in pre}))}; "
             "population validation accuracy per target, plain / aligned: "
             + ", ".join(f"{p['target']}: {p['plain']['val_acc']:.2f} / {p['aligned']['val_acc']:.2f}" for p in pre)
             + ".",
             "- Calibration windows (minutes actually used and trials, mean over subjects): "
             + "; ".join(f"{w}: {g['minutes_used'].mean():.2f} min, {g['n_calibration'].mean():.1f} trials, "
                         f"grown for {int(g.drop_duplicates('subject')['grown'].sum())} of "
                         f"{g['subject'].nunique()} subjects" for w, g in df.groupby("window", sort=False)) + ".",
             "", benchmark_markdown(df, reference=model, primary=f"{model.split()[0]} auto"),
             *seed_lines(every, model.split()[0], int(runs[0]["args"]["seed"])),
             *transductive_lines(every[every["family"] != "seed"], model), ""]
    (out / "loso.md").write_text("\n".join(lines))
    return out / "loso.md"
