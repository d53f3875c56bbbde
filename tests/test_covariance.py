"""The patient's tangent-space classifier: covariances, the ``ts`` step and the bundle's product."""

import numpy as np
import pytest

from eegtransfer.adaptation import CCA, TS, AdaBN, auto_candidates, parse_strategy, run_steps
from eegtransfer.covariance import TangentSpaceExpert
from eegtransfer.errors import EEGTransferError

SFREQ, CLASSES = 64.0, ["13", "17", "21", "rest"]


def ssvep_power(labels, *, snr=0.6, n_chans=4, n_times=256, seed=0):
    """Noise plus, for a frequency class, a sinusoid of random phase on the first two channels:
    power at the frequency, nothing phase-locked across trials."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_times) / SFREQ
    X = rng.standard_normal((len(labels), n_chans, n_times))
    for i, c in enumerate(labels):
        if c != "rest":
            X[i, :2] += snr * np.sin(2 * np.pi * float(c) * t + rng.uniform(0, 2 * np.pi))
    return X


def accuracy(e: TangentSpaceExpert, X: np.ndarray, y: np.ndarray) -> float:
    return float((np.asarray(e.classes)[e.log_proba(X).argmax(1)] == y).mean())


def test_expert_learns_ssvep_power_and_round_trips():
    y = np.tile(CLASSES, 8)
    X = ssvep_power(y)
    e = TangentSpaceExpert(CLASSES, SFREQ).fit(X[:16], y[:16])
    assert len(e.freqs) == 3 and e.reference_.shape == (12, 12)  # 4 channels x 3 bands
    assert accuracy(e, X[16:], y[16:]) >= 0.75  # chance: 0.25
    lp = e.log_proba(X[16:])
    np.testing.assert_allclose(np.exp(lp).sum(1), 1.0)
    back = TangentSpaceExpert.from_dict(e.to_dict())
    np.testing.assert_allclose(back.log_proba(X[16:]), lp)
    assert TangentSpaceExpert.from_dict(None) is None


def test_expert_equals_pyriemanns_tangent_space_and_logistic_regression():
    # the same arithmetic as the TS+LR baseline's pipeline, with columns in the bundle's order
    from pyriemann.tangentspace import TangentSpace
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    y = np.tile(["rest", "21", "13", "17"], 6)
    X = ssvep_power(y, seed=3)
    e = TangentSpaceExpert(CLASSES, SFREQ).fit(X[:16], y[:16])
    pipe = make_pipeline(TangentSpace(metric="riemann"), LogisticRegression(class_weight="balanced", max_iter=1000))
    pipe.fit(e.covariances(X[:16]), y[:16])
    order = [list(pipe.classes_).index(c) for c in CLASSES]
    np.testing.assert_allclose(e.log_proba(X[16:]), pipe.predict_log_proba(e.covariances(X[16:]))[:, order],
                               atol=1e-6)


def test_two_classes_without_frequencies_use_broadband_covariances():
    rng = np.random.default_rng(0)
    y = np.tile(["right", "left"], 12)
    X = rng.standard_normal((24, 4, 128))
    X[y == "left", 0] *= 2.0  # motor imagery in miniature: a variance difference on one channel
    e = TangentSpaceExpert(["left", "right"], SFREQ).fit(X[:16], y[:16])
    assert e.freqs == [] and e.coef_.shape == (2, 10)  # one row per class, also for two
    assert accuracy(e, X[16:], y[16:]) >= 0.75


def test_bad_arguments_and_missing_classes_get_one_line():
    with pytest.raises(EEGTransferError, match=r"TangentSpaceExpert C= must be a number > 0, got 0"):
        TangentSpaceExpert(CLASSES, SFREQ, C=0)
    with pytest.raises(EEGTransferError, match=r"TangentSpaceExpert weight= must be a number >= 0, got -1"):
        TangentSpaceExpert(CLASSES, SFREQ, weight=-1)
    y = np.repeat(["13", "17"], 4)
    with pytest.raises(EEGTransferError, match=r"missing \['21', 'rest'\], unknown \[\]"):
        TangentSpaceExpert(CLASSES, SFREQ).fit(ssvep_power(y), y)
    with pytest.raises(EEGTransferError, match="not fitted"):
        TangentSpaceExpert(CLASSES, SFREQ).log_proba(ssvep_power(y))


def test_strategy_names_with_ts():
    steps = parse_strategy("bn+cca+ts", ts_C=0.5, ts_weight=2.0)
    assert [type(s) for s in steps] == [AdaBN, CCA, TS]
    assert (steps[-1].C, steps[-1].weight) == (0.5, 2.0)
    with pytest.raises(EEGTransferError, match="the experts cca and ts"):
        parse_strategy("ts+ts")


def test_auto_offers_the_ts_expert_with_every_ssvep_candidate(fake_population):
    assert not [c for c in auto_candidates(fake_population) if "ts" in c]  # motor imagery: as before
    cands = auto_candidates(fake_population, np.array(["9", "11"]))  # a new SSVEP set-up: a new head
    assert cands == ["head+cca", "bn+head+cca", "head+cca+ts", "bn+head+cca+ts"]


def test_ts_step_multiplies_into_the_product_saves_and_is_dropped_when_adapting_again(fake_population,
                                                                                      fake_trials, tmp_path):
    from eegtransfer.bundle import Bundle, summarize

    X, meta, _ = fake_trials
    t = (meta["subject"] == "1").to_numpy()
    Xt, yt = X[t], meta["label"].to_numpy()[t]
    patient = run_steps(fake_population, [TS()], Xt[:30], yt[:30])
    assert patient.ts is not None and fake_population.ts is None  # the population is untouched
    assert patient.ts.freqs == []  # motor imagery: broadband covariances
    net = fake_population.predict_proba(Xt[30:])
    np.testing.assert_allclose(patient.predict_proba(Xt[30:]),
                               np.exp(np.log(net) + patient.ts.log_proba(Xt[30:]))
                               / np.exp(np.log(net) + patient.ts.log_proba(Xt[30:])).sum(1, keepdims=True),
                               atol=1e-4)
    assert "expert     tangent space + logistic regression on the patient's covariances (3 classes)" \
        in summarize(patient.to_meta())
    from eegtransfer.adaptation import adapt
    from eegtransfer.report import build_report

    adapted = adapt(fake_population, Xt[:30], yt[:30], strategy="ts", guard=False, device="cpu")
    body = "".join(build_report(adapted.to_meta()).html)  # the HTML report's calibration table too
    assert "expert in the product" in body and "tangent space + logistic regression" in body
    patient.save(tmp_path / "p")
    back = Bundle.load(tmp_path / "p")
    np.testing.assert_allclose(back.predict_proba(Xt[30:]), patient.predict_proba(Xt[30:]), atol=1e-5)
    again = run_steps(back, [AdaBN()], Xt[:30], None)
    assert again.ts is None  # it belonged to the first calibration set


def test_numbers_that_are_not_frequencies_read_broadband_covariances():
    assert TangentSpaceExpert(["1", "2", "3", "4"], SFREQ).freqs == []  # motor-imagery codes
    assert TangentSpaceExpert(["13", "31"], SFREQ).freqs == []  # 31 Hz: its band crosses Nyquist (32)
    assert TangentSpaceExpert(["13", "17", "rest"], SFREQ).freqs == [13.0, 17.0]


def test_ts_step_arguments_and_new_classes_get_one_line(fake_population, fake_trials):
    with pytest.raises(EEGTransferError, match=r"TS\(weight=\) \(ts_weight=\) must be a number >= 0, got -1"):
        parse_strategy("cca+ts", ts_weight=-1)
    with pytest.raises(EEGTransferError, match=r"TS\(C=\) \(ts_C=\) must be a number > 0, got 0"):
        TS(C=0)
    X, meta, _ = fake_trials
    y = np.where(meta["label"].to_numpy()[:12] == "feet", "tongue", meta["label"].to_numpy()[:12])
    with pytest.raises(EEGTransferError, match="train a new head too, with strategy 'head\\+ts'"):
        run_steps(fake_population, [TS()], X[:12], y)


def test_adapting_a_ts_patient_again_compares_and_keeps_models_without_the_old_expert(fake_population,
                                                                                     fake_trials, tmp_path,
                                                                                     monkeypatch):
    from eegtransfer.adaptation import adapt
    from eegtransfer.bundle import Bundle
    from eegtransfer.errors import BundleError

    X, meta, _ = fake_trials
    t = (meta["subject"] == "1").to_numpy()
    Xt, yt = X[t], meta["label"].to_numpy()[t]
    patient = adapt(fake_population, Xt[:30], yt[:30], strategy="ts", guard=False, device="cpu")
    patient.save(tmp_path / "p")
    back = Bundle.load(tmp_path / "p")
    again = adapt(back, Xt[:30], yt[:30], strategy="head", device="cpu")
    plain = back.copy()
    plain.ts = None
    reference = adapt(plain, Xt[:30], yt[:30], strategy="head", device="cpu")
    # the guard scored the zero-shot model without the old expert, as the model it would keep
    assert again.ts is None and again.adaptation.guard.compared == reference.adaptation.guard.compared
    assert again.provenance["parent"] == str(tmp_path / "p")
    # format 3 only where the expert is: a format-2 reader refuses it rather than predict without it
    import json

    assert json.loads((tmp_path / "p" / "bundle.json").read_text())["format_version"] == 3
    again.save(tmp_path / "q")
    assert json.loads((tmp_path / "q" / "bundle.json").read_text())["format_version"] == 2
    monkeypatch.setattr("eegtransfer.bundle.FORMAT_VERSION", 2)
    Bundle.load(tmp_path / "q")
    with pytest.raises(BundleError, match="format version 3 is newer than this eegtransfer reads"):
        Bundle.load(tmp_path / "p")


@pytest.mark.real
def test_expert_on_a_real_patient_reads_its_later_runs(kalunga_small):
    # subject 4's first run calibrates, its later runs test: the extended signal's covariances of
    # one person carry the stimulation frequencies from one run to the next
    from scipy.stats import binomtest

    from eegtransfer.evaluation.protocol import split_target

    X, meta, recipe = kalunga_small
    t = (meta["subject"].astype(str) == "4").to_numpy()
    y = meta["label"].astype(str).to_numpy()[t]
    first, test = split_target(meta[t].reset_index(drop=True))
    e = TangentSpaceExpert(sorted(set(y.tolist())), recipe.sfreq).fit(X[t][first], y[first])
    assert e.freqs == [13.0, 17.0, 21.0]
    hits = int((np.asarray(e.classes)[e.log_proba(X[t][test]).argmax(1)] == y[test]).sum())
    assert binomtest(hits, int(test.sum()), 0.25, alternative="greater").pvalue < 0.01  # chance: 25 %
