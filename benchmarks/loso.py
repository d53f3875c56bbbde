"""Kalunga2016 leave-one-subject-out through the one protocol, against strong baselines.

For every target subject (:mod:`eegtransfer.evaluation.protocol`):

- the **test** is all of its runs after the first, the same trials for every method and row;
- **calibration** is the first 1 or 2 minutes, or the whole first run, grown to the first
  trial at which every class has 2 trials (Kalunga's runs open with about a minute of rest),
  the same trials for every method; the minutes used are in the CSV;
- the **population** is every other subject, the published copy of a recording removed.

Ours: EEGNet pretrained once per target on its population (and once with Euclidean
alignment), then each adaptation strategy. Baselines (:mod:`eegtransfer.evaluation.baselines`):
zero-shot, filter-bank TS+LR and MDM within subject, re-centring (RCT) and Riemannian
Procrustes analysis (RPA) with the population, a CCA detector, EEGNet from scratch.
One row per subject, method and calibration amount goes to ``loso.csv``; every table in
``loso.md`` is made from it, with n, paired Wilcoxon tests and effect sizes.

Usage::

    python benchmarks/loso.py --out benchmarks/out/a --subjects 1-6 &
    python benchmarks/loso.py --out benchmarks/out/b --subjects 7-11 &
    wait; python benchmarks/loso.py --merge benchmarks/out/a benchmarks/out/b --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", category=FutureWarning)

DATASET = "Kalunga2016"
MODEL = "EEGNet"
PLAIN = ["bn", "head", "bn+head", "last-k", "auto"]
ALIGNED = ["align", "align+head", "align+last-k"]
# Fixed in advance on the population only; capped so that 11 targets fit ~30 min on 2 cores.
PRETRAIN = dict(epochs=25, patience=10, lr=1e-2, batch_size=64)
WINDOWS = ("1", "2", "run")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", default="1-11", help="targets, e.g. 1-11 or 1,3,7 (default 1-11)")
    p.add_argument("--sfreq", type=float, default=64.0, help="network input rate (default 64 Hz)")
    p.add_argument("--epochs", type=int, default=PRETRAIN["epochs"], help="maximum pretraining epochs")
    p.add_argument("--adapt-epochs", type=int, default=100, help="maximum epochs of last-k and scratch")
    p.add_argument("--no-rpa", action="store_true", help="skip RPA (its rotation takes ~25 s per fit)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--merge", nargs="+", type=Path, metavar="DIR", help="merge part runs into --out")
    return p.parse_args(argv)


def parse_subjects(text: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, (t.strip() for t in text.split(","))):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def load(sfreq: float) -> dict[str, Any]:
    """Every subject at the network's recipe and at the default recipe for the baselines."""
    from eegtransfer.evaluation.baselines import covariances, filter_bank, ssvep_frequencies
    from eegtransfer.io import default_recipe, get_dataset, load_dataset

    dataset = get_dataset(DATASET)
    base = default_recipe(dataset)
    net = default_recipe(dataset, sfreq=sfreq, h_freq=min(base.h_freq, sfreq / 2 - 2))
    subjects = list(dataset.subject_list)
    Xn, meta, _ = load_dataset(dataset, subjects, net, on_missing="skip")
    Xb, meta_b, _ = load_dataset(dataset, subjects, base, on_missing="skip")
    cols = ["subject", "session", "run", "onset", "label"]
    assert meta[cols].equals(meta_b[cols]), "both recipes must give the same trials"
    freqs = ssvep_frequencies(sorted(meta["label"].unique()))
    C = covariances(filter_bank(Xb, base.sfreq, list(freqs.values())))
    return {"Xn": Xn, "Xb": Xb, "C": C, "meta": meta, "net": net, "base": base}


def windows_for(mt: pd.DataFrame, first: np.ndarray, tmax: float) -> dict[str, Any]:
    """The protocol's calibration windows of one target, as masks over its trials."""
    from eegtransfer.evaluation.protocol import calibration_window

    out = {}
    for label in WINDOWS:
        kw = {"fraction": 1.0} if label == "run" else {"minutes": float(label)}
        w = calibration_window(mt[first], trial_seconds=tmax, **kw)
        mask = np.zeros(len(mt), bool)
        mask[np.flatnonzero(first)[w.mask]] = True
        out[label] = (w, mask)
    return out


def ours(pops: dict[bool, Any], X: np.ndarray, y: np.ndarray, cal: np.ndarray, test: np.ndarray,
         args: argparse.Namespace) -> list[dict[str, Any]]:
    from eegtransfer.adaptation import adapt

    rows = []
    for aligned, strategies in ((False, PLAIN), (True, ALIGNED)):
        for strategy in strategies:
            t0 = time.perf_counter()
            b = adapt(pops[aligned], X[cal], y[cal], strategy=strategy, device=args.device, seed=args.seed,
                      epochs=args.adapt_epochs, patience=20)
            pred = b.predict(X[test])
            a = b.adaptation
            rows.append({"method": f"{MODEL} {strategy}", "family": "ours", "pred": pred,
                         "seconds": time.perf_counter() - t0, "guard": a.guard.kept if a.guard else None,
                         "chosen": a.chosen})
    return rows


def baselines(d: dict[str, Any], t: np.ndarray, cal: np.ndarray, test: np.ndarray,
              args: argparse.Namespace) -> list[dict[str, Any]]:
    from eegtransfer.evaluation import baselines as bl

    meta, C = d["meta"], d["C"]
    y = meta["label"].astype(str).to_numpy()
    Ct, yt, Xb = C[t], y[t], d["Xb"][t]
    rows = []

    def timed(name: str, fn: Any) -> None:
        t0 = time.perf_counter()
        rows.append({"method": name, "family": "baseline", "pred": fn(), "seconds": time.perf_counter() - t0})

    for name, pipe in bl.within_subject_pipelines().items():
        timed(name, lambda p=pipe: p.fit(Ct[cal], yt[cal]).predict(Ct[test]))
    timed("CCA", lambda: bl.CCADetector(sfreq=d["base"].sfreq, max_freq=d["base"].h_freq)
          .fit(Xb[cal], yt[cal]).predict(Xb[test]))
    pop = ~t
    for kind in ("RCT",) + (() if args.no_rpa else ("RPA",)):
        t0 = time.perf_counter()
        preds = bl.transfer_predict(C[pop], y[pop], meta["subject"][pop].to_numpy(), Ct[cal], yt[cal],
                                    Ct[test], rotate=kind == "RPA")
        for clf, pred in preds.items():
            rows.append({"method": f"{kind} {clf}", "family": "baseline", "pred": pred,
                         "seconds": (time.perf_counter() - t0) / len(preds)})
    classes = sorted(set(y.tolist()))
    timed(f"{MODEL} scratch", lambda: bl.scratch_predict(MODEL, d["net"], classes, d["Xn"][t][cal], yt[cal],
                                                        d["Xn"][t][test], epochs=int(1.5 * args.adapt_epochs),
                                                        seed=args.seed, device=args.device))
    return rows


def run_target(target: int, d: dict[str, Any], args: argparse.Namespace) -> tuple[list[dict], dict]:
    from eegtransfer.evaluation.protocol import split_target
    from eegtransfer.pretrain import pretrain

    meta = d["meta"]
    t = (meta["subject"].astype(str) == str(target)).to_numpy()
    mt = meta[t].reset_index(drop=True)
    first, test = split_target(mt)
    y = mt["label"].astype(str).to_numpy()
    Xt = d["Xn"][t]
    pops, info = {}, {"target": target, "n_test": int(test.sum())}
    for aligned in (False, True):
        t0 = time.perf_counter()
        pop = ~t
        pops[aligned] = pretrain(d["Xn"][pop], meta["label"][pop].to_numpy(), meta[pop], d["net"], model=MODEL,
                                 align=aligned, device=args.device, seed=args.seed,
                                 **{**PRETRAIN, "epochs": args.epochs})
        info["aligned" if aligned else "plain"] = {
            "seconds": round(time.perf_counter() - t0, 1), "epochs": len(pops[aligned].history["epochs"]),
            "best_epoch": pops[aligned].history["best_epoch"], "val_acc": pops[aligned].metrics.get("val_acc")}
    zero = pops[False].predict(Xt[test])
    rows = []
    for label, (w, cal) in windows_for(mt, first, d["net"].tmax).items():
        cell = {"subject": target, "window": label, "minutes_used": w.minutes_used, "grown": w.grown,
                "n_calibration": w.n_trials, "n_test": int(test.sum())}
        methods = [{"method": f"{MODEL} zero-shot", "family": "reference", "pred": zero, "seconds": 0.0}]
        methods += ours(pops, Xt, y, cal, test, args) + baselines(d, t, cal, test, args)
        for m in methods:
            pred = m.pop("pred")
            rows.append({**cell, **m, "accuracy": float((np.asarray(pred, str) == y[test]).mean())})
    return rows, info


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("eegtransfer").setLevel(logging.ERROR)
    os.environ.setdefault("MOABB_DOWNLOAD_PROVIDER", "upstream")
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/loso.py " + " ".join(map(shlex.quote, sys.argv[1:] if argv is None else argv))
    if args.merge:
        return merge(args.merge, args.out, command)
    t0 = time.perf_counter()
    d = load(args.sfreq)
    rows, infos = [], []
    for target in parse_subjects(args.subjects):
        r, info = run_target(target, d, args)
        rows += r
        infos.append(info)
        pd.DataFrame(rows).to_csv(args.out / "loso.csv", index=False)  # a partial run keeps its rows
        best = pd.DataFrame(r).query("window == 'run'").set_index("method")["accuracy"]
        print(f"target {target}: " + ", ".join(f"{k}={v:.2f}" for k, v in best.items()), flush=True)
    run = {"command": command, "args": {k: str(v) for k, v in vars(args).items()},
           "wall_seconds": round(time.perf_counter() - t0, 1), "pretraining": infos,
           "recipe_network": d["net"].to_dict(), "recipe_baselines": d["base"].to_dict()}
    (args.out / "loso_run.json").write_text(json.dumps(run, indent=2, default=str))
    write_report(pd.DataFrame(rows), [run], args.out)
    return 0


def merge(parts: list[Path], out: Path, command: str) -> int:
    frames = [pd.read_csv(p / "loso.csv") for p in parts]
    runs = [json.loads((p / "loso_run.json").read_text()) for p in parts]
    df = pd.concat(frames, ignore_index=True).drop_duplicates(["subject", "window", "method"])
    df.to_csv(out / "loso.csv", index=False)
    write_report(df, runs, out, merged=command)
    return 0


def write_report(df: pd.DataFrame, runs: list[dict], out: Path, merged: str | None = None) -> None:
    from eegtransfer.evaluation.stats import benchmark_markdown
    from eegtransfer.io import duplicates_note

    pre = [p for r in runs for p in r["pretraining"]]
    lines = ["# Kalunga2016 leave-one-subject-out, one protocol", "",
             "Commands (MNE_DATA = the Kalunga2016 cache, OMP_NUM_THREADS=1, run side by side):", "",
             "```", *[r["command"] for r in runs], *([merged] if merged else []), "```", "",
             f"- Wall time: {max(r['wall_seconds'] for r in runs) / 60:.1f} min (the longest part); seed "
             f"{runs[0]['args']['seed']}; device {runs[0]['args']['device']}.",
             f"- Duplicated recording: {duplicates_note(DATASET)}.",
             f"- Network recipe {json.dumps(runs[0]['recipe_network'])}; baselines use the default "
             f"recipe {json.dumps(runs[0]['recipe_baselines'])}. Both give the same trials.",
             f"- Pretraining ({MODEL}, AdamW, early stopping on 2 held-out population subjects): "
             f"{json.dumps(PRETRAIN)}; per target, population validation accuracy plain / aligned: "
             + ", ".join(f"{p['target']}: {p['plain']['val_acc']:.2f} / {p['aligned']['val_acc']:.2f}"
                         for p in sorted(pre, key=lambda p: int(p["target"]))) + ".",
             "- Calibration windows (minutes actually used, mean over subjects): "
             + ", ".join(f"{w}: {g['minutes_used'].mean():.2f} min, {g['n_calibration'].mean():.1f} trials, "
                         f"grown for {int(g.drop_duplicates('subject')['grown'].sum())} subjects"
                         for w, g in df.groupby("window", sort=False)) + ".", "",
             benchmark_markdown(df, reference=f"{MODEL} zero-shot"), ""]
    (out / "loso.md").write_text("\n".join(lines))
    print(f"wrote {out / 'loso.csv'} and {out / 'loso.md'}")


if __name__ == "__main__":
    raise SystemExit(main())
