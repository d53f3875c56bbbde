"""The one evaluation protocol, its statistics and its baselines."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from eegtransfer.covariance import covariances, filter_bank
from eegtransfer.errors import EEGTransferError
from eegtransfer.evaluation import baselines as bl
from eegtransfer.evaluation.protocol import calibration_window, split_target
from eegtransfer.evaluation.stats import benchmark_markdown, paired_comparison


def _run(labels: str, subject: str = "1", run: str = "0", step: float = 7.0) -> pd.DataFrame:
    """One recording: a trial every ``step`` s; 'r' rest, 'a'/'b'/'c' the stimulation classes."""
    names = {"r": "rest", "a": "13", "b": "17", "c": "21"}
    return pd.DataFrame({"subject": subject, "session": "0", "run": run,
                         "onset": np.arange(len(labels)) * step, "label": [names[c] for c in labels]})


def test_calibration_window_grows_until_every_class_has_two_trials():
    meta = _run("rrrrrrrrabcabcabcabc")  # like Kalunga: a minute of rest first
    w = calibration_window(meta, minutes=1, trial_seconds=4)
    # 1 min holds 8 rest trials (the 9th ends at 60 s); every class twice needs 14 trials
    assert w.grown and w.n_trials == 14 and w.mask[:14].all() and not w.mask[14:].any()
    assert w.minutes_used == pytest.approx((13 * 7 + 4) / 60, abs=1e-3)
    assert "grown from 1 min" in w.describe()
    big = calibration_window(meta, minutes=2, trial_seconds=4)
    assert not big.grown and big.n_trials == 17  # ended within 120 s: onsets up to 112 s
    assert calibration_window(meta, trials=16, trial_seconds=4).n_trials == 16
    assert calibration_window(meta, fraction=1.0, trial_seconds=4).n_trials == 20
    with pytest.raises(EEGTransferError, match="lack classes"):
        calibration_window(meta, minutes=1, trial_seconds=4, grow=False)


def test_calibration_window_is_chronological_and_checks_its_parameters():
    meta = _run("abcabcrr").iloc[::-1].reset_index(drop=True)  # rows out of time order
    w = calibration_window(meta, trials=6, trial_seconds=4, classes=["13", "17", "21"])
    assert sorted(meta.loc[w.mask, "onset"]) == [0, 7, 14, 21, 28, 35]
    for kw, words in [({"minutes": 0}, "minutes= must be > 0"), ({"trials": -1}, "trials= must be > 0"),
                      ({"fraction": 1.5}, "fraction= must be in"), ({}, "exactly one of")]:
        with pytest.raises(EEGTransferError, match=words):
            calibration_window(meta, trial_seconds=4, **kw)
    with pytest.raises(EEGTransferError, match="class 'rest' has 1 trial"):
        calibration_window(_run("abcabcr"), trials=2, trial_seconds=4)


def test_every_method_gets_the_same_window_and_test_set():
    meta = pd.concat([_run("rrrrabcabcabc"), _run("abcrabcr", run="1")], ignore_index=True)
    first, test = split_target(meta)
    assert first.sum() == 13 and test.sum() == 8 and not (first & test).any()
    a = calibration_window(meta[first], minutes=0.5, trial_seconds=4)
    b = calibration_window(meta[first], minutes=0.5, trial_seconds=4)
    assert np.array_equal(a.mask, b.mask)  # a pure function of the metadata: nothing else decides
    with pytest.raises(EEGTransferError, match="has one run"):
        split_target(meta[first])


def test_paired_comparison_is_a_signed_rank_test_with_an_effect_size():
    a = pd.Series([0.8, 0.7, 0.9, 0.6, 0.75, 0.85], index=list("abcdef"))
    b = a - np.array([0.10, 0.05, 0.20, 0.15, 0.12, 0.08])
    r = paired_comparison(a, b)
    assert r["n"] == 6 and r["wins"] == 6 and r["effect"] == 1.0
    assert r["p"] == pytest.approx(0.03125)  # exact: 2 / 2**6
    same = paired_comparison(a, a)
    assert same["ties"] == 6 and np.isnan(same["p"])
    assert paired_comparison(a, b.drop("a"))["n"] == 5  # paired by subject


def test_benchmark_tables_say_n_and_name_the_best_baseline():
    rows = []
    rng = np.random.default_rng(0)
    for s in range(1, 9):
        for method, fam, acc in [("zero", "reference", 0.5), ("ours", "ours", 0.8), ("B1", "baseline", 0.6),
                                 ("B2", "baseline", 0.4)]:
            rows.append({"subject": s, "window": "2", "method": method, "family": fam,
                         "accuracy": acc + rng.normal(0, 0.01)})
        rows.append({"subject": s, "window": "2", "method": "risky", "family": "ours",
                     "accuracy": 0.3 if s == 3 else 0.55})
    text = benchmark_markdown(pd.DataFrame(rows), reference="zero", primary="risky")
    assert "best baseline = B1" in text and "(8)" in text
    assert "| ours | ours | **" in text  # beats both, p = 2/2**8 < 0.05
    assert "| ours | none |" in text  # nobody harmed by the best of ours
    zero3 = next(r["accuracy"] for r in rows if r["subject"] == 3 and r["method"] == "zero")
    assert f"| risky | 3: {100 * (0.3 - zero3):+.1f} |" in text  # every method of ours lists whom it harms
    assert re.search(rf"\| 2 min \| risky \(default\) \| 1: \+\d, 2: \+\d, 3: {100 * (0.3 - zero3):+.0f}, 4: \+\d",
                     text)
    assert "| 2 min | ours (best of ours by mean) |" in text


def test_cca_detects_stimulation_frequencies_and_fits_a_rest_threshold():
    sfreq, n_times = 128.0, 512
    t = np.arange(n_times) / sfreq
    rng = np.random.default_rng(0)
    labels = np.array(["13", "17", "21", "rest"] * 6)
    X = rng.standard_normal((len(labels), 4, n_times))
    for i, lab in enumerate(labels):
        if lab != "rest":
            X[i, :2] += 0.6 * np.sin(2 * np.pi * float(lab) * t + rng.uniform(0, 6))
    assert bl.ssvep_frequencies(["13", "17Hz", "rest", "7.5 hz"]) == {"13": 13.0, "17Hz": 17.0, "7.5 hz": 7.5}
    for fb in (False, True):
        cca = bl.CCADetector(sfreq=sfreq, max_freq=45, filter_bank=fb).fit(X[:12], labels[:12])
        assert np.isfinite(cca.threshold_)
        assert (cca.predict(X[12:]) == labels[12:]).mean() >= 0.9
    assert cca.bands_ == [(11.0, 45.0), (24.0, 45.0), (37.0, 45.0)]  # Chen et al.'s n * 13 Hz - 2
    assert cca.scores(X[:3]).shape == (3, 3)
    with pytest.raises(EEGTransferError, match="no stimulation frequency"):
        bl.CCADetector().fit(X[:4], np.array(["left", "right", "left", "right"]))


@pytest.mark.real
def test_baselines_on_one_real_subject_are_above_chance(mne_data):
    from eegtransfer.io import load_dataset

    X, meta, recipe = load_dataset("Kalunga2016", [1, 2, 4])
    y = meta["label"].astype(str).to_numpy()
    t = (meta["subject"] == "1").to_numpy()
    first, test = split_target(meta[t].reset_index(drop=True))
    C = covariances(filter_bank(X, recipe.sfreq, [13.0, 17.0, 21.0]))
    Ct, yt = C[t], y[t]
    cca = bl.CCADetector(sfreq=recipe.sfreq, max_freq=recipe.h_freq).fit(X[t][first], yt[first])
    # 32 test trials, 4 classes: 14 correct has p < 0.03 under chance. The CCA also checks the
    # labels: MOABB once swapped 17 and 21 Hz in Kalunga2016.
    assert (cca.predict(X[t][test]) == yt[test]).mean() >= 14 / 32
    rct = bl.transfer_predict(C[~t], y[~t], meta["subject"][~t].to_numpy(), Ct[first], yt[first], Ct[test],
                              rotate=False)
    assert set(rct) == {"MDM", "TS+LR"} and all(len(p) == test.sum() for p in rct.values())
    # transductive: each later run re-centred on its own mean (to the identity), then also balanced
    from pyriemann.utils.mean import mean_riemann

    runs = meta[t]["run"].astype(str).to_numpy()[test]
    np.testing.assert_allclose(mean_riemann(bl._recentred(Ct[test], runs)), np.eye(C.shape[1]), atol=1e-6)
    for rotate, inductive in ((False, rct), (True, None)):
        own = bl.transfer_predict(C[~t], y[~t], meta["subject"][~t].to_numpy(), Ct[first], yt[first], Ct[test],
                                  rotate=rotate, test_runs=runs)
        assert set(own) == {f"{c}{s}" for c in ("MDM", "TS+LR")
                            for s in ("", ", recording re-centred", ", recording re-centred and balanced")}
        assert all(len(p) == test.sum() and set(p) <= set(yt) for p in own.values())
        assert inductive is None or all((own[k] == inductive[k]).all() for k in inductive)  # unchanged
        counts = pd.Series(own["TS+LR, recording re-centred and balanced"]).value_counts()
        assert counts.max() - counts.min() <= 4  # 8 trials of each class: balanced up to a few
    with pytest.raises(EEGTransferError, match=r"test_runs must give one recording per test trial \(32\), got 3"):
        bl.transfer_predict(C[~t], y[~t], meta["subject"][~t].to_numpy(), Ct[first], yt[first], Ct[test],
                            rotate=False, test_runs=runs[:3])
    tslr = bl.within_subject_pipelines()["TS+LR"].fit(Ct[first], yt[first])
    assert (tslr.predict(Ct[test]) == yt[test]).mean() >= 14 / 32


def test_the_loso_protocol_runs_on_any_moabb_dataset_and_writes_its_tables(fake_dataset, tmp_path):
    # generality: a motor-imagery FakeDataset (no SSVEP classes: broadband covariances, no CCA)
    from eegtransfer.evaluation import loso

    d = loso.load(fake_dataset, 64.0)
    assert not d["ssvep"] and d["Xn"].shape[1] == 4 and d["net"].sfreq == 64
    rows, info = loso.run_target(1, d, epochs=1, adapt_epochs=2, rpa=False, windows=("0.5", "run"), seeds=2)
    df = pd.DataFrame(rows)
    methods = set(df["method"])
    assert {"EEGNet zero-shot", "EEGNet head", "EEGNet align+head", "TS+LR", "MDM", "RCT MDM",
            "EEGNet scratch", "EEGNet zero-shot, 2 seeds", "EEGNet auto, 2 seeds"} <= methods and "CCA" not in methods
    trans = df[df["family"].isin(["transductive", "transductive baseline"])]
    assert set(trans["method"]) == {
        "EEGNet zero-shot, balanced recording", "EEGNet auto, balanced recording", "TS+LR, balanced recording",
        "MDM, balanced recording", "RCT MDM, recording re-centred", "RCT TS+LR, recording re-centred",
        "RCT MDM, recording re-centred and balanced", "RCT TS+LR, recording re-centred and balanced"}
    assert (trans["family"] == "transductive").sum() == 2 * df["window"].nunique()  # ours: the two networks
    assert len(info["seed_val_acc"]) == 2
    seed1 = df[df["family"] == "seed"]  # the second seed's population alone, beside the ensemble
    assert set(seed1["method"]) == {"EEGNet zero-shot, seed 1", "EEGNet auto, seed 1"}
    assert seed1["chosen"].notna().sum() == 2  # auto's choice, one per window
    with pytest.raises(EEGTransferError, match=r"seeds= must be a whole number >= 1, got 0"):
        loso.run_target(1, d, seeds=0)
    for _, cell in df.groupby("window"):  # one window and one test set per cell, for every method
        assert cell["n_calibration"].nunique() == 1 and cell["n_test"].nunique() == 1
        assert len(cell) == len(methods)
    run = {"command": "test", "args": {"seed": 0, "device": "cpu"}, "pretraining": [info],
           "wall_seconds": 1.0, "recipe_network": d["net"].to_dict(), "recipe_baselines": d["base"].to_dict(),
           "dataset": d["name"]}
    md = loso.write_results(df, [run], tmp_path / "out", title="fake").read_text()
    assert "(1)" in md and "best baseline =" in md
    main, seeds = md.split("## Each pretraining seed alone")
    seeds, transductive = seeds.split("## Transductive protocol")
    assert "seed 1" not in main and "balanced recording" not in main and "re-centred" not in main
    assert "| EEGNet auto, balanced recording | ours |" in transductive
    assert "| RCT MDM, recording re-centred | baseline |" in transductive
    assert [line.split(" | ")[0] for line in seeds.splitlines() if line.startswith("| ")][1:] == [
        "| 0", "| 1", "| mean ± std over 2 seeds"]
    moabb = pd.read_csv(tmp_path / "out" / "loso_moabb.csv")
    assert not moabb["pipeline"].str.contains("seed 1").any()
    assert moabb["pipeline"].str.contains("balanced recording").any()
    assert {"score", "time", "samples", "subject", "session", "dataset", "pipeline"} <= set(moabb.columns)


@pytest.mark.real
def test_a_moabb_run_keeps_the_duplicated_recording_out_of_the_population(mne_data, tmp_path):
    from sklearn.base import BaseEstimator, ClassifierMixin

    from eegtransfer.evaluation.moabb import run_benchmark

    seen = []

    class Spy(ClassifierMixin, BaseEstimator):
        def fit(self, X, y):
            seen.append(len(X))
            self.classes_ = np.unique(y)
            return self

        def predict(self, X):
            return np.full(len(X), self.classes_[0])

    run_benchmark(["Kalunga2016"], subjects=[3, 7], strategies=[], baselines=[], zero_shot=False,
                  calibration_sizes=[0], pipelines={"spy": Spy()}, out_dir=tmp_path, plots=False)
    # target 3's population is subject 7 without the copy of subject 3's run: 2 runs, 64 trials
    # (96 with the copy); target 7's population is subject 3: 64 trials
    assert sorted(seen) == [64, 64]
