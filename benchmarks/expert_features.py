"""What the CCA expert reads: feature sets measured on the development trials only.

The same development set as ``benchmarks/dev_first_run.py`` (each target's first run, the rest
after the calibration window; the test runs are never read), the expert alone, no network: the
population's expert (fitted on the 10 other subjects, as at pretraining) and the expert
calibrated on the 2-minute window (l2 = 1, pulled towards the population's). Feature sets:
plain CCA, several filter banks, the first two canonical correlations (the default), SNR features, and
templates of the patient's own calibration trials (IT-CCA, which needs trials phase-locked to the
flicker). About 3 minutes on one core::

    MNE_DATA=/path/to/mne_data OMP_NUM_THREADS=1 python benchmarks/expert_features.py

Writes ``benchmarks/results/expert_features.md``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", category=FutureWarning)
FREQS = [13.0, 17.0, 21.0]


def expert_class(extra: Callable[[np.ndarray, float], np.ndarray] | None, bands: object,
                 n_components: int) -> Callable:
    """A CCAExpert factory whose features are its correlations plus ``extra(X, sfreq)``."""
    from eegtransfer.ssvep import CCAExpert

    class Expert(CCAExpert):
        def __init__(self, classes: list[str], sfreq: float, max_freq: float) -> None:
            super().__init__(classes, dict(zip(["13", "17", "21"], FREQS)), sfreq, max_freq=max_freq, bands=bands,
                             n_components=n_components)
            if extra is not None:
                d = self.coef_.shape[1] + extra(np.zeros((1, 8, int(4 * sfreq))), sfreq).shape[1]
                self.coef_ = np.zeros((len(classes), d))

        def correlations(self, X: np.ndarray) -> np.ndarray:
            rho = super().correlations(X)
            return rho if extra is None else np.concatenate([rho, extra(X, self.sfreq)], axis=1)

        def _rule(self) -> np.ndarray:  # the population fit starts from zero: every feature set alike
            return np.zeros(self.coef_.size + len(self.classes))

    return Expert


def snr(X: np.ndarray, sfreq: float) -> np.ndarray:
    """Log power at each frequency (and its harmonic) against the neighbouring bins; relative alpha."""
    from scipy.signal import welch

    f, P = welch(X, fs=sfreq, nperseg=X.shape[2], axis=-1)
    P = P.mean(axis=1)
    out = []
    for s in FREQS:
        v = []
        for h in (s, 2 * s):
            if h < sfreq / 2 - 1:
                near = (abs(f - h) > 0.6) & (abs(f - h) < 3)
                v.append(np.log(P[:, np.argmin(abs(f - h))]) - np.log(P[:, near].mean(axis=1)))
        out.append(np.mean(v, axis=0))
    out.append(np.log(P[:, (f >= 8) & (f <= 12)].sum(axis=1) / P[:, (f >= 4) & (f <= 30)].sum(axis=1)))
    return np.stack(out, axis=1)


def template_accuracy(Xt: np.ndarray, yt: np.ndarray, cal: np.ndarray, dev: np.ndarray) -> float:
    """IT-CCA among the three frequencies: canonical correlation with each class's mean calibration trial."""
    def cc(a: np.ndarray, b: np.ndarray) -> float:
        qa = np.linalg.qr((a - a.mean(1, keepdims=True)).T)[0]
        qb = np.linalg.qr((b - b.mean(1, keepdims=True)).T)[0]
        return float(np.linalg.svd(qa.T @ qb, compute_uv=False)[0])

    names = ["13", "17", "21"]
    templates = [Xt[cal & (yt == c)].mean(axis=0) for c in names]
    idx = np.flatnonzero(dev & (yt != "rest"))
    pred = [names[int(np.argmax([cc(Xt[i], T) for T in templates]))] for i in idx]
    return float(np.mean(np.array(pred) == yt[idx]))


def main() -> int:
    from sklearn.metrics import balanced_accuracy_score

    from eegtransfer.evaluation.loso import load
    from eegtransfer.evaluation.protocol import split_target, target_window

    d64, d128 = load("Kalunga2016", sfreq=64.0), load("Kalunga2016")
    meta = d64["meta"]
    y = meta["label"].astype(str).to_numpy()
    variants = {  # (data, extra features, bands, canonical correlations per band and frequency)
        "plain CCA (one band), 64 Hz": (d64, None, [None], 1),
        "filter bank, one sub-band per frequency, 64 Hz": (d64, None, "auto", 1),
        "filter bank, one sub-band per frequency, 128 Hz (to 45 Hz)": (d128, None, "auto", 1),
        "filter bank, sub-bands from 8, 22 and 32 Hz, 128 Hz": (d128, None, [(8, 45), (22, 45), (32, 45)], 1),
        "filter bank, one sub-band per frequency, first two correlations (the default), 64 Hz":
            (d64, None, "auto", 2),
        "plain CCA + SNR features, 64 Hz": (d64, snr, [None], 1),
    }
    rows = []
    for name, (d, extra, bands, n_components) in variants.items():
        cls, X, recipe = expert_class(extra, bands, n_components), d["Xn"], d["net"]
        for target in range(1, 12):
            t = (meta["subject"].astype(str) == str(target)).to_numpy()
            mt = meta[t].reset_index(drop=True)
            first, _ = split_target(mt)
            pop = cls(sorted(set(y)), recipe.sfreq, recipe.h_freq).fit(X[~t], y[~t], l2=1e-3)
            _, cal = target_window(mt, first, "2", trial_seconds=recipe.tmax)
            dev = first & ~cal
            Xt, yt = X[t], y[t]
            cal_e = cls(pop.classes, recipe.sfreq, recipe.h_freq).fit(Xt[cal], yt[cal], l2=1.0, prior=pop)
            for mode, e in (("population's expert", pop), ("calibrated (2 min)", cal_e)):
                pred = np.asarray(e.classes)[e.log_proba(Xt[dev]).argmax(1)]
                rows.append({"features": name, "expert": mode, "subject": target,
                             "balanced_accuracy": balanced_accuracy_score(yt[dev], pred)})
            if name.startswith("plain CCA (one band)"):
                rows.append({"features": "templates of the calibration trials (IT-CCA), 3 frequencies, chance 33%",
                             "expert": "calibration only", "subject": target,
                             "balanced_accuracy": template_accuracy(Xt, yt, cal, dev)})
        print(name, flush=True)
    df = pd.DataFrame(rows)
    table = df.pivot_table(index="features", columns="expert", values="balanced_accuracy", sort=False) * 100
    table["n"] = df.groupby("features", sort=False)["subject"].nunique()
    out = ROOT / "benchmarks" / "results" / "expert_features.md"
    out.write_text("\n".join([
        "# What the CCA expert reads (development trials of the first runs, expert alone)", "",
        "Command: `python benchmarks/expert_features.py`. Balanced accuracy (%) of the trials of each target's "
        "first run after its 2-minute calibration window, mean over subjects (n per row); the test runs are "
        "never read. The IT-CCA row is plain accuracy among the three frequencies (rest trials left out).", "",
        table.round(1).to_markdown(), ""]))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
