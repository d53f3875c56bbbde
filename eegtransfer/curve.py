"""Calibration curves: how accuracy on later data grows with calibration minutes.

For one subject, :func:`calibration_curve` adapts a population bundle on the
first ``m`` minutes of recording, for each ``m`` and each strategy, and
scores every adapted model on the **same** later trials (those after the
longest calibration window), so that steps of the curve are paired
comparisons. :func:`stop_rule` then tells the operator whether the last step
still helped: it bootstraps the per-trial difference between the last two
calibration lengths and stops when the confidence interval of the gain
includes zero (an exact McNemar test on the discordant trials is reported
alongside).

Missing classes. Calibration is chronological, so a short window can lack
classes (Kalunga2016's runs start with 8 ``rest`` trials, about one minute).
Label-free strategies (``none``, ``bn``, ``align`` and ``bn+align``) still
run; a strategy that needs labels is recorded with ``accuracy = NaN`` and
the reason (which classes have fewer than 2 trials). We chose this over
per-class selection because per-class selection would need trials recorded
*after* the window, i.e. more minutes than claimed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .adaptation import adapt, parse_strategy, select_calibration, timeline
from .bundle import Bundle
from .errors import EEGTransferError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

logger = logging.getLogger("eegtransfer")

DEFAULT_MINUTES: tuple[float | str, ...] = (0.25, 0.5, 1, 2, 4, "run")
DEFAULT_STRATEGIES: tuple[str, ...] = ("none", "bn", "align", "head", "bn+head", "align+head",
                                       "last-k", "auto")


def first_run_minutes(meta: pd.DataFrame) -> float:
    """Length in minutes of the first recording (run) in ``meta``."""
    first = meta.iloc[0]
    same = ((meta["subject"].astype(str) == str(first["subject"]))
            & (meta["session"].astype(str) == str(first["session"]))
            & (meta["run"].astype(str) == str(first["run"])))
    if "recording_seconds" in meta.columns:
        return float(meta["recording_seconds"].iloc[0]) / 60
    return float(timeline(meta[same]).max()) / 60


def resolve_minutes(minutes: list[float | str], meta: pd.DataFrame) -> list[float]:
    """Numbers stay; ``"run"`` becomes the length of the first run in minutes."""
    out = []
    for m in minutes:
        out.append(first_run_minutes(meta) if str(m).lower() == "run" else float(m))
    return out


def missing_classes(labels: np.ndarray, classes: list[str], minimum: int = 2) -> list[str]:
    """Classes with fewer than ``minimum`` trials among ``labels``."""
    labels = np.asarray(labels).astype(str)
    return [c for c in classes if int((labels == c).sum()) < minimum]


def calibration_curve(
    bundle: Bundle | dict[str, Bundle],
    X: np.ndarray,
    meta: pd.DataFrame,
    *,
    minutes: list[float | str] | None = None,
    strategies: list[str] | None = None,
    test: np.ndarray | None = None,
    trial_seconds: float | None = None,
    device: str = "cpu",
    seed: int = 0,
    **adapt_kwargs: Any,
) -> pd.DataFrame:
    """Accuracy on later trials against calibration minutes, per strategy.

    Parameters
    ----------
    bundle : Bundle | dict of str to Bundle
        The population model; or one per strategy (e.g. an aligned
        pretraining for the ``align`` strategies), with key ``"default"``
        for the rest.
    X : ndarray of float32, shape (n_trials, n_chans, n_times)
        One subject's trials, in recording order.
    meta : pandas.DataFrame, n_trials rows
        Their metadata (``subject, session, run, onset, label``,
        ``recording_seconds``).
    minutes : list of float or "run" | None
        Calibration lengths (default :data:`DEFAULT_MINUTES`). ``0`` means no calibration (only ``none`` runs);
        ``"run"`` is the whole first run.
    strategies : list of str | None
        Default :data:`DEFAULT_STRATEGIES`. Names accepted by :func:`eegtransfer.adaptation.adapt`.
    test : ndarray of bool, shape (n_trials,) | None
        The trials to score. Default: every trial that starts after the
        longest calibration window, the same for every row.
    trial_seconds : float | None
        Trial length for "has ended within the window"; default
        ``bundle.recipe.tmax``.
    device, seed, **adapt_kwargs
        Passed to :func:`eegtransfer.adaptation.adapt`.

    Returns
    -------
    curve : pandas.DataFrame
        One row per (strategy, minutes): ``strategy, minutes, n_calibration,
        n_test, accuracy, seconds, chosen, guard, reason`` and ``correct``
        (object column: the per-test-trial boolean array used by
        :func:`stop_rule`). ``accuracy`` is NaN with a ``reason`` when the
        strategy could not run (e.g. a class is missing from the window).
    """
    import pandas as pd

    minutes = list(DEFAULT_MINUTES if minutes is None else minutes)
    strategies = list(DEFAULT_STRATEGIES if strategies is None else strategies)
    bundles = bundle if isinstance(bundle, dict) else {"default": bundle}
    if "default" not in bundles:
        raise EEGTransferError("a dict of bundles needs a 'default' entry")
    base = bundles["default"]
    X = base.check_input(X)
    meta = meta.reset_index(drop=True)
    if len(meta) != len(X):
        raise EEGTransferError(f"X has {len(X)} trials but meta has {len(meta)} rows")
    labels = meta["label"].astype(str).to_numpy()
    tsec = float(base.recipe.tmax if trial_seconds is None else trial_seconds)
    mins = resolve_minutes(list(minutes), meta)
    t = timeline(meta)
    if test is None:
        longest = max(mins)
        test = t >= longest * 60 - 1e-9
    test = np.asarray(test, bool)
    if not test.any():
        raise EEGTransferError("no trial is left to test after the longest calibration window")
    y_test = labels[test]
    rows: list[dict[str, Any]] = []
    for m in mins:
        cal = select_calibration(meta, minutes=m, trial_seconds=tsec) if m > 0 else np.zeros(len(X), bool)
        overlap = cal & test
        if overlap.any():
            raise EEGTransferError(f"{int(overlap.sum())} calibration trials at {m:g} min are also test "
                                   "trials; pass a test mask after the longest window")
        Xc, yc = X[cal], labels[cal]
        for strat in strategies:
            b = bundles.get(strat, base)
            row: dict[str, Any] = {"strategy": strat, "minutes": m, "n_calibration": int(cal.sum()),
                                   "n_test": int(test.sum()), "accuracy": float("nan"),
                                   "seconds": float("nan"), "chosen": None, "guard": None,
                                   "reason": "", "correct": None}
            supervised = strat == "auto" or any(s.supervised for s in parse_strategy(strat))
            missing = missing_classes(yc, b.classes)
            if strat != "none" and cal.sum() == 0:
                row["reason"] = "no calibration data"
            elif supervised and missing:
                row["reason"] = (f"class(es) {missing} have fewer than 2 trials in the first {m:g} min "
                                 "(chronological selection)")
            else:
                t0 = time.perf_counter()
                try:
                    if strat == "none":
                        patient = b
                    else:
                        patient = adapt(b, Xc, yc if supervised else None, strategy=strat,
                                        device=device, seed=seed, **adapt_kwargs)
                except EEGTransferError as err:
                    row["reason"] = str(err)
                    patient = None
                row["seconds"] = time.perf_counter() - t0
                if patient is not None:
                    pred = patient.predict(X[test])
                    correct = np.asarray(pred).astype(str) == y_test
                    a = patient.adaptation
                    row.update(accuracy=float(correct.mean()), correct=correct,
                               chosen=a.chosen if a else None, guard=a.guard.kept if a and a.guard else None)
            rows.append(row)
            logger.info("curve %s @ %.2f min: accuracy %s %s", strat, m, row["accuracy"], row["reason"])
    return pd.DataFrame(rows)


def paired_bootstrap_ci(a: np.ndarray, b: np.ndarray, *, n_boot: int = 2000, alpha: float = 0.05,
                        seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Gain ``mean(b) - mean(a)`` over paired trials and its percentile bootstrap CI.

    Parameters
    ----------
    a, b : ndarray of bool, shape (n_trials,)
        Per-trial correctness of two models on the same trials.

    Returns
    -------
    gain : float
    ci : (low, high)
    """
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise EEGTransferError(f"paired scores must be two equal 1-D arrays, got {a.shape} and {b.shape}")
    d = b - a
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(n_boot, len(d)))
    boots = d[idx].mean(1)
    return float(d.mean()), (float(np.quantile(boots, alpha / 2)), float(np.quantile(boots, 1 - alpha / 2)))


def mcnemar_p(a: np.ndarray, b: np.ndarray) -> float:
    """Exact two-sided McNemar p-value for paired per-trial correctness."""
    from scipy.stats import binomtest

    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    n01, n10 = int((~a & b).sum()), int((a & ~b).sum())
    if n01 + n10 == 0:
        return 1.0
    return float(binomtest(n01, n01 + n10, 0.5).pvalue)


def stop_rule(curve: pd.DataFrame, *, strategy: str | None = None, alpha: float = 0.05,
              n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Should the operator stop recording calibration data?

    Compares the last two calibration lengths at which ``strategy`` ran
    (accuracy not NaN) on the same test trials. Stop when the ``1 - alpha``
    paired-bootstrap confidence interval of the gain includes zero (or lies
    below it): the last step of calibration did not measurably help.

    Parameters
    ----------
    curve : pandas.DataFrame
        From :func:`calibration_curve` (needs the ``correct`` column).
    strategy : str | None
        Default: the strategy with the best accuracy at the longest
        calibration.
    alpha : float
        1 - confidence level.

    Returns
    -------
    dict
        ``stop`` (bool), ``reason`` (str), ``strategy``, ``from_minutes``,
        ``to_minutes``, ``gain`` (accuracy difference), ``ci`` (low, high),
        ``mcnemar_p``.
    """
    ok = curve[curve["accuracy"].notna()]
    if ok.empty:
        raise EEGTransferError("the curve has no scored point")
    if strategy is None:
        last = ok[ok["minutes"] == ok["minutes"].max()]
        strategy = str(last.sort_values("accuracy", ascending=False).iloc[0]["strategy"])
    pts = ok[ok["strategy"] == strategy].sort_values("minutes")
    out: dict[str, Any] = {"strategy": strategy, "stop": False, "gain": float("nan"),
                           "ci": (float("nan"), float("nan")), "mcnemar_p": float("nan"),
                           "from_minutes": None, "to_minutes": None}
    if len(pts) < 2:
        out["reason"] = (f"{strategy!r} has {len(pts)} scored point(s); record more calibration "
                         "to measure a gain")
        return out
    a, b = pts.iloc[-2], pts.iloc[-1]
    gain, ci = paired_bootstrap_ci(a["correct"], b["correct"], n_boot=n_boot, alpha=alpha, seed=seed)
    p = mcnemar_p(a["correct"], b["correct"])
    stop = bool(ci[0] <= 0.0)
    level = f"{100 * (1 - alpha):g}%"
    out.update(stop=stop, gain=gain, ci=ci, mcnemar_p=p, from_minutes=float(a["minutes"]),
               to_minutes=float(b["minutes"]))
    span = f"{_num(a['minutes'])} -> {_num(b['minutes'])} min"
    if stop:
        out["reason"] = (f"{strategy}: going {span} changed accuracy by {gain:+.3f} "
                         f"({level} CI {ci[0]:+.3f} to {ci[1]:+.3f} includes zero; McNemar p={p:.3f}): "
                         "more calibration is unlikely to help")
    else:
        out["reason"] = (f"{strategy}: going {span} gained {gain:+.3f} ({level} CI {ci[0]:+.3f} "
                         f"to {ci[1]:+.3f} excludes zero; McNemar p={p:.3f}): more calibration "
                         "is likely to help")
    return out


def _num(x: float) -> str:
    return f"{float(x):.2f}".rstrip("0").rstrip(".")


def plot_curve(curve: pd.DataFrame, path: str | Path, *, title: str = "",
               baselines: dict[str, float] | None = None, err: str | None = None,
               panel: str | None = None, shared: str = "-") -> Path:
    """Save accuracy against calibration minutes, one line per strategy, as a PNG.

    Parameters
    ----------
    curve : pandas.DataFrame
        Columns ``strategy``, ``minutes``, ``accuracy`` (and ``err`` for
        error bars, e.g. a std over subjects).
    path : str | Path
        Output PNG.
    baselines : dict of str to float | None
        Horizontal reference lines (label -> accuracy).
    panel : str | None
        Column that splits the plot into side-by-side panels (e.g. ``"model"``);
        rows whose value is ``shared`` (baselines) are drawn dashed in every panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if panel is not None and panel in curve:
        names = [v for v in dict.fromkeys(curve[panel]) if v != shared] or [shared]
    else:
        names = [None]
    fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 4.8), squeeze=False, sharey=True)
    palette = plt.get_cmap("tab20").colors
    color = {st: palette[(2 * i) % 20 + (2 * i) // 20 % 2] for i, st in enumerate(dict.fromkeys(curve["strategy"]))}
    for ax, name in zip(axes[0], names):
        if name is None:
            parts = [(curve, "-")]
        else:
            parts = [(curve[curve[panel] == name], "-"), (curve[curve[panel] == shared], "--")]
        for df_, ls in parts:
            for strat, df in df_.groupby("strategy", sort=False):
                df = df[df["accuracy"].notna()].sort_values("minutes")
                if df.empty:
                    continue
                yerr = df[err] if err and err in df else None
                ax.errorbar(df["minutes"], df["accuracy"], yerr=yerr, marker="o", ms=4, capsize=2,
                            ls=ls, color=color[strat], label=str(strat))
        for bname, acc in (baselines or {}).items():
            ax.axhline(acc, ls=":", lw=1, color="grey")
            ax.text(0, acc, f" {bname}", va="bottom", fontsize=7, color="grey")
        ax.set_xlabel("calibration (minutes of recording)")
        ax.set_title(str(name) if name is not None else title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    axes[0][0].set_ylabel("accuracy on later trials")
    if names != [None] and title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
