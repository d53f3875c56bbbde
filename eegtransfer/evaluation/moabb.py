"""MOABB's ``CrossSubjectEvaluation`` of our pipelines against classical baselines.

:func:`run_benchmark` runs the pipelines of :mod:`eegtransfer.evaluation.pipelines` over MOABB
datasets (deduplicated: :func:`eegtransfer.io.deduplicated`) once per calibration size: each
held-out subject's first ``calibration_size`` of every session is routed (with labels) to the
pipelines that request it, the rest is the test. For the one protocol of the project's tables
use :mod:`eegtransfer.evaluation.loso` (``eegtransfer benchmark``, the default).

Parallelism: MOABB fits the folds (one per held-out subject) with joblib, ``n_jobs`` of them at
a time. With ``dask_scheduler`` (an address or a ``dask.distributed.Client``) the folds go to
that Dask cluster through joblib's ``dask`` backend. The pretrain cache
(:mod:`eegtransfer.training.cache`) makes every strategy and calibration size of a fold share
one population model.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EEGTransferError
from .pipelines import BASELINES, baseline_pipelines, our_pipelines

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


logger = logging.getLogger("eegtransfer")



def _dask_backend() -> str:
    """Name of a joblib backend that always sends tasks to the Dask cluster.

    joblib's own ``dask`` backend runs tasks in the calling process when the
    cluster has a single thread in total (it sees ``n_jobs == 1``); this one
    reports at least 2 so that every fold goes to the cluster.
    """
    import joblib

    try:
        from joblib._dask import DaskDistributedBackend
    except ImportError:  # pragma: no cover - joblib moved it
        return "dask"

    class _ClusterBackend(DaskDistributedBackend):
        def effective_n_jobs(self, n_jobs: int) -> int:
            return max(2, super().effective_n_jobs(n_jobs))

    joblib.register_parallel_backend("eegtransfer-dask", _ClusterBackend)
    return "eegtransfer-dask"


def paradigm_for(dataset: Any, resample: float | None = 128.0) -> Any:
    """The MOABB paradigm that matches ``dataset.paradigm`` (SSVEP, motor imagery, P300)."""
    import moabb.paradigms as mp

    kind = str(getattr(dataset, "paradigm", "")).lower()
    kw = {} if resample is None else {"resample": resample}
    if kind == "ssvep":
        return mp.SSVEP(**kw)
    if kind == "imagery":
        return mp.MotorImagery(**kw)
    if kind == "p300":
        return mp.P300(**kw)
    raise EEGTransferError(f"no paradigm for {type(dataset).__name__} (paradigm {kind!r}); "
                           "pass paradigm=")


# --- results -----------------------------------------------------------------

@dataclass
class BenchmarkResult:
    """What :func:`run_benchmark` returns.

    Attributes
    ----------
    results : pandas.DataFrame
        MOABB's results (one row per subject, session and pipeline; columns
        ``score, time, samples, subject, session, channels, n_sessions,
        dataset, pipeline``) plus ``calibration_size``.
    curve : pandas.DataFrame
        Mean, standard deviation and count of ``score`` per dataset,
        pipeline and calibration size.
    files : dict of str to Path
        Files written (``results``, ``curve``, ``score_plot``, ``curve_plot``).
    seconds : float
    settings : dict
    """

    results: pd.DataFrame
    curve: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """Mean score, pipelines as rows, calibration sizes as columns (one per dataset)."""
        t = self.curve.pivot_table(index=["dataset", "pipeline"], columns="calibration_size",
                                   values="score_mean")
        t.columns = [f"cal {c:g}" for c in t.columns]
        return t

    def to_markdown(self) -> str:
        """The mean ± std table in Markdown."""
        return curve_markdown(self.curve)

    def __repr__(self) -> str:
        n_subj = self.results["subject"].nunique() if len(self.results) else 0
        head = (f"<BenchmarkResult: {self.results['pipeline'].nunique() if len(self.results) else 0} "
                f"pipelines x {n_subj} subjects x calibration sizes "
                f"{sorted(self.curve['calibration_size'].unique().tolist()) if len(self.curve) else []}, "
                f"{self.seconds:.0f} s>")
        return head + "\n" + self.table().round(3).to_string()

    def _repr_html_(self) -> str:
        import html

        files = "".join(f"<li>{html.escape(k)}: <code>{html.escape(str(v))}</code></li>"
                        for k, v in self.files.items())
        return (f"<p><b>BenchmarkResult</b> ({self.seconds:.0f} s): mean score per pipeline and "
                f"calibration size</p>{self.table().round(3).to_html()}"
                + (f"<ul>{files}</ul>" if files else ""))


def calibration_table(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and number of scores per dataset, pipeline and calibration size."""
    g = results.groupby(["dataset", "pipeline", "calibration_size"])["score"]
    out = g.agg(score_mean="mean", score_std="std", n="count").reset_index()
    return out.sort_values(["dataset", "calibration_size", "score_mean"],
                           ascending=[True, True, False]).reset_index(drop=True)


def curve_markdown(curve: pd.DataFrame) -> str:
    """A Markdown table: pipelines as rows, ``mean ± std`` per calibration size."""
    sizes = sorted(curve["calibration_size"].unique().tolist())
    lines = ["| dataset | pipeline | " + " | ".join(f"calibration {s:g}" for s in sizes) + " |",
             "|---|---|" + "---|" * len(sizes)]
    order = (curve[curve["calibration_size"] == sizes[-1]]
             .sort_values("score_mean", ascending=False)[["dataset", "pipeline"]].values.tolist())
    for ds, pipe in order:
        cells = []
        for s in sizes:
            row = curve[(curve["dataset"] == ds) & (curve["pipeline"] == pipe) & (curve["calibration_size"] == s)]
            cells.append("" if row.empty else
                         f"{row['score_mean'].iloc[0]:.3f} ± {row['score_std'].fillna(0).iloc[0]:.3f}")
        lines.append(f"| {ds} | {pipe} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_benchmark(results: pd.DataFrame, curve: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """MOABB's ``score_plot`` (pipelines labelled with their calibration size) and the curve."""
    import matplotlib

    if os.environ.get("MPLBACKEND") is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from moabb.analysis.plotting import score_plot

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    data = results.copy()
    data["pipeline"] = [f"{p} (cal {c:g})" for p, c in zip(data["pipeline"], data["calibration_size"])]
    fig, _ = score_plot(data)
    files["score_plot"] = out_dir / "score_plot.png"
    fig.savefig(files["score_plot"], dpi=110, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (ds, pipe), g in curve.groupby(["dataset", "pipeline"]):
        g = g.sort_values("calibration_size")
        ax.errorbar(g["calibration_size"], g["score_mean"], yerr=g["score_std"].fillna(0),
                    marker="o", capsize=3, label=pipe if curve["dataset"].nunique() == 1 else f"{ds}: {pipe}")
    ax.set_xlabel("calibration size (fraction of the target's session, labelled)")
    ax.set_ylabel("score on the rest of the session")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    files["curve_plot"] = out_dir / "calibration_curve.png"
    fig.savefig(files["curve_plot"], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return files


# --- the benchmark -----------------------------------------------------------

def run_benchmark(
    datasets: list[Any] | tuple[Any, ...] = ("Kalunga2016",),
    *,
    subjects: list[int] | None = None,
    calibration_sizes: list[float] | tuple[float, ...] = (0.2, 0.5),
    strategies: list[str] | tuple[str, ...] = ("head", "last-k"),
    baselines: list[str] | tuple[str, ...] = BASELINES,
    pipelines: dict[str, Any] | None = None,
    zero_shot: bool = True,
    model: str = "EEGNet",
    epochs: int = 100,
    adapt_epochs: int = 200,
    seed: int = 0,
    device: str = "auto",
    resample: float = 128.0,
    paradigm: Any = None,
    cache_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    n_jobs: int = 1,
    dask_scheduler: Any = None,
    plots: bool = True,
) -> BenchmarkResult:
    """Cross-subject MOABB evaluation of our pipelines and baselines at several calibration sizes.

    Parameters
    ----------
    datasets : list of str | MOABB dataset
    subjects : list of int | None
        Subjects to use (every one of the dataset by default); with several
        datasets, applied to each.
    calibration_sizes : list of float
        Fractions of each held-out subject/session given, labelled, to the
        pipelines (MOABB allows at most 0.5); ``0`` is the plain
        cross-subject evaluation.
    strategies : list of str
        Adaptation strategies of our pipelines.
    baselines : list of str
        Names from :data:`BASELINES`; each runs as MOABB runs it and with the
        calibration trials pooled in (``"<name>+cal"``).
    pipelines : dict | None
        Extra pipelines (name -> estimator) to run as well.
    zero_shot : bool
        Also run our population model without adaptation.
    model, epochs, adapt_epochs, seed, device :
        Settings of our pipelines.
    resample : float
        The paradigm's sampling rate in Hz.
    paradigm : MOABB paradigm | None
        Default: :func:`paradigm_for` each dataset.
    cache_dir : path | None
        Pretrain cache (see :mod:`eegtransfer.training.cache`).
    out_dir : path | None
        Where to write ``results.csv``, ``calibration_curve.csv``, the plots
        and MOABB's HDF5 results; ``None`` writes nothing but MOABB's files
        in a temporary folder.
    n_jobs : int
        Folds (held-out subjects) fitted in parallel by joblib.
    dask_scheduler : str | dask.distributed.Client | None
        Send the folds to this Dask cluster (joblib's dask backend).
    plots : bool

    Returns
    -------
    BenchmarkResult
    """
    import tempfile
    from contextlib import ExitStack

    import joblib
    import pandas as pd
    from moabb.evaluations import CrossSubjectEvaluation

    from ..io.moabb import check_subjects, deduplicated, get_dataset

    t0 = time.perf_counter()
    for size in calibration_sizes:
        if not 0 <= float(size) <= 0.5:
            raise EEGTransferError(f"calibration sizes must be in [0, 0.5] for labelled calibration, got {size}")
    # the protocol's dataset-level rule: a population never holds a copy of its target's run
    dsets = [deduplicated(get_dataset(d) if isinstance(d, str) else d) for d in datasets]
    if subjects is not None:
        for d in dsets:
            d.subject_list = check_subjects(d, subjects)
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="eegtransfer-benchmark-")
        work = Path(tmp.name)
    else:
        work = Path(out_dir)
        work.mkdir(parents=True, exist_ok=True)
    frames = []
    with ExitStack() as stack:
        if dask_scheduler is not None:
            from dask.distributed import Client

            client = dask_scheduler if isinstance(dask_scheduler, Client) else stack.enter_context(
                Client(dask_scheduler))
            logger.info("sending folds to the Dask cluster at %s", client.scheduler.address)
            stack.enter_context(joblib.parallel_config(backend=_dask_backend()))
            n_jobs = -1
        for d in dsets:
            par = paradigm if paradigm is not None else paradigm_for(d, resample)
            sfreq = float(getattr(par, "resample", None) or resample)
            pipes = {}
            pipes.update(our_pipelines(strategies, zero_shot=zero_shot, model=model, epochs=epochs,
                                       adapt_epochs=adapt_epochs, seed=seed, device=device,
                                       sfreq=sfreq, cache_dir=cache_dir))
            pipes.update(baseline_pipelines(baselines))
            pipes.update(pipelines or {})
            for size in calibration_sizes:
                cv_kwargs = ({"calibration_size": float(size), "calibration_labeled": True}
                             if size > 0 else {})
                logger.info("%s: %d subjects, %d pipelines, calibration size %g", type(d).__name__,
                            len(d.subject_list), len(pipes), size)
                ev = CrossSubjectEvaluation(paradigm=par, datasets=[d], overwrite=True,
                                            hdf5_path=str(work / "moabb"), suffix=f"cal{size:g}",
                                            n_jobs=n_jobs, random_state=seed, cv_kwargs=cv_kwargs)
                df = ev.process(pipes)
                df["calibration_size"] = float(size)
                frames.append(df)
    results = pd.concat(frames, ignore_index=True)
    curve = calibration_table(results)
    files: dict[str, Path] = {}
    if out_dir is not None:
        files["results"] = work / "results.csv"
        results.to_csv(files["results"], index=False)
        files["curve"] = work / "calibration_curve.csv"
        curve.to_csv(files["curve"], index=False)
        if plots:
            files.update(plot_benchmark(results, curve, work))
    if tmp is not None:
        tmp.cleanup()
    settings = {"datasets": [type(d).__name__ for d in dsets], "subjects": subjects,
                "calibration_sizes": list(calibration_sizes), "strategies": list(strategies),
                "baselines": list(baselines), "model": model, "epochs": epochs,
                "adapt_epochs": adapt_epochs, "seed": seed, "resample": resample, "n_jobs": n_jobs,
                "dask": dask_scheduler is not None}
    return BenchmarkResult(results, curve, files, time.perf_counter() - t0, settings)


