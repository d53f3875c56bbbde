"""Leave-one-subject-out benchmark on Kalunga2016 (issues 2 and 4).

For each target subject: pretrain each model once on the other subjects
(population loaded with ``drop_duplicates_of=[target]``, so the recording
that Kalunga2016 publishes under two subjects never leaks), then adapt it on
the first 0, 0.5, 1, 2 minutes and the whole first run of the target, with
every strategy, and score on the target's **later** runs. Within-subject
baselines (filter-bank tangent space + logistic regression, MDM, and the
same network trained from scratch) use the same calibration trials.

Pretraining hyper-parameters are fixed in advance and early stopping uses
held-out *population* subjects; the target's later runs are only ever scored.

Usage::

    python benchmarks/loso.py                  # full run (~40 min on 2 CPU cores)
    python benchmarks/loso.py --quick          # 3 subjects, few epochs (a smoke test)
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
warnings.filterwarnings("ignore", category=RuntimeWarning, module="sklearn")

DATASET = "Kalunga2016"
SSVEP_FREQS = (13.0, 17.0, 21.0)
PLAIN_STRATEGIES = ["none", "bn", "head", "bn+head", "last-k", "full", "auto"]
ALIGN_STRATEGIES = ["align", "align+head", "align+last-k"]
SUPERVISED_BASELINES = ["TS+LR", "MDM", "scratch"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subjects", default="1-11", help="targets, e.g. '1-11' or '1,2,5' (default 1-11)")
    p.add_argument("--population", default="1-11",
                   help="subjects the populations are drawn from (default 1-11: subject 12 is not in the cache)")
    p.add_argument("--models", default="EEGNet,ShallowFBCSPNet", help="comma-separated braindecode models")
    p.add_argument("--align-models", default="EEGNet",
                   help="models that also get an aligned pretraining for the align strategies ('' for none)")
    p.add_argument("--epochs", type=int, default=None, help="maximum pretraining epochs (default per model)")
    p.add_argument("--patience", type=int, default=None, help="pretraining early-stopping patience")
    p.add_argument("--adapt-epochs", type=int, default=100, help="max epochs for last-k/full/scratch")
    p.add_argument("--minutes", default="0,0.5,1,2,run", help="calibration minutes ('run' = first run)")
    p.add_argument("--sfreq", type=float, default=64.0,
                   help="model input rate in Hz (default 64: half the cost of 128 Hz; low-pass 30 Hz)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output folder")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite loso.md and loso_curve.png from an existing --out folder")
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="merge the results of runs over disjoint --subjects (e.g. two processes "
                        "run side by side) into --out and write the report")
    p.add_argument("--note", default="", help="a line to add to loso.md (with --merge/--report-only)")
    p.add_argument("--quick", action="store_true", help="3 subjects, few epochs: a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        if args.subjects == "1-11":
            args.subjects = "1,3,7"
        args.epochs = args.epochs or 3
        args.patience = args.patience or 3
        args.adapt_epochs = min(args.adapt_epochs, 10)
    return args


def parse_subjects(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


# Pretraining settings chosen on the population only (validation subjects), never on a target.
# Capped so that the full benchmark fits ~40 min on 2 shared CPU cores.
PRETRAIN = {
    "EEGNet": dict(epochs=25, patience=10, lr=1e-2, batch_size=64),
    "ShallowFBCSPNet": dict(epochs=15, patience=5, lr=3e-3, batch_size=64),
}


class Loader:
    """Loads each subject once per distinct set of dropped duplicate runs."""

    def __init__(self, dataset: Any, recipe: Any = None) -> None:
        from eegtransfer.datasets import default_recipe

        self.dataset = dataset
        self.recipe = recipe or default_recipe(dataset)
        self.cache: dict[tuple[int, tuple], tuple[np.ndarray, pd.DataFrame]] = {}

    def _affected(self, subject: int, target: int | None) -> tuple:
        from eegtransfer.datasets import KNOWN_DUPLICATES

        if target is None:
            return ()
        return tuple(sorted((a, b) for a, b in KNOWN_DUPLICATES.get(DATASET, [])
                            if {a[0], b[0]} == {str(subject), str(target)}))

    def subject(self, subject: int, target: int | None = None) -> tuple[np.ndarray, pd.DataFrame]:
        from eegtransfer.datasets import load_dataset

        key = (subject, self._affected(subject, target))
        if key not in self.cache:
            X, meta, _ = load_dataset(self.dataset, [subject], self.recipe,
                                      drop_duplicates_of=None if target is None else [target])
            self.cache[key] = (X, meta)
        return self.cache[key]

    def population(self, target: int, subjects: list[int]) -> tuple[np.ndarray, pd.DataFrame]:
        """Every subject but ``target``, each loaded with ``drop_duplicates_of=[target]``."""
        parts = [self.subject(s, target) for s in subjects if s != target]
        return np.concatenate([p[0] for p in parts]), pd.concat([p[1] for p in parts], ignore_index=True)


def filter_bank(X: np.ndarray, sfreq: float, freqs: tuple[float, ...] = SSVEP_FREQS,
                width: float = 1.0) -> np.ndarray:
    """MOABB's extended SSVEP signal: the trials band-passed around each stimulation frequency.

    Parameters
    ----------
    X : ndarray, shape (n_trials, n_chans, n_times)

    Returns
    -------
    ext : ndarray, shape (n_trials, n_chans * len(freqs), n_times)
    """
    import mne

    bands = [mne.filter.filter_data(X.astype(np.float64), sfreq, f - width, f + width, verbose=False)
             for f in freqs]
    return np.concatenate(bands, axis=1)


def riemann_baselines(ext_cal: np.ndarray, y_cal: np.ndarray, ext_test: np.ndarray,
                      y_test: np.ndarray) -> dict[str, tuple[float, float]]:
    """TS+LR and MDM on filter-bank covariances: name -> (accuracy, seconds)."""
    from pyriemann.classification import MDM
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    out = {}
    pipes = {
        "TS+LR": make_pipeline(Covariances(estimator="lwf"), TangentSpace(),
                               LogisticRegression(max_iter=1000)),
        "MDM": make_pipeline(Covariances(estimator="lwf"), MDM()),
    }
    for name, pipe in pipes.items():
        t0 = time.perf_counter()
        pipe.fit(ext_cal, y_cal)
        acc = float((pipe.predict(ext_test) == y_test).mean())
        out[name] = (acc, time.perf_counter() - t0)
    return out


def scratch_baseline(model: str, recipe: Any, classes: list[str], Xc: np.ndarray, yc: np.ndarray,
                     Xt: np.ndarray, yt: np.ndarray, *, epochs: int, seed: int,
                     device: str) -> tuple[float, float]:
    """The same network trained from scratch on the calibration trials only: (accuracy, seconds)."""
    from eegtransfer.adapt import chronological_split
    from eegtransfer.engine import predict_logits, seed_everything, train
    from eegtransfer.models import build_model

    t0 = time.perf_counter()
    seed_everything(seed)
    net = build_model(model, recipe.n_chans, len(classes), recipe.n_times, recipe.sfreq,
                      ch_names=recipe.channels)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in yc])
    fit, val = chronological_split(yc, 0.25)
    # Small batches give ~3 AdamW steps per epoch on ~24 trials; early stopping on the
    # latest 25% of each class's calibration trials (as for adaptation), never on the test runs.
    train(net, Xc[fit], y[fit], X_val=Xc[val], y_val=y[val], epochs=epochs, batch_size=8,
          lr=1e-3, patience=max(10, epochs // 3), device=device, seed=seed)
    pred = np.asarray(classes)[predict_logits(net, Xt, device=device).argmax(1)]
    return float((pred == yt).mean()), time.perf_counter() - t0


def run_target(target: int, subjects: list[int], loader: Loader, args: argparse.Namespace,
               minutes: list[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from eegtransfer.adapt import select_calibration
    from eegtransfer.curve import calibration_curve, missing_classes, resolve_minutes
    from eegtransfer.pretrain import pretrain

    recipe = loader.recipe
    Xt, mt = loader.subject(target)
    mt = mt.reset_index(drop=True)
    first = (mt["session"] == mt["session"].iloc[0]) & (mt["run"] == mt["run"].iloc[0])
    test = ~first.to_numpy()
    labels = mt["label"].astype(str).to_numpy()
    Xp, mp = loader.population(target, subjects)
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"target": target, "recipe": recipe.to_dict(), "n_population_trials": int(len(Xp)),
                            "population_runs": int(mp[["subject", "session", "run"]].drop_duplicates().shape[0]),
                            "n_test": int(test.sum())}
    mins = resolve_minutes(minutes, mt)
    label_of = {m: ("run" if str(raw) == "run" else f"{float(raw):g}") for m, raw in zip(mins, minutes)}
    base = dict(dataset=DATASET, target=target, n_test=int(test.sum()))
    models = [m for m in args.models.split(",") if m]
    align_models = [m for m in args.align_models.split(",") if m]
    for model in models:
        hp = dict(PRETRAIN.get(model, PRETRAIN["EEGNet"]))
        if args.epochs:
            hp["epochs"] = args.epochs
        if args.patience:
            hp["patience"] = args.patience
        pops = {}
        for aligned in ([False, True] if model in align_models else [False]):
            t0 = time.perf_counter()
            pops[aligned] = pretrain(Xp, mp["label"].to_numpy(), mp, recipe, model=model, align=aligned,
                                     device=args.device, seed=args.seed, **hp)
            sec = time.perf_counter() - t0
            h = pops[aligned].history
            info[f"pretrain_{model}{'_aligned' if aligned else ''}"] = {
                "seconds": round(sec, 1), "epochs_run": len(h["epochs"]), "best_epoch": h["best_epoch"],
                "val_acc_population": pops[aligned].metrics.get("val_acc")}
            print(f"  target {target} {model}{' aligned' if aligned else ''}: pretrained in {sec:.0f} s, "
                  f"{len(h['epochs'])} epochs, population val acc {pops[aligned].metrics.get('val_acc', float('nan')):.3f}",
                  flush=True)
        bundles = {"default": pops[False]}
        strategies = list(PLAIN_STRATEGIES)
        if True in pops:
            bundles.update({s: pops[True] for s in ALIGN_STRATEGIES})
            strategies += ALIGN_STRATEGIES
        curve = calibration_curve(bundles, Xt, mt, minutes=minutes, strategies=strategies, test=test,
                                  device=args.device, seed=args.seed, epochs=args.adapt_epochs,
                                  patience=20)
        for r in curve.to_dict("records"):
            rows.append({**base, "model": model, "method": r["strategy"], "kind": "transfer",
                         "minutes": r["minutes"], "minutes_label": label_of[r["minutes"]], "n_calibration": r["n_calibration"],
                         "accuracy": r["accuracy"], "seconds": r["seconds"], "chosen": r["chosen"],
                         "guard": r["guard"], "reason": r["reason"]})
        # the same network from scratch, on the same calibration trials
        for m in mins:
            cal = select_calibration(mt, minutes=m, trial_seconds=recipe.tmax) if m > 0 else np.zeros(len(mt), bool)
            row = {**base, "model": model, "method": "scratch", "kind": "baseline", "minutes": m,
                   "minutes_label": label_of[m],
                   "n_calibration": int(cal.sum()), "accuracy": float("nan"), "seconds": float("nan"),
                   "chosen": None, "guard": None, "reason": ""}
            miss = missing_classes(labels[cal], pops[False].classes)
            if miss:
                row["reason"] = f"class(es) {miss} have fewer than 2 trials"
            else:
                row["accuracy"], row["seconds"] = scratch_baseline(
                    model, recipe, pops[False].classes, Xt[cal], labels[cal], Xt[test], labels[test],
                    epochs=int(1.5 * args.adapt_epochs), seed=args.seed, device=args.device)
            rows.append(row)
    ext = filter_bank(Xt, recipe.sfreq)
    for m in mins:
        cal = select_calibration(mt, minutes=m, trial_seconds=recipe.tmax) if m > 0 else np.zeros(len(mt), bool)
        miss = missing_classes(labels[cal], sorted(set(labels.tolist())))
        res = {} if miss else riemann_baselines(ext[cal], labels[cal], ext[test], labels[test])
        for name in ("TS+LR", "MDM"):
            acc, sec = res.get(name, (float("nan"), float("nan")))
            rows.append({**base, "model": "-", "method": name, "kind": "baseline", "minutes": m,
                         "minutes_label": label_of[m],
                         "n_calibration": int(cal.sum()), "accuracy": acc, "seconds": sec,
                         "chosen": None, "guard": None,
                         "reason": f"class(es) {miss} have fewer than 2 trials" if miss else ""})
    return rows, info


def fmt(mean: float, std: float, pct: bool = True) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if pct else f"{mean:.2f} ± {std:.2f}"


def write_report(df: pd.DataFrame, infos: list[dict[str, Any]], args: argparse.Namespace,
                 command: str, wall: float, out: Path, complete: bool = True) -> None:
    from eegtransfer.curve import plot_curve
    from eegtransfer.evaluation import duplicates_note

    df = df.copy()
    df["minutes_label"] = df["minutes_label"].astype(str)
    lines = ["# Kalunga2016 leave-one-subject-out: transfer vs within-subject baselines", ""]
    lines += [
        (f"- Command (MNE_DATA=<Kalunga cache>, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}):"
         + (f" `{command}`" if "\n" not in command else "\n\n```\n" + command + "\n```\n")),
        f"- Recipe: {json.dumps(infos[0].get('recipe'))}.",
        *([f"- Note: {args.note}"] if getattr(args, "note", "") else []),
        *([] if complete else [f"- **PARTIAL RUN**: {df['target'].nunique()} of the requested targets "
                                "finished; the tables cover those only."]),
        f"- Seed: {args.seed}; device: {args.device}; torch threads per process: "
        f"{os.environ.get('OMP_NUM_THREADS', 'default')}; wall time {wall / 60:.1f} min"
        + (" (the longest of the processes run side by side)." if "\n" in command else "."),
        f"- Targets: {sorted(df['target'].unique().tolist())}. For each target every model is pretrained "
        "once on all the other subjects and shared by every strategy and calibration length.",
        f"- Duplicated recording: {duplicates_note(DATASET)}. The population is loaded with "
        "`load_dataset(..., drop_duplicates_of=[target])`, so the target never appears in its own "
        "population (population runs per target: "
        + ", ".join(f"{i['target']}: {i['population_runs']}" for i in infos) + ").",
        "- Calibration = the first *m* minutes of the target's **first run** (chronological; a trial "
        "counts when it has ended). Test = all of the target's **later runs**, the same trials for "
        "every row. 'run' = the whole first run (32 trials; "
        + (f"{df.loc[df['minutes_label'] == 'run', 'minutes'].min():.1f}-"
           f"{df.loc[df['minutes_label'] == 'run', 'minutes'].max():.1f} min" if (df["minutes_label"] == "run").any()
           else "n/a") + ").",
        "- Kalunga's runs start with 8 `rest` trials (≈1 min), so at 0.5 and 1 min supervised "
        "strategies and baselines have no trial of the SSVEP classes: they are recorded as n/a "
        "(label-free strategies still run).",
        "- Pretraining (population only; early stopping on 2 held-out population subjects): "
        + "; ".join(f"{m}: {json.dumps(PRETRAIN.get(m, {}))}" for m in args.models.split(","))
        + (f"; --epochs {args.epochs}" if args.epochs else "")
        + f". Align strategies use an aligned pretraining of: {args.align_models or 'none'}.",
        "- Adaptation: head = L2-SP logistic regression on cached trunk features (L-BFGS), refit on "
        "all calibration trials after the guard; last-k (k=1) / full: AdamW, early stopping on the "
        "last 25% of each class's calibration trials; the negative-transfer guard is on.",
        "",
    ]
    # (a) issue 2
    run = df[df["minutes_label"] == "run"]
    zero = df[(df["minutes"] == 0) & (df["method"] == "none")]
    lines += ["## (a) Issue 2: zero-shot vs head-adapted vs from scratch (calibration = first run)", ""]
    for model in [m for m in args.models.split(",") if m]:
        z = zero[zero["model"] == model].set_index("target")
        h = run[(run["model"] == model) & (run["method"] == "head")].set_index("target")
        s = run[(run["model"] == model) & (run["method"] == "scratch")].set_index("target")
        lines += [f"### {model}", "",
                  "| subject | zero-shot | head-adapted | head wall (s) | from scratch | scratch wall (s) |",
                  "|---|---|---|---|---|---|"]
        for t in sorted(z.index):
            lines.append(f"| {t} | {100 * z.loc[t, 'accuracy']:.1f} | {100 * h.loc[t, 'accuracy']:.1f} | "
                         f"{h.loc[t, 'seconds']:.2f} | {100 * s.loc[t, 'accuracy']:.1f} | {s.loc[t, 'seconds']:.1f} |")
        lines.append(f"| **mean ± std** | {fmt(z['accuracy'].mean(), z['accuracy'].std())} | "
                     f"{fmt(h['accuracy'].mean(), h['accuracy'].std())} | "
                     f"{fmt(h['seconds'].mean(), h['seconds'].std(), False)} | "
                     f"{fmt(s['accuracy'].mean(), s['accuracy'].std())} | "
                     f"{fmt(s['seconds'].mean(), s['seconds'].std(), False)} |")
        lines.append("")
    # (b) issue 4
    lines += ["## (b) Issue 4: accuracy (%) on later runs vs calibration minutes, mean ± std over subjects", ""]
    order = [m for m in ["0", "0.5", "1", "2", "run"] if m in set(df["minutes_label"])]
    order += sorted(set(df["minutes_label"]) - set(order))
    agg = (df.groupby(["model", "method", "minutes_label"])["accuracy"]
           .agg(["mean", "std", "count"]).reset_index())
    sec = df.groupby(["model", "method"])["seconds"].median()
    lines += ["| model | method | " + " | ".join(f"{m} min" for m in order) + " | median wall (s) |",
              "|---|---|" + "---|" * len(order) + "---|"]
    methods = ["none"] + PLAIN_STRATEGIES[1:] + ALIGN_STRATEGIES + ["scratch", "TS+LR", "MDM"]
    for model in [m for m in args.models.split(",") if m] + ["-"]:
        for method in methods:
            a = agg[(agg["model"] == model) & (agg["method"] == method)]
            if a.empty:
                continue
            cells = []
            for m in order:
                r = a[a["minutes_label"] == m]
                cells.append(fmt(r["mean"].iloc[0], r["std"].iloc[0]) if len(r) and r["count"].iloc[0] else "n/a")
            s = sec.get((model, method), float("nan"))
            lines.append(f"| {model} | {method} | " + " | ".join(cells) + f" | {s:.2f} |"
                         if np.isfinite(s) else f"| {model} | {method} | " + " | ".join(cells) + " | - |")
    lines.append("")
    auto = df[(df["method"] == "auto") & df["chosen"].notna()]
    if len(auto):
        lines += ["`auto` chose: " + ", ".join(
            f"{k[0]} @ {k[1]}: " + ", ".join(f"{c}×{n}" for c, n in v.value_counts().items())
            for k, v in auto.groupby(["model", "minutes_label"])["chosen"]), ""]
    lines += ["## Pretraining per target", "", "| target | " + " | ".join(
        k.replace("pretrain_", "") for k in infos[0] if k.startswith("pretrain_")) + " |",
        "|---|" + "---|" * sum(k.startswith("pretrain_") for k in infos[0])]
    for i in infos:
        cells = [f"{v['seconds']:.0f} s, {v['epochs_run']} ep, val {100 * (v['val_acc_population'] or 0):.0f}%"
                 for k, v in i.items() if k.startswith("pretrain_")]
        lines.append(f"| {i['target']} | " + " | ".join(cells) + " |")
    lines.append("")
    (out / "loso.md").write_text("\n".join(lines))
    # plot: mean over subjects per (model, method) against minutes
    ok = df[df["accuracy"].notna()].copy()
    # x position of each calibration length: its mean over subjects ('run' differs per subject)
    ok["minutes"] = ok.groupby("minutes_label")["minutes"].transform("mean")
    curve = (ok.groupby(["model", "method", "minutes"])["accuracy"].agg(["mean", "std"]).reset_index())
    curve["strategy"] = curve["method"]
    curve = curve.rename(columns={"mean": "accuracy"})
    keep = curve["method"].isin(["none", "bn", "head", "bn+head", "last-k", "align", "align+head",
                                 "auto", "scratch", "TS+LR", "MDM"])
    plot_curve(curve[keep], out / "loso_curve.png", panel="model",
               title=f"{DATASET} LOSO, mean over {df['target'].nunique()} subjects (test: later runs; "
                     "dashed: within-subject baselines; 'run' plotted at its mean length)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("eegtransfer").setLevel(logging.ERROR)
    os.environ.setdefault("MOABB_DOWNLOAD_PROVIDER", "upstream")
    from eegtransfer.datasets import get_dataset

    command = "python benchmarks/loso.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        parts = [Path(d) for d in args.merge]
        metas = [json.loads((d / "loso_run.json").read_text()) for d in parts]
        frames, infos, seen, used = [], [], set(), []
        for d, m in zip(parts, metas):
            # a target finished by several processes is taken from the first one only
            part = pd.read_csv(d / "loso.csv")
            part = part[~part["target"].isin(seen)]
            done = sorted(set(part["target"].tolist()))
            seen |= set(done)
            frames.append(part)
            infos += [i for i in json.loads((d / "loso_pretraining.json").read_text())
                      if int(i["target"]) in done]
            used.append(f"{m['command']} &   # targets used from this process: {done}")
        df = pd.concat(frames, ignore_index=True)
        infos.sort(key=lambda i: int(i["target"]))
        requested = {t for m in metas for t in parse_subjects(m["args"]["subjects"])}
        df.to_csv(out / "loso.csv", index=False)
        (out / "loso_pretraining.json").write_text(json.dumps(infos, indent=2, default=str))
        margs = argparse.Namespace(**metas[0]["args"])
        margs.subjects = ",".join(str(i["target"]) for i in infos)
        margs.note = args.note
        command = "\n".join(used) + "\nwait\n" + command
        wall = max(m["wall"] for m in metas)  # side by side: the longest process
        complete = requested <= seen
        (out / "loso_run.json").write_text(json.dumps({"args": vars(margs), "command": command,
                                                       "wall": wall, "complete": complete}, indent=2))
        write_report(df, infos, margs, command, wall, out, complete=complete)
        print(f"merged {len(parts)} runs into {out / 'loso.md'}")
        return 0
    if args.report_only:
        meta = json.loads((out / "loso_run.json").read_text())
        write_report(pd.read_csv(out / "loso.csv"), json.loads((out / "loso_pretraining.json").read_text()),
                     argparse.Namespace(**meta["args"]), meta["command"], meta["wall"], out,
                     complete=meta.get("complete", True))
        print(f"rewrote {out / 'loso.md'}")
        return 0
    subjects = parse_subjects(args.subjects)
    dataset = get_dataset(DATASET)
    all_subjects = parse_subjects(args.population)
    minutes: list[Any] = [m if m == "run" else float(m) for m in args.minutes.split(",")]
    from eegtransfer.datasets import default_recipe

    recipe = default_recipe(dataset)
    if args.sfreq != recipe.sfreq:
        recipe = default_recipe(dataset, sfreq=args.sfreq, h_freq=min(recipe.h_freq, args.sfreq / 2 - 2))
    loader = Loader(dataset, recipe)
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    infos = []
    print(f"LOSO on {DATASET}: targets {subjects}, models {args.models}, aligned {args.align_models!r}", flush=True)
    for target in subjects:
        t0 = time.perf_counter()
        r, info = run_target(target, all_subjects, loader, args, minutes)
        rows += r
        infos.append(info)
        pd.DataFrame(rows).to_csv(out / "loso.csv", index=False)
        # checkpoint: a partial run can be reported with --report-only
        (out / "loso_pretraining.json").write_text(json.dumps(infos, indent=2, default=str))
        (out / "loso_run.json").write_text(json.dumps(
            {"args": vars(args), "command": command, "wall": time.perf_counter() - t_start,
             "complete": target == subjects[-1]}, indent=2))
        d = pd.DataFrame(r)
        last = d[d["minutes_label"] == "run"]
        print(f"target {target} done in {time.perf_counter() - t0:.0f} s: "
              + ", ".join(f"{m}/{s}={a:.2f}" for m, s, a in zip(last["model"], last["method"], last["accuracy"])
                          if s in ("none", "head", "align+head", "auto", "scratch", "TS+LR")), flush=True)
    wall = time.perf_counter() - t_start
    df = pd.DataFrame(rows)
    df.to_csv(out / "loso.csv", index=False)
    (out / "loso_pretraining.json").write_text(json.dumps(infos, indent=2, default=str))
    (out / "loso_run.json").write_text(json.dumps({"args": vars(args), "command": command, "wall": wall},
                                                  indent=2))
    write_report(df, infos, args, command, wall, out)
    print(f"wrote {out / 'loso.csv'}, {out / 'loso.md'}, {out / 'loso_curve.png'} in {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
