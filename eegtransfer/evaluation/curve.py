"""How much calibration is enough: the calibration curve, and a stop rule for the recording room.

:func:`calibration_curve` (offline, with a subject's later runs) adapts a population bundle on
the protocol's calibration windows (:func:`eegtransfer.evaluation.protocol.calibration_window`:
the first *m* minutes of the first run, grown until every class has 2 trials — the same window
for every strategy) and scores every adapted model on the **same** later runs.

:func:`stop_rule` (online, from the calibration trials recorded so far, no test labels) builds
an inner chronological learning curve: the latest quarter of each class's trials is an inner
test; a model adapted on the earlier half of the rest is compared with one adapted on all of
it. Recording can stop when the gain of that last doubling is **shown** to be below a margin:
the upper bound of its one-sided block-bootstrap confidence interval (blocks of consecutive
trials, since neighbouring trials are dependent) is under ``margin`` — an equivalence test, not
the absence of a significant gain.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..adaptation import adapt, chronological_split, parse_strategy
from ..bundle import Bundle
from ..errors import EEGTransferError
from .protocol import split_target, target_window

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

logger = logging.getLogger("eegtransfer")

DEFAULT_MINUTES: tuple[float | str, ...] = (0, 1, 2, "run")
DEFAULT_STRATEGIES: tuple[str, ...] = ("none", "bn", "align", "head", "bn+head", "align+head", "last-k", "auto")


def calibration_curve(
    bundle: Bundle | dict[str, Bundle],
    X: np.ndarray,
    meta: pd.DataFrame,
    *,
    minutes: list[float | str] | None = None,
    strategies: list[str] | None = None,
    device: str = "cpu",
    seed: int = 0,
    **adapt_kwargs: Any,
) -> pd.DataFrame:
    """Accuracy on a subject's later runs against calibration minutes, per strategy.

    Parameters
    ----------
    bundle : Bundle | dict of str to Bundle
        The population model; or one per strategy (e.g. an aligned pretraining for the
        ``align`` strategies), with key ``"default"`` for the rest.
    X : ndarray of float32, shape (n_trials, n_chans, n_times)
        One subject's trials (at least two runs), in recording order.
    meta : pandas.DataFrame, n_trials rows
        Their metadata (``subject, session, run, onset, label``).
    minutes : list of float or "run" | None
        Calibration lengths (default :data:`DEFAULT_MINUTES`); ``0`` is zero-shot only, ``"run"``
        the whole first run.
    strategies : list of str | None
        Default :data:`DEFAULT_STRATEGIES`.
    device, seed, **adapt_kwargs
        Passed to :func:`eegtransfer.adaptation.adapt`.

    Returns
    -------
    curve : pandas.DataFrame
        One row per (strategy, minutes): ``strategy, minutes, minutes_used, grown,
        n_calibration, n_test, accuracy, seconds, chosen, guard, reason``.
    """
    import pandas as pd

    bundles = bundle if isinstance(bundle, dict) else {"default": bundle}
    if "default" not in bundles:
        raise EEGTransferError("a dict of bundles needs a 'default' entry")
    base = bundles["default"]
    X, meta = base.check_input(X), meta.reset_index(drop=True)
    if len(meta) != len(X):
        raise EEGTransferError(f"X has {len(X)} trials but meta has {len(meta)} rows")
    labels = meta["label"].astype(str).to_numpy()
    first, test = split_target(meta)
    rows = []
    for m in (DEFAULT_MINUTES if minutes is None else minutes):
        cal, cell = _window(meta, first, m, base.recipe.tmax)
        for strat in (DEFAULT_STRATEGIES if strategies is None else strategies):
            row = {"strategy": strat, **cell, "n_test": int(test.sum()), "accuracy": float("nan"),
                   "seconds": float("nan"), "chosen": None, "guard": None, "reason": ""}
            b = bundles.get(strat, base)
            if strat != "none" and not cal.any():
                row["reason"] = "no calibration data"
                rows.append(row)
                continue
            t0 = time.perf_counter()
            try:
                patient = b if strat == "none" else adapt(b, X[cal], _labels_for(strat, labels[cal]),
                                                           strategy=strat, device=device, seed=seed, **adapt_kwargs)
            except EEGTransferError as err:
                row["reason"] = str(err)
            else:
                a = patient.adaptation
                row.update(accuracy=float((patient.predict(X[test]).astype(str) == labels[test]).mean()),
                           seconds=time.perf_counter() - t0, chosen=a.chosen if a else None,
                           guard=a.guard.kept if a and a.guard else None)
            rows.append(row)
    return pd.DataFrame(rows)


def _labels_for(strategy: str, labels: np.ndarray) -> np.ndarray | None:
    """Labels for a supervised strategy, none for a label-free one."""
    return labels if strategy == "auto" or any(s.supervised for s in parse_strategy(strategy)) else None


def _window(meta: pd.DataFrame, first: np.ndarray, m: float | str, tmax: float) -> tuple[np.ndarray, dict]:
    """The protocol's calibration mask over ``meta`` and its description."""
    cal = np.zeros(len(meta), bool)
    if str(m) != "run" and float(m) == 0:
        return cal, {"minutes": 0.0, "minutes_used": 0.0, "grown": False, "n_calibration": 0}
    w, cal = target_window(meta, first, m, trial_seconds=tmax)
    return cal, {"minutes": w.minutes_used if str(m) == "run" else float(m), "minutes_used": w.minutes_used,
                 "grown": w.grown, "n_calibration": w.n_trials}


def block_bootstrap_upper(d: np.ndarray, *, alpha: float = 0.05, block: int = 4, n_boot: int = 2000,
                          seed: int = 0) -> float:
    """One-sided upper ``1 - alpha`` bound of ``mean(d)`` by a moving-block bootstrap.

    Parameters
    ----------
    d : ndarray, shape (n,)
        Per-trial differences in time order.
    block : int
        Block length (consecutive trials resampled together).
    """
    d = np.asarray(d, float)
    if d.ndim != 1 or len(d) == 0:
        raise EEGTransferError(f"need a non-empty 1-D array of differences, got shape {d.shape}")
    block = max(1, min(block, len(d)))
    starts = np.arange(len(d) - block + 1)
    rng = np.random.default_rng(seed)
    n_blocks = int(np.ceil(len(d) / block))
    picks = rng.choice(starts, size=(n_boot, n_blocks))
    idx = (picks[:, :, None] + np.arange(block)).reshape(n_boot, -1)[:, :len(d)]
    return float(np.quantile(d[idx].mean(1), 1 - alpha))


def stop_rule(bundle: Bundle, X: np.ndarray, labels: np.ndarray, *, strategy: str = "head",
              margin: float = 0.05, alpha: float = 0.05, block: int = 4, seed: int = 0,
              **adapt_kwargs: Any) -> dict[str, Any]:
    """Can the operator stop recording calibration data? Decided from those trials alone.

    Parameters
    ----------
    bundle : Bundle
        The population model.
    X : ndarray, shape (n_trials, n_chans, n_times)
        The calibration trials recorded so far, in time order; ``labels`` their classes.
    strategy : str
        The (supervised) strategy that will be used.
    margin : float
        Accuracy gain (fraction of trials) below which more data is not worth recording.
    alpha : float
        Level of the one-sided equivalence test.
    block : int
        Block length of the bootstrap over the inner test trials.

    Returns
    -------
    dict
        ``stop`` (bool), ``gain`` (accuracy of the model on all earlier trials minus that on
        their first half, on the inner test trials), ``upper`` (its upper confidence bound),
        ``n_inner_test``, ``n_half``, ``n_full``, ``reason``.
    """
    labels = np.asarray(labels).astype(str)
    earlier, inner = chronological_split(labels, 0.25)
    half = earlier & (np.cumsum(earlier) <= max(1, earlier.sum() // 2))
    out = {"stop": False, "gain": float("nan"), "upper": float("nan"), "n_inner_test": int(inner.sum()),
           "n_half": int(half.sum()), "n_full": int(earlier.sum()), "margin": margin, "strategy": strategy}
    try:
        small = adapt(bundle, X[half], labels[half], strategy=strategy, guard=False, seed=seed, **adapt_kwargs)
        full = adapt(bundle, X[earlier], labels[earlier], strategy=strategy, guard=False, seed=seed, **adapt_kwargs)
    except EEGTransferError as err:
        out["reason"] = f"keep recording: too few trials for an inner learning curve ({err})"
        return out
    y = labels[inner]
    d = (full.predict(X[inner]).astype(str) == y).astype(float) - (small.predict(X[inner]).astype(str) == y)
    upper = block_bootstrap_upper(d, alpha=alpha, block=block, seed=seed)
    stop = upper < margin
    out.update(stop=bool(stop), gain=float(d.mean()), upper=upper)
    out["reason"] = (f"doubling calibration from {out['n_half']} to {out['n_full']} trials changed accuracy on "
                     f"the {len(y)} latest trials by {d.mean():+.3f}; its {100 * (1 - alpha):g}% upper bound "
                     f"{upper:+.3f} is {'below' if stop else 'not below'} the margin {margin:g}: "
                     + ("more calibration is unlikely to help" if stop else "keep recording"))
    return out


def plot_curve(curve: pd.DataFrame, path: str | Path | None = None, *, title: str = "",
               err: str | None = None) -> Figure:
    """Accuracy against calibration minutes, one line per strategy; saved to ``path`` if given.

    Parameters
    ----------
    curve : pandas.DataFrame
        Columns ``strategy``, ``minutes``, ``accuracy`` (and ``err`` for error bars).
    path : str | Path | None
        A PNG to write (its folder must exist).

    Returns
    -------
    fig : matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.8))
    ax = fig.subplots()
    for strat, df in curve.groupby("strategy", sort=False):
        df = df[df["accuracy"].notna()].sort_values("minutes")
        if len(df):
            ax.errorbar(df["minutes"], df["accuracy"], yerr=df[err] if err and err in df else None,
                        marker="o", ms=4, capsize=2, label=str(strat))
    ax.set_xlabel("calibration (minutes of recording)")
    ax.set_ylabel("accuracy on later trials")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    if path is not None:
        fig.savefig(Path(path), dpi=110)
    return fig
