"""Per-trial test-time AdaBN without labels, against zero-shot, on each subject's first run only.

The zero-calibration case: the population network meets a new subject's trials one at a time,
in recording order, and updates its batch-norm statistics with each trial (momentum ``m``) before
predicting it ("AdaBN on the fly"). Compared with zero-shot and with AdaBN over the whole first
run at once (``adapt(..., strategy="bn")`` with the run as unlabelled data). The network alone is
scored (no CCA expert: nothing here has labels). The test runs are never read::

    python benchmarks/dev_online_bn.py --out benchmarks/results/dev_online_bn --pop-cache POPS
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _devset import dev_arguments, dev_data, population

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", category=FutureWarning)
MOMENTA = (0.05, 0.1, 0.3)


def online_adabn_proba(bundle, X: np.ndarray, momentum: float) -> np.ndarray:
    """Class probabilities of trials seen one at a time, batch norm updated with each before it is predicted."""
    import torch

    from eegtransfer.models import batchnorm_modules

    model = bundle.copy().model.eval()
    bns = [m for _, m in batchnorm_modules(model)]
    out = []
    with torch.no_grad():
        for x in torch.as_tensor(bundle.prepare_input(X), dtype=torch.float32):
            for m in bns:
                m.train()
                m.momentum = momentum
            model(x[None])
            for m in bns:
                m.eval()
            out.append(torch.softmax(model(x[None]), dim=1))
    return torch.cat(out).numpy()


def main(argv: list[str] | None = None) -> int:
    from eegtransfer.adaptation import adapt
    from eegtransfer.evaluation.protocol import split_target

    a = dev_arguments(__doc__.splitlines()[0], argv, pop_cache_help="folder for the pretrained populations")
    d, meta, X, y_all = dev_data()
    rows = []
    for target in a.targets:
        t = (meta["subject"].astype(str) == str(target)).to_numpy()
        first, _ = split_target(meta[t].reset_index(drop=True))
        Xf, yf = X[t][first], y_all[t][first]
        pop = population(d, ~t, False, target, a.pop_cache, recipe=a.recipe)
        pop.cca = None  # the network alone
        probas = {"zero-shot": pop.predict_proba(Xf),
                  "AdaBN over the whole run (bn)": adapt(pop, Xf, None, strategy="bn", device="cpu").predict_proba(Xf)}
        probas.update({f"AdaBN per trial, momentum {m:g}": online_adabn_proba(pop, Xf, m) for m in MOMENTA})
        for name, p in probas.items():
            rows.append({"subject": target, "method": name, "n": len(yf),
                         "accuracy": float((np.asarray(pop.classes)[p.argmax(1)] == yf).mean())})
    df = pd.DataFrame(rows)
    a.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(a.out / "dev_online_bn.csv", index=False)
    table = df.pivot_table(index="subject", columns="method", values="accuracy") * 100
    (a.out / "dev_online_bn.md").write_text("\n".join([
        "# AdaBN per trial, without labels, on each first run (the test runs are never read)", "",
        f"Command: `python benchmarks/dev_online_bn.py --subjects {a.subjects} --out {a.out}`. Accuracy (%) of "
        "the population network alone on all trials of the first run, in recording order (runs are "
        f"recorded in class blocks), n = {df['subject'].nunique()} subjects.", "",
        "Mean over subjects:", "", (table.mean().round(1).to_frame("accuracy")).to_markdown(), "",
        "Per subject:", "", table.round(1).to_markdown(), ""]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
