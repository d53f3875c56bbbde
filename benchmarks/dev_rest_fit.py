"""The CCA expert's say on ``rest`` fitted per population on between-run drift (nested development set).

``eegtransfer.ssvep.REST_EVIDENCE`` (0.5) was chosen between two values, 0 and 0.5, on the nested
development set (``dev_rest_evidence.py``). The say matters because a subject's later runs can
have weaker responses than its calibration run, so the expert calls stimulated trials ``rest``;
the calibration run cannot show it. This script fits the say per population on data that has
that drift instead, everything else as ``dev_nested.py`` (the cached networks are reused):

1. the population's expert as the package fits it (say 0.5; exponents ``a0``, ``w0`` fitted on the
   validation subjects' trials);
2. a first-run expert: the same expert fitted on the first run of every population subject;
3. ``r*``: the say in {0, 0.1, ..., 1} with the lowest mean log-loss of
   ``softmax(a0 * network + w0 * first-run expert with say r)`` on the validation subjects' later
   runs (the network never trained on them, the first-run expert never saw those trials);
4. the population's expert gets ``r*`` and its exponents are refitted (patients inherit both).

Decision rule, written down before the run (the rule of ``dev_rest_evidence.py``): adopt it if,
per target, ``dev_nested.py``'s selection (fewest harmed cells, then the higher mean) prefers it to
``auto`` with the package's 0.5 for at least 6 of the 11 targets, and ``auto``'s mean falls by at
most 0.5 points in every window. Outcome (``results/dev_rest_fit/recipes.md``): the fitted say was
0.5 to 1.0 (median 0.7; ``fitted/rest_say.csv``): on most validation subjects' later runs the
expert's ``rest`` evidence holds up, so the fit gives it more say, not less. ``auto`` moved by
-0.2 / -0.1 / -0.2 points (p >= 0.68) with 6 / 6 / 1 harmed cells against 5 / 5 / 0, and 3 of 11
targets preferred it: not adopted, ``REST_EVIDENCE`` stays 0.5. ::

    R=benchmarks/results/dev_rest_fit
    python benchmarks/dev_rest_fit.py --pairs 0-27 --out benchmarks/out/fit_a --pop-cache DIR &
    python benchmarks/dev_rest_fit.py --pairs 28-54 --out benchmarks/out/fit_b --pop-cache DIR &
    wait; python benchmarks/dev_rest_fit.py --merge benchmarks/out/fit_a benchmarks/out/fit_b --out $R/fitted
    python benchmarks/dev_nested.py --compare benchmarks/results/dev_rest_evidence/half $R/fitted --out $R

Each population's ``r*`` is printed and kept in ``--out``/``rest_say.csv`` (``--merge`` merges
those too). Options: ``dev_nested.py``'s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import _devset  # noqa: E402
import dev_nested  # noqa: E402

GRID = np.round(np.linspace(0.0, 1.0, 11), 2)


def log_loss(logp: np.ndarray, cols: np.ndarray) -> float:
    """Mean negative log-probability of the true columns."""
    from eegtransfer.ssvep import _log_softmax

    return float(-_log_softmax(logp)[np.arange(len(cols)), cols].mean())


def fitted_say(b: Any, d: dict[str, Any], pop: np.ndarray) -> tuple[float, dict[float, float]]:
    """Steps 2-3: ``r*`` and the log-loss of every value of the grid."""
    from eegtransfer.evaluation.protocol import split_target
    from eegtransfer.training.pretraining import _log_proba

    meta, X = d["meta"][pop].reset_index(drop=True), d["Xn"][pop]
    y = meta["label"].astype(str).to_numpy()
    first = np.zeros(len(meta), bool)  # each subject's first run, as the protocol defines it
    for idx in meta.groupby("subject").indices.values():
        first[idx] = split_target(meta.iloc[idx])[0]
    later = ~first & meta["subject"].astype(str).isin(b.provenance["validation_subjects"]).to_numpy()
    e = b.cca
    e1 = e.unfitted(weight=0.0)
    e1.fit(X[first], y[first], l2=1e-3)
    net = _log_proba(b.model, X[later], "cpu")
    cols = e._class_index(y[later])
    losses = {}
    for r in GRID:
        e1.rest_evidence = float(r)
        losses[float(r)] = log_loss(e.fitted_net_weight_ * net + e.fitted_weight_ * e1.log_proba(X[later]), cols)
    return min(losses, key=losses.get), losses


def main(argv: list[str] | None = None) -> int:
    """``dev_nested.py`` with each population's expert given its fitted say (step 4)."""
    from eegtransfer.training.pretraining import _log_proba

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--out", type=Path)
    p.add_argument("--merge", type=Path, nargs="+")
    a, _ = p.parse_known_args(argv)
    if a.merge and a.out:
        _devset.merge_parts(a.merge, "rest_say.csv", a.out)
        return dev_nested.main(argv)
    own = _devset.population
    says: list[dict] = []

    def population(d: dict[str, Any], pop: np.ndarray, aligned: bool, target: Any, cache: Any, seed: int = 0,
                   recipe: Any = None) -> Any:
        b = own(d, pop, aligned, target, cache, seed=seed, recipe=recipe)
        r, losses = fitted_say(b, d, pop)
        b.cca.rest_evidence = r
        subjects = d["meta"]["subject"].astype(str).to_numpy()[pop]
        val = np.isin(subjects, b.provenance["validation_subjects"])
        y = d["meta"]["label"].astype(str).to_numpy()[pop]
        Xv = d["Xn"][pop][val]
        b.cca.fit_weight(_log_proba(b.model, Xv, "cpu"), Xv, y[val])
        print(target, "fitted rest say", r, {k: round(v, 3) for k, v in losses.items()}, flush=True)
        says.append({"population": target, "seed": seed, "rest_say": r, **{f"log_loss_{k:g}": v for k, v in losses.items()},
                     "expert_weight": b.cca.fitted_weight_, "network_weight": b.cca.fitted_net_weight_})
        if a.out is not None:
            a.out.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(says).to_csv(a.out / "rest_say.csv", index=False)
        return b

    dev_nested.population = population
    return dev_nested.main(argv, variant="expert's say on rest fitted on between-run drift")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
