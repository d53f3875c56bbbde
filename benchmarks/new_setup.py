"""A new SSVEP set-up on a new cap: a new class, two missing channels, a few seconds per class.

Kalunga2016, leave-one-subject-out over subjects 1-11. For each target:

- population: every other subject **without the 17 Hz class** (13, 21, rest), EEGNet pretrained
  with :func:`eegtransfer.training.pretrain` and the loso runner's settings
  (:data:`eegtransfer.evaluation.loso.PRETRAIN`, 64 Hz recipe), once plain and once with
  Euclidean alignment; the recording filed under subjects 3 and 7 is removed on load;
- target: 13, 17, 21 and rest (17 Hz is new: a new head), its MOABB ``Raw`` runs with
  ``MISSING`` dropped, cut by :func:`eegtransfer.io.load_recording` with
  ``interpolate_missing=True`` (spherical splines), at the network's recipe and at the
  dataset's default 128 Hz recipe (the same trials, checked);
- calibration: the first 2 trials of each class of the first run, in recording order; test:
  the later runs (:func:`eegtransfer.evaluation.protocol.split_target`);
- methods on those trials: the training-free CCA detector (rest threshold fitted on the
  calibration trials) at 128 Hz (the reference) and at 64 Hz, and on the 6 recorded channels
  only; ours through :func:`eegtransfer.adaptation.adapt` with its defaults (guard on). There is
  no zero-shot: the population has no 17 Hz output.

Run from the repository root (about 3 minutes on 2 shared CPU cores)::

    OMP_NUM_THREADS=1 MNE_DATA=/path/to/mne_data python benchmarks/new_setup.py --epochs 25 --patience 10

(the committed results were made with 25 epochs and patience 10, ``PRETRAIN`` before it became
50 and 20; without the options it pretrains with the current ``PRETRAIN``).

It writes ``benchmarks/results/new_setup/new_setup.csv`` (one row per subject and method; a
method that fails keeps its row, with the error) and ``new_setup.md``. ``--rest-evidence 0.5
--out benchmarks/results/new_setup/half_say`` gives every expert half its say on ``rest``, as
the package's first version of ``REST_EVIDENCE`` did (``results/new_setup/half_say``; the package
now keeps the full say without a population prior, as here).
"""

from __future__ import annotations

import argparse
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
os.environ.setdefault("MOABB_DOWNLOAD_PROVIDER", "upstream")

DATASET = "Kalunga2016"
NEW_CLASS = "17"
MISSING = ("PO7", "PO8")
CAL_TRIALS = 2  # per class
SFREQ = 64.0
OURS = {False: ("head", "head+cca", "auto"), True: ("align+head", "align+head+cca")}
REFERENCE = "CCA 128 Hz"


def load(subjects: list[int]) -> dict[str, Any]:
    """The population's trials at the network's recipe (that of ``loso.load(..., sfreq=64)``)."""
    from eegtransfer.io.moabb import default_recipe, get_dataset, load_dataset

    ds = get_dataset(DATASET)
    base = default_recipe(ds)
    net = default_recipe(ds, sfreq=SFREQ, h_freq=min(base.h_freq, SFREQ / 2 - 2))
    X, meta, _ = load_dataset(ds, subjects, net)
    return {"dataset": ds, "base": base, "net": net, "X": X, "meta": meta,
            "y": meta["label"].astype(str).to_numpy()}


def target_trials(d: dict[str, Any], subject: int) -> dict[str, Any]:
    """The target's runs from MOABB minus ``MISSING``, interpolated back, at both recipes."""
    from eegtransfer.io import load_recording
    from eegtransfer.io.moabb import deduplicated, load_raws

    ds = d["dataset"]
    raws = [(session, run, raw.copy().drop_channels(list(MISSING)))
            for session, runs in load_raws(deduplicated(ds), [subject])[subject].items() for run, raw in runs.items()]
    out: dict[str, Any] = {}
    for key in ("net", "base"):
        recs = [load_recording(None, d[key], raw=raw, classes=list(ds.event_id), default_id=ds.event_id,
                               interpolate_missing=True, subject=str(subject), session=session, run=run)
                for session, run, raw in raws]
        assert all(r.channels.interpolated == list(MISSING) for r in recs)
        out[key] = np.concatenate([r.X for r in recs])
        out["meta"] = pd.concat([r.meta for r in recs], ignore_index=True)
    cols = ["session", "run", "label"]
    mine = d["meta"][d["meta"]["subject"].astype(str) == str(subject)].reset_index(drop=True)
    if len(mine) and not (mine[cols].astype(str).equals(out["meta"][cols].astype(str))
                          and np.allclose(mine["onset"], out["meta"]["onset"])):
        raise RuntimeError(f"subject {subject}: the Raw objects give other trials than load_dataset")
    return out


def calibration_and_test(meta: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The first ``CAL_TRIALS`` trials of each class of the first run; the later runs."""
    from eegtransfer.adaptation import select_calibration
    from eegtransfer.evaluation.protocol import split_target

    first, test = split_target(meta)
    cal = np.zeros(len(meta), bool)
    cal[np.flatnonzero(first)[select_calibration(meta[first], trials=CAL_TRIALS, per_class=True)]] = True
    return cal, test


def run_target(target: int, d: dict[str, Any], *, epochs: int | None = None, patience: int | None = None,
               adapt_epochs: int = 100, device: str = "cpu", seed: int = 0
               ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every method for one target: (rows, facts about its populations and calibration)."""
    from eegtransfer.adaptation import adapt
    from eegtransfer.evaluation.baselines import CCADetector
    from eegtransfer.evaluation.loso import PRETRAIN
    from eegtransfer.training.pretraining import pretrain

    net, base, meta = d["net"], d["base"], d["meta"]
    t = target_trials(d, target)
    mt = t["meta"]
    y = mt["label"].astype(str).to_numpy()
    cal, test = calibration_and_test(mt)
    ends = mt["onset"][cal].max() + net.tmax
    info: dict[str, Any] = {"target": target, "n_calibration": int(cal.sum()), "n_test": int(test.sum()),
                            "calibration_ends_min": round(float(ends) / 60, 2)}
    pop = (meta["subject"].astype(str) != str(target)).to_numpy() & (d["y"] != NEW_CLASS)
    rec6 = [i for i, c in enumerate(base.channels) if c not in MISSING]

    def cca(X: np.ndarray, recipe: Any, fb: bool = False) -> np.ndarray:
        return CCADetector(sfreq=recipe.sfreq, max_freq=recipe.h_freq, filter_bank=fb).fit(X[cal], y[cal]) \
            .predict(X[test])

    methods = {REFERENCE: ("reference", lambda: cca(t["base"], base)),
               "FBCCA 128 Hz": ("baseline", lambda: cca(t["base"], base, fb=True)),
               "CCA 64 Hz": ("baseline", lambda: cca(t["net"], net)),
               "CCA 128 Hz, 6 recorded channels": ("baseline", lambda: cca(t["base"][:, rec6], base))}
    pops: dict[bool, Any] = {}
    settings = {**PRETRAIN, **({"epochs": epochs} if epochs else {}), **({"patience": patience} if patience else {})}
    info["settings"] = settings
    for aligned, strategies in OURS.items():
        t0 = time.perf_counter()
        try:
            pops[aligned] = pretrain(d["X"][pop], d["y"][pop], meta[pop], net, align=aligned, device=device,
                                     seed=seed, **settings)
            info["aligned" if aligned else "plain"] = {
                "seconds": round(time.perf_counter() - t0, 1), "classes": pops[aligned].classes,
                "val_acc": pops[aligned].metrics.get("val_acc")}
        except Exception as err:  # recorded in every row of this population's methods
            pops[aligned] = err
        for s in strategies:
            methods[f"EEGNet {s}"] = ("ours", lambda a=aligned, s=s: adapted(pops[a], s))

    def adapted(population: Any, strategy: str) -> Any:
        if isinstance(population, Exception):
            raise population
        return adapt(population, t["net"][cal], y[cal], strategy=strategy, device=device, seed=seed,
                     epochs=adapt_epochs, patience=20)

    rows = []
    for name, (family, fn) in methods.items():
        t0 = time.perf_counter()
        row = {"subject": target, "window": f"{CAL_TRIALS} trials/class", "method": name, "family": family,
               "n_calibration": int(cal.sum()), "n_test": int(test.sum()), "accuracy": np.nan, "note": "",
               "error": ""}
        try:
            out = fn()
            if family == "ours":
                a = out.adaptation
                row["note"] = f"chose {a.chosen}" if a.chosen else a.guard_skipped or a.note
                out = out.predict(t["net"][test])
            row["accuracy"] = float((np.asarray(out).astype(str) == y[test]).mean())
        except Exception as err:
            row["error"] = f"{type(err).__name__}: {err}"
        rows.append({**row, "seconds": round(time.perf_counter() - t0, 2)})
    return rows, info


def markdown(df: pd.DataFrame, infos: list[dict[str, Any]], d: dict[str, Any], command: str,
             wall: float) -> str:
    """Context, then the tables of :func:`eegtransfer.evaluation.stats.benchmark_markdown`."""
    from eegtransfer.evaluation.stats import benchmark_markdown, per_subject
    from eegtransfer.io import duplicates_note

    info = pd.DataFrame(infos)
    wide = per_subject(df, cell={})
    failed = df[df["error"] != ""]
    notes = df[df["family"] == "ours"].groupby(["method", "note"], sort=False)["subject"].apply(list)
    lines = [
        f"# A new SSVEP set-up on a new cap ({DATASET}, leave-one-subject-out)", "",
        "```", command, "```", "",
        f"- Wall time {wall / 60:.1f} min on CPU (2 cores shared, OMP_NUM_THREADS=1); seed 0; {len(info)} targets.",
        f"- Population: every other subject, **{NEW_CLASS} Hz trials removed** (classes "
        f"{infos[0].get('plain', {}).get('classes')}); EEGNet, `pretrain` with {infos[0]['settings']}, plain and aligned; "
        f"duplicated recordings: {duplicates_note(DATASET)}. Validation accuracy (plain / aligned): "
        + ", ".join(f"{i['target']}: {i.get('plain', {}).get('val_acc', np.nan):.2f} / "
                    f"{i.get('aligned', {}).get('val_acc', np.nan):.2f}" for i in infos) + ".",
        f"- Target: classes 13, 17, 21, rest (17 is new: a new head). Cap without {', '.join(MISSING)}: the "
        "target's MOABB `Raw` runs with those channels dropped, interpolated back by "
        "`load_recording(..., interpolate_missing=True)`; the same trials for every method.",
        f"- Network recipe {d['net'].to_dict()}; CCA 128 Hz uses the dataset's default recipe "
        f"{d['base'].to_dict()}.",
        f"- Calibration: the first {CAL_TRIALS} trials of each class in the first run, n = "
        f"{info['n_calibration'].iloc[0]} trials, **{CAL_TRIALS * (d['net'].tmax - d['net'].tmin):g} s of EEG per "
        f"class** ({CAL_TRIALS} windows of {d['net'].tmax - d['net'].tmin:g} s), the last one ending "
        f"{info['calibration_ends_min'].min():.2f}-{info['calibration_ends_min'].max():.2f} min into the run (it "
        f"opens with a minute of rest). Test: the later runs, {info['n_test'].min()}-{info['n_test'].max()} "
        "trials per subject. Nothing is chosen on the test runs.",
        "- **Zero-shot is not possible**: the population has no 17 Hz output.",
        f"- `CCA 128 Hz, 6 recorded channels`: the reference's detector on the same trials without {', '.join(MISSING)} "
        "(a CCA user of this cap would not interpolate). Interpolated channels are linear combinations of the "
        "recorded ones (rank 6 of 8); `cca_correlations` drops their directions of near-zero variance "
        "(before that fix it also correlated 2 directions of rounding noise).",
        "- The guard cannot run for a new class set (nothing to compare with); `auto` (plain population, as the command line makes it) "
        "chooses among its candidates by cross-fitted log-loss on the calibration trials.",
        f"- Failures: {len(failed)}" + "".join(f"; subject {r.subject} {r.method}: {r.error}"
                                               for r in failed.itertuples()) + ".",
        "", benchmark_markdown(df, reference=REFERENCE), "",
        "## Per subject (accuracy, %)", "",
        "| subject | " + " | ".join(wide.columns) + " |", "|---" * (len(wide.columns) + 1) + "|",
        *[f"| {s} | " + " | ".join(f"{100 * v:.0f}" for v in r) + " |" for s, r in wide.iterrows()], "",
        "## What adaptation did (per subject and method)", "",
        *[f"- {m}: {note} (subjects {', '.join(map(str, s))})" for (m, note), s in notes.items()], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from _devset import rest_evidence, share  # beside this script; the tests load run_target alone

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, nargs="+", default=list(range(1, 12)))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "new_setup")
    p.add_argument("--epochs", type=int, default=None, help="maximum pretraining epochs (default: PRETRAIN's)")
    p.add_argument("--patience", type=int, default=None, help="pretraining patience (default: PRETRAIN's)")
    p.add_argument("--rest-evidence", type=share, default=None,
                   help="every CCA expert's say on rest, 0 to 1, as dev_rest_evidence.py (default: the package's)")
    a = p.parse_args(argv)
    logging.getLogger("eegtransfer").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")  # MNE's filter-length notes on 4 s trials
    command = "OMP_NUM_THREADS=1 python benchmarks/new_setup.py " + " ".join(
        map(shlex.quote, sys.argv[1:] if argv is None else argv))
    t0 = time.perf_counter()
    d = load(list(range(1, 12)))
    rows, infos = [], []
    a.out.mkdir(parents=True, exist_ok=True)
    for target in a.subjects:
        with rest_evidence(a.rest_evidence):
            r, info = run_target(target, d, epochs=a.epochs, patience=a.patience)
        rows += r
        infos.append(info)
        pd.DataFrame(rows).to_csv(a.out / "new_setup.csv", index=False)
        print(f"target {target}: " + ", ".join(f"{x['method']}={x['accuracy']:.2f}" for x in r), flush=True)
    df = pd.DataFrame(rows)
    (a.out / "new_setup.md").write_text(markdown(df, infos, d, command.strip(), time.perf_counter() - t0))
    print(f"wrote {a.out}/new_setup.csv and new_setup.md in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
