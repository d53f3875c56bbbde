"""MOABB benchmarks of population-pretrained, subject-adapted models against classical baselines.

:func:`run_benchmark` runs a declared set of pipelines over MOABB datasets and
subjects with :class:`moabb.evaluations.CrossSubjectEvaluation`, once per
calibration size: each held-out subject's first ``calibration_size`` of every
session is routed (with labels) to the pipelines that request it, the rest is
the test. Our pipelines are :class:`~eegtransfer.estimator.SubjectAdaptiveClassifier`
with several strategies (and zero-shot); the baselines are pyRiemann pipelines
(tangent space + logistic regression, MDM), both as MOABB runs them (population
only) and given the same calibration trials as ours (:class:`CalibratedBaseline`,
pooled with the population).

Parallelism: MOABB fits the folds (one per held-out subject) with joblib,
``n_jobs`` of them at a time. With ``dask_scheduler`` (an address or a
``dask.distributed.Client``) the folds go to that Dask cluster through
joblib's ``dask`` backend. The pretrain cache (:mod:`eegtransfer.training.cache`) makes
every strategy and calibration size of a fold share one population model.

Across datasets, :func:`adapt_across_datasets` pretrains on one dataset and
adapts to a subject of another whose channels come in another order, with
extra channels, another sampling rate or other classes.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from .errors import EEGTransferError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .bundle import Bundle
    from .preprocessing import Recipe

logger = logging.getLogger("eegtransfer")

BASELINES = ("TS+LR", "MDM")


# --- pipelines ---------------------------------------------------------------

class CalibratedBaseline(ClassifierMixin, BaseEstimator):
    """Give a scikit-learn pipeline the target's labelled calibration trials.

    In a MOABB transfer evaluation, ``fit`` receives ``X_target_labeled`` and
    ``y_target_labeled`` through metadata routing (requested by default) and
    fits ``estimator`` on the population trials plus the calibration trials
    (``use="pooled"``, calibration trials repeated ``weight`` times) or on the
    calibration trials only (``use="target"``).

    Parameters
    ----------
    estimator : estimator
        Any scikit-learn classifier taking MOABB's arrays.
    use : {"pooled", "target"}
    weight : int
        Copies of each calibration trial in ``pooled`` mode.
    """

    __metadata_request__fit = {"X_target_labeled": True, "y_target_labeled": True}

    def __init__(self, estimator: Any, use: str = "pooled", weight: int = 1) -> None:
        self.estimator = estimator
        self.use = use
        self.weight = weight

    def fit(self, X: Any, y: Any, *, X_target_labeled: Any = None,
            y_target_labeled: Any = None) -> CalibratedBaseline:
        """Fit on the population plus (or only) the calibration trials."""
        if self.use not in ("pooled", "target"):
            raise EEGTransferError(f"use must be 'pooled' or 'target', got {self.use!r}")
        X, y = np.asarray(X), np.asarray(y)
        n_cal = 0 if X_target_labeled is None else len(X_target_labeled)
        if n_cal:
            Xc, yc = np.asarray(X_target_labeled), np.asarray(y_target_labeled)
            if self.use == "target":
                X, y = Xc, yc
            else:
                reps = max(int(self.weight), 1)
                X = np.concatenate([X] + [Xc] * reps)
                y = np.concatenate([y] + [yc] * reps)
        self.n_target_labeled_ = int(n_cal)
        self.estimator_ = clone(self.estimator).fit(X, y)
        self.classes_ = np.unique(np.concatenate([y, np.asarray(y_target_labeled)]) if n_cal else y)
        return self

    def _align(self, proba: np.ndarray) -> np.ndarray:
        own = list(self.estimator_.classes_)
        out = np.zeros((len(proba), len(self.classes_)))
        for j, c in enumerate(self.classes_):
            if c in own:
                out[:, j] = proba[:, own.index(c)]
        return out

    def predict_proba(self, X: Any) -> np.ndarray:
        return self._align(self.estimator_.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        return self.estimator_.predict(X)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.input_tags.two_d_array = False
        return tags


def baseline_pipelines(names: tuple[str, ...] | list[str] = BASELINES, *,
                       calibrated: bool = True, plain: bool = True) -> dict[str, Any]:
    """pyRiemann baselines by name: ``"TS+LR"`` and ``"MDM"`` on OAS covariances.

    Parameters
    ----------
    names : list of str
    calibrated : bool
        Add ``"<name>+cal"``: the pipeline fitted on the population plus the
        target's labelled calibration trials (:class:`CalibratedBaseline`).
    plain : bool
        Add ``"<name>"``: the pipeline as MOABB runs it, population only.
    """
    from pyriemann.classification import MDM
    from pyriemann.estimation import Covariances
    from pyriemann.tangentspace import TangentSpace
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    makers = {
        "TS+LR": lambda: make_pipeline(Covariances("oas"), TangentSpace(metric="riemann"),
                                       LogisticRegression(max_iter=1000)),
        "MDM": lambda: make_pipeline(Covariances("oas"), MDM(metric="riemann")),
    }
    out: dict[str, Any] = {}
    for name in names:
        if name not in makers:
            raise EEGTransferError(f"unknown baseline {name!r}; choose from {', '.join(makers)}")
        if plain:
            out[name] = makers[name]()
        if calibrated:
            out[f"{name}+cal"] = CalibratedBaseline(makers[name]())
    return out


def our_pipelines(strategies: tuple[str, ...] | list[str] = ("head", "last-k"), *,
                  zero_shot: bool = True, model: str = "EEGNet", **params: Any) -> dict[str, Any]:
    """:class:`SubjectAdaptiveClassifier` pipelines named ``"<model> <strategy>"``.

    ``zero_shot`` adds ``"<model> zero-shot"`` (strategy ``none``). ``params``
    go to every estimator (epochs, seed, sfreq, cache_dir, device, ...).
    """
    from .estimator import SubjectAdaptiveClassifier

    out: dict[str, Any] = {}
    if zero_shot:
        out[f"{model} zero-shot"] = SubjectAdaptiveClassifier(model=model, strategy="none", **params)
    for s in strategies:
        out[f"{model} {s}"] = SubjectAdaptiveClassifier(model=model, strategy=s, **params)
    return out


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

    from .io.moabb import check_subjects, deduplicated, get_dataset

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


# --- across datasets ---------------------------------------------------------

def recipe_for_target(recipe: Recipe, dataset: Any) -> Recipe:
    """``recipe`` with its window moved to the start of ``dataset``'s trial interval.

    Channels, sampling rate and filters stay (the model needs them); the
    window keeps its length, so the model's input size does not change.
    """
    from .preprocessing import Recipe

    lo, hi = (float(v) for v in dataset.interval)
    length = recipe.tmax - recipe.tmin
    if lo + length > hi + 1e-9:
        logger.warning("%s trials last %.2f s, the model's window %.2f s; it runs past the trial",
                       type(dataset).__name__, hi - lo, length)
    d = recipe.to_dict()
    d.update(tmin=lo, tmax=lo + length)
    return Recipe.from_dict(d)


@dataclass
class TransferResult:
    """A population model of one dataset adapted to a subject of another.

    Attributes
    ----------
    population, patient : Bundle
    source, target : str
        Dataset names.
    subject : int
    zero_shot_accuracy : float | None
        ``None`` when the class sets differ (the population cannot predict them).
    adapted_accuracy : float
    n_calibration, n_test : int
    channels : dict
        Channel matching report (renamed, dropped, sampling rates).
    """

    population: Bundle
    patient: Bundle
    source: str
    target: str
    subject: int
    zero_shot_accuracy: float | None
    adapted_accuracy: float
    n_calibration: int
    n_test: int
    channels: dict[str, Any]

    def summary(self) -> str:
        p, q = self.population, self.patient
        lines = [
            f"source     {self.source}: {len(p.ch_names)} ch @ {p.sfreq:g} Hz, classes {p.classes}",
            f"target     {self.target} subject {self.subject}: source rate "
            f"{self.channels.get('source_sfreq')} Hz -> {q.sfreq:g} Hz, dropped {self.channels.get('dropped')}, "
            f"renamed {self.channels.get('renamed') or {}}",
            f"adaptation {q.adaptation.strategy if q.adaptation else None}: {self.n_calibration} calibration "
            f"trials, classes {q.classes}" + (" (new head)" if q.adaptation and q.adaptation.new_head else ""),
            f"zero-shot  {'n/a (other classes)' if self.zero_shot_accuracy is None else f'{self.zero_shot_accuracy:.3f}'}",
            f"adapted    {self.adapted_accuracy:.3f} on {self.n_test} later trials",
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<TransferResult {self.source} -> {self.target} subject {self.subject}>\n{self.summary()}"

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(self.__repr__())}</pre>"


def adapt_across_datasets(
    population: Bundle,
    target: Any,
    subject: int,
    *,
    calibration_trials: int | None = None,
    calibration_minutes: float | None = None,
    strategy: str = "head",
    device: str = "cpu",
    seed: int = 0,
    **adapt_kwargs: Any,
) -> TransferResult:
    """Adapt a population bundle pretrained on one dataset to a subject of another.

    The target's recordings are fitted to the bundle's recipe
    (:func:`eegtransfer.io.load_dataset` with ``conform=True``): channels
    matched by name and reordered, extra channels dropped, resampled to the
    bundle's rate, window moved to the target's trial interval
    (:func:`recipe_for_target`); its known duplicated runs are removed. When the target's
    classes differ, :func:`~eegtransfer.adaptation.adapt` trains a new head.

    Parameters
    ----------
    population : Bundle
    target : str | MOABB dataset
    subject : int
    calibration_trials, calibration_minutes : int | float | None
        The first trials (default: half of them) or minutes of the subject's
        recordings, chronologically; the rest is the test.
    strategy : str
        A supervised strategy (the class set may be new).

    Returns
    -------
    TransferResult
    """
    from .adaptation import adapt, select_calibration
    from .io.moabb import dataset_name, get_dataset, load_dataset

    if isinstance(target, str):
        target = get_dataset(target)
    recipe = recipe_for_target(population.recipe, target)
    report: dict[str, Any] = {}
    X, meta, _ = load_dataset(target, [subject], recipe, conform=True, report=report)
    if calibration_trials is None and calibration_minutes is None:
        calibration_trials = len(X) // 2
    cal = select_calibration(meta, trials=calibration_trials, minutes=calibration_minutes,
                             trial_seconds=recipe.tmax)
    labels = meta["label"].astype(str).to_numpy()
    patient = adapt(population, X[cal], labels[cal], strategy=strategy, device=device, seed=seed,
                    calibration={"dataset": dataset_name(target), "subject": int(subject)},
                    **adapt_kwargs)
    patient.recipe = recipe  # same channels, rate and length; the target's window
    test = ~cal
    acc = float((np.asarray(patient.predict(X[test])).astype(str) == labels[test]).mean())
    same = set(labels.tolist()) <= set(population.classes)
    zs = (float((np.asarray(population.predict(X[test])).astype(str) == labels[test]).mean())
          if same else None)
    return TransferResult(population, patient, population.provenance.get("dataset", "population"),
                          dataset_name(target), int(subject), zs, acc, int(cal.sum()), int(test.sum()),
                          report)
