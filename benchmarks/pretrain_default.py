"""Does the default pretraining converge for every leave-one-subject-out population?

For each target of Kalunga2016, the population of every other subject (known duplicated
recordings removed) is pretrained exactly as ``eegtransfer pretrain --dataset Kalunga2016
--subjects ...`` does with all defaults (EEGNet, the dataset's default recipe, the library's
default epochs, patience, learning rate and monitor), plus the same with ``monitor="val_loss"``
(the previous default) for comparison. Written: one row per population and monitor, with the
validation subjects, the kept epoch, validation accuracy and the binomial p-value against
chance::

    python benchmarks/pretrain_default.py --out benchmarks/results/pretrain_default
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    from eegtransfer.io.moabb import get_dataset, load_dataset
    from eegtransfer.training.pretraining import pretrain

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pretrain_default")
    p.add_argument("--monitors", nargs="+", default=["val_acc", "val_loss"])
    a = p.parse_args(argv)
    ds = get_dataset("Kalunga2016")
    X, meta, recipe = load_dataset(ds, list(ds.subject_list), None, on_missing="skip")
    y = meta["label"].astype(str).to_numpy()
    rows, t_all = [], time.perf_counter()
    for target in sorted(meta["subject"].astype(int).unique()):
        pop = (meta["subject"].astype(int) != target).to_numpy()
        for monitor in a.monitors:
            t0 = time.perf_counter()
            b = pretrain(X[pop], y[pop], meta[pop], recipe, device="cpu", seed=0, monitor=monitor)
            m = b.metrics
            rows.append({"target": target, "monitor": monitor, "validation_subjects": " ".join(
                b.provenance["validation_subjects"]), "epochs_run": len(b.history["epochs"]),
                "kept_epoch": b.history["best_epoch"], "val_acc": round(m["val_acc"], 4),
                "val_loss": round(m["val_loss"], 4), "chance": m["val_chance"],
                "p_above_chance": m["val_above_chance_p"], "seconds": round(time.perf_counter() - t0, 1)})
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    a.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(a.out / "pretrain_default.csv", index=False)
    hyper = {k: v for k, v in b.provenance["hyperparameters"].items() if k != "monitor"}
    header = (f"Command: `python benchmarks/pretrain_default.py` (OMP_NUM_THREADS=1, CPU, seed 0, "
              f"{(time.perf_counter() - t_all) / 60:.1f} min). Recipe: {recipe.describe()}; {hyper}.")
    (a.out / "pretrain_default.md").write_text(summary(df, header))
    return 0


def summary(df: pd.DataFrame, header: str) -> str:
    """The markdown table: validation accuracy of the kept epoch per population and monitor."""
    wide = df.pivot(index="target", columns="monitor", values="val_acc")
    kept = df.pivot(index="target", columns="monitor", values="kept_epoch").add_prefix("kept epoch, ")
    failed = [f"target {r.target} ({r.monitor}, {r.val_acc:.2f})" for r in df.itertuples()
              if pd.isna(r.p_above_chance) or r.p_above_chance >= 0.05]
    return "\n".join([
        "# Default pretraining on every leave-one-subject-out population of Kalunga2016", "", header, "",
        f"Validation accuracy of the kept epoch per target population (n = {len(wide)}; chance 0.25; the 2 "
        "validation subjects are drawn from the population by the seed). With `val_acc` the kept epoch is "
        "chosen by this accuracy, so its value is optimistic; with `val_loss` it is not.", "",
        pd.concat([wide, kept], axis=1).to_markdown(), "",
        "Populations not above chance (binomial p >= 0.05): " + (", ".join(failed) or "none") + ".", ""])


if __name__ == "__main__":
    raise SystemExit(main())
