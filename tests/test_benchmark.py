"""run_benchmark (MOABB CrossSubjectEvaluation + calibration sizes), Dask, CLI, and cross-dataset adaptation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from eegtransfer.evaluation.cross_dataset import adapt_across_datasets
from eegtransfer.evaluation.moabb import BenchmarkResult, run_benchmark


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One torch thread per training: the CPUs are shared (engine.configure_threads reads it)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _fake(**kw):
    from moabb.datasets.fake import FakeDataset

    base = dict(event_list=["left_hand", "right_hand", "feet"], n_subjects=3, n_sessions=1, n_runs=1,
                duration=60, sfreq=128, paradigm="imagery", seed=7, channels=("C3", "Cz", "C4", "Pz"))
    base.update(kw)
    return FakeDataset(**base)


def _paradigm():
    from moabb.paradigms import MotorImagery

    return MotorImagery(resample=64, fmin=8, fmax=30, tmin=0, tmax=1)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("pretrain-cache")


SMALL = dict(strategies=["head"], baselines=["MDM"], epochs=1, adapt_epochs=3, device="cpu")


def test_run_benchmark_writes_moabb_results_and_curve(tmp_path, cache_dir):
    warnings.filterwarnings("ignore")
    out = tmp_path / "out"
    res = run_benchmark([_fake()], paradigm=_paradigm(), calibration_sizes=[0.25, 0.5], cache_dir=cache_dir,
                        out_dir=out, **SMALL)
    assert isinstance(res, BenchmarkResult)
    r = res.results
    assert {"score", "time", "samples", "subject", "session", "channels", "dataset", "pipeline",
            "calibration_size"} <= set(r.columns)
    pipelines = {"EEGNet zero-shot", "EEGNet head", "MDM", "MDM+cal"}
    assert set(r["pipeline"]) == pipelines
    assert len(r) == 3 * len(pipelines) * 2  # subjects x pipelines x calibration sizes
    # the test set shrinks as the calibration slice grows
    n = r.groupby("calibration_size")["samples_test"].mean()
    assert n[0.25] > n[0.5]
    assert len(res.curve) == len(pipelines) * 2 and res.curve["n"].eq(3).all()
    for key in ("results", "curve", "score_plot", "curve_plot"):
        assert res.files[key].is_file() and res.files[key].stat().st_size > 0
    assert "MDM+cal" in repr(res) and "<table" in res._repr_html_()
    assert "| calibration 0.25 | calibration 0.5 |" in res.to_markdown()


def test_dask_local_cluster(cache_dir):
    from dask.distributed import Client, LocalCluster, get_task_stream

    warnings.filterwarnings("ignore")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client, get_task_stream(client) as ts:
        res = run_benchmark([_fake()], paradigm=_paradigm(), calibration_sizes=[0.5], cache_dir=cache_dir,
                            dask_scheduler=client, **SMALL)
    assert res.settings["dask"] and len(res.results) == 3 * 4
    assert len(ts.data) >= 3  # the folds ran as Dask tasks
    assert res.results["score"].between(0, 1).all()


def test_cli_benchmark_help_and_errors(capsys):
    from eegtransfer.cli import main

    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    text = capsys.readouterr().out
    assert "--dask-scheduler" in text and "--calibration-sizes" in text and "--n-jobs" in text
    assert main(["benchmark", "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err


def test_cross_dataset_new_channels_rate_and_classes(tmp_path):
    """Pretrain on one FakeDataset, adapt on another: reordered + extra channel, 256 Hz, 2 new classes."""
    from eegtransfer.io import load_dataset
    from eegtransfer.preprocessing import Recipe
    from eegtransfer.training.pretraining import pretrain

    warnings.filterwarnings("ignore")
    source = _fake(event_list=["a", "b", "c"], n_subjects=2)
    recipe = Recipe(channels=["C3", "Cz", "C4", "Pz"], sfreq=64.0, tmin=0.0, tmax=1.0, l_freq=2.0,
                    h_freq=30.0, notch=[])
    X, meta, _ = load_dataset(source, [1, 2], recipe)
    pop = pretrain(X, meta["label"].to_numpy(), meta, recipe, epochs=1, device="cpu",
                   provenance={"dataset": "FakeDataset(a/b/c)"})
    target = _fake(event_list=["x", "y"], n_subjects=1, sfreq=256, channels=("Pz", "C4", "FCz", "C3", "Cz"),
                   seed=3)
    res = adapt_across_datasets(pop, target, 1, calibration_trials=20, strategy="head", epochs=3)
    assert pop.classes == ["a", "b", "c"] and res.patient.classes == ["x", "y"]
    assert res.patient.adaptation.new_head
    assert res.patient.ch_names == ["C3", "Cz", "C4", "Pz"]  # the model's order, not the file's
    assert set(res.channels["dropped"]) == {"FCz", "stim"} and res.channels["source_sfreq"] == 256.0
    assert res.zero_shot_accuracy is None and 0 <= res.adapted_accuracy <= 1
    assert res.n_calibration == 20 and res.n_test > 0
    assert "new head" in repr(res) and "<pre>" in res._repr_html_()
    res.patient.save(tmp_path / "patient")  # a complete, loadable bundle


@pytest.mark.real
def test_cross_dataset_kalunga_as_target(mne_data):
    """A population from a 512 Hz FakeDataset with Kalunga's channels shuffled plus one extra."""
    from eegtransfer.io import load_dataset
    from eegtransfer.preprocessing import Recipe
    from eegtransfer.training.pretraining import pretrain

    warnings.filterwarnings("ignore")
    kal = ["Oz", "O1", "O2", "PO3", "POz", "PO7", "PO8", "PO4"]
    source = _fake(event_list=["a", "b", "c"], n_subjects=2, sfreq=512, paradigm="ssvep",
                   channels=tuple(kal[::-1] + ["Cz"]))
    recipe = Recipe(channels=kal, sfreq=128.0, tmin=0.0, tmax=2.0, l_freq=4.0, h_freq=45.0, notch=[])
    X, meta, _ = load_dataset(source, [1, 2], recipe)
    pop = pretrain(X, meta["label"].to_numpy(), meta, recipe, epochs=1, device="cpu")
    res = adapt_across_datasets(pop, "Kalunga2016", 1, calibration_trials=32, strategy="head", epochs=5)
    assert res.patient.classes == ["13", "17", "21", "rest"] and res.patient.adaptation.new_head
    assert res.channels["source_sfreq"] == 256.0 and res.patient.recipe.tmin == 2.0
    assert res.n_calibration == 32 and res.n_test == 32
    assert np.isfinite(res.adapted_accuracy)


@pytest.mark.real
def test_new_setup_benchmark_on_one_target(mne_data):
    """benchmarks/new_setup.py's core on one target: a new class, two interpolated channels, every method."""
    import importlib.util
    from pathlib import Path

    import pandas as pd

    warnings.filterwarnings("ignore")
    spec = importlib.util.spec_from_file_location(
        "new_setup", Path(__file__).resolve().parents[1] / "benchmarks" / "new_setup.py")
    ns = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ns)
    d = ns.load([1, 2, 4])
    rows, info = ns.run_target(1, d, epochs=1, adapt_epochs=2)
    df = pd.DataFrame(rows)
    assert list(df["method"]) == ["CCA 128 Hz", "FBCCA 128 Hz", "CCA 64 Hz", "CCA 128 Hz, 6 recorded channels", "EEGNet head",
                                  "EEGNet head+cca", "EEGNet auto", "EEGNet align+head", "EEGNet align+head+cca"]
    assert (df["error"] == "").all() and df["accuracy"].between(0, 1).all()
    assert info["plain"]["classes"] == ["13", "21", "rest"]  # the population never saw 17 Hz
    assert info["n_calibration"] == 8 and info["n_test"] == 32  # 2 per class from run 1; run 2 tests
    assert df.loc[df["method"] == "EEGNet head", "note"].str.contains("new head").all()
    md = ns.markdown(df, [info], d, "python benchmarks/new_setup.py", 1.0)
    assert "Zero-shot is not possible" in md and "vs CCA 128 Hz" in md and "(1)" in md
