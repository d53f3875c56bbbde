"""SubjectAdaptiveClassifier: the scikit-learn contract and MOABB's calibration routing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import config_context
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.metadata_routing import get_routing_for_object

from eegtransfer import SubjectAdaptiveClassifier

ROUTED = {"subjects", "X_target_labeled", "y_target_labeled", "X_target_unlabeled"}


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One torch thread per training: the CPUs are shared (engine.configure_threads reads it)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _fake(n_subjects=3, **kw):
    from moabb.datasets.fake import FakeDataset

    return FakeDataset(event_list=["left_hand", "right_hand", "feet"], n_subjects=n_subjects, n_sessions=1,
                       n_runs=1, duration=60, sfreq=128, paradigm="imagery", seed=7,
                       channels=("C3", "Cz", "C4", "Pz"), **kw)


def _paradigm():
    from moabb.paradigms import MotorImagery

    return MotorImagery(resample=64, fmin=8, fmax=30, tmin=0, tmax=1)


class Spy(SubjectAdaptiveClassifier):
    """Records what each fitted clone received (MOABB keeps no fitted estimator)."""

    fits: list[dict] = []

    def fit(self, X, y, **kw):
        super().fit(X, y, **kw)
        Spy.fits.append({"strategy": self.strategy, "n_train": len(X),
                         "n_target_labeled": self.n_target_labeled_,
                         "n_target_unlabeled": self.n_target_unlabeled_,
                         "subjects": None if kw.get("subjects") is None else sorted(set(kw["subjects"])),
                         "adaptation": self.adaptation_, "cache_hit": self.pretrain_cache_hit_})
        return self


def test_params_clone_and_routing_requests():
    est = SubjectAdaptiveClassifier(strategy="last-k", epochs=3, seed=5, cache_dir=False, k=2)
    params = est.get_params()
    assert params["strategy"] == "last-k" and params["epochs"] == 3 and params["k"] == 2
    c = clone(est)
    assert c is not est and c.get_params() == params
    c.set_params(strategy="bn+head", epochs=7)
    assert c.get_params()["strategy"] == "bn+head" and est.strategy == "last-k"
    assert clone(c).get_params() == c.get_params()
    assert not any(k.endswith("_") for k in vars(est))  # the constructor only stores params
    with pytest.raises(NotFittedError):
        est.predict(np.zeros((2, 4, 64)))
    # calibration routing is requested by default, and survives clone / can be turned off
    with config_context(enable_metadata_routing=True):
        assert get_routing_for_object(clone(est)).consumes("fit", ROUTED) == ROUTED
        off = clone(SubjectAdaptiveClassifier().set_fit_request(X_target_unlabeled=False))
        assert get_routing_for_object(off).consumes("fit", ROUTED) == ROUTED - {"X_target_unlabeled"}


def test_fit_predict_on_arrays(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4, 64)) * 1e-5  # volts, as MOABB gives them
    y = np.array([0, 1] * 20)
    est = SubjectAdaptiveClassifier(epochs=2, adapt_epochs=2, sfreq=64, device="cpu",
                                    channels=["C3", "Cz", "C4", "Pz"], cache_dir=tmp_path)
    assert est.fit(X, y) is est
    assert est.bundle_ is est.population_ and est.adaptation_ is None  # no target: plain training
    assert est.recipe_.channels == ["C3", "Cz", "C4", "Pz"] and est.recipe_.n_times == 64
    proba = est.predict_proba(X[:5])
    assert proba.shape == (5, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert set(est.predict(X)) <= {0, 1}
    # per-trial standardisation: the input's scale does not matter
    np.testing.assert_allclose(est.predict_proba(X[:5] * 1e6), proba, atol=1e-5)


@pytest.fixture(scope="module")
def cross_subject_runs(tmp_path_factory):
    from moabb.evaluations import CrossSubjectEvaluation

    warnings.filterwarnings("ignore")
    cache = tmp_path_factory.mktemp("cache")
    ds, par = _fake(), _paradigm()
    Spy.fits.clear()
    common = dict(epochs=2, adapt_epochs=30, sfreq=64, device="cpu", cache_dir=cache, seed=0)
    ev = CrossSubjectEvaluation(paradigm=par, datasets=[ds], overwrite=True,
                                hdf5_path=str(tmp_path_factory.mktemp("h5")),
                                cv_kwargs={"calibration_size": 0.5, "calibration_labeled": True})
    res = ev.process({"head": Spy(strategy="head", guard=False, **common),
                      "zero-shot": Spy(strategy="none", **common)})
    X, _, meta = par.get_data(ds, [1])
    return res, list(Spy.fits), len(X)


def test_cross_subject_calibration_is_routed(cross_subject_runs):
    res, fits, n_per_subject = cross_subject_runs
    head = [f for f in fits if f["strategy"] == "head"]
    zero = [f for f in fits if f["strategy"] == "none"]
    assert len(head) == 3 and len(zero) == 3  # one fold per held-out subject
    for f in head:
        # MOABB: the first floor(0.5 * n) trials of the held-out session, labelled
        assert f["n_target_labeled"] == n_per_subject // 2 and f["n_target_unlabeled"] == 0
        assert f["n_train"] == 2 * n_per_subject and len(f["subjects"]) == 2
        assert f["adaptation"]["strategy"] == "head"
        assert f["adaptation"]["n_calibration_trials"] == n_per_subject // 2
        assert f["adaptation"]["trainable"]  # the head was trained
    # the zero-shot clone got the slice too but did not use it, and reused the cached population
    assert all(f["adaptation"] == {"strategy": "none", "note": "zero-shot"} for f in zero)
    assert all(f["cache_hit"] for f in zero)
    # test sets are the other half, and adapting changed the scores
    assert set(res["samples_test"]) == {n_per_subject - n_per_subject // 2}
    a = res[res.pipeline == "head"].sort_values("subject")["score"].to_numpy()
    b = res[res.pipeline == "zero-shot"].sort_values("subject")["score"].to_numpy()
    assert not np.allclose(a, b), (a, b)


def test_within_session_scratch_baseline(tmp_path):
    from moabb.evaluations import WithinSessionEvaluation

    warnings.filterwarnings("ignore")
    ds = _fake(n_subjects=1)
    ev = WithinSessionEvaluation(paradigm=_paradigm(), datasets=[ds], overwrite=True, hdf5_path=str(tmp_path),
                                 n_splits=2)
    Spy.fits.clear()
    res = ev.process({"scratch": Spy(strategy="scratch", epochs=2, sfreq=64, device="cpu", cache_dir=False)})
    assert len(res) == 1 and 0 <= res["score"].iloc[0] <= 1
    assert len(Spy.fits) == 2 and all(f["n_target_labeled"] == 0 for f in Spy.fits)
    assert all(f["adaptation"]["strategy"] == "scratch" for f in Spy.fits)


def test_short_calibration_falls_back_and_says_why(tmp_path):
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((30, 4, 64)), np.array([0, 1, 2] * 10)
    est = SubjectAdaptiveClassifier(strategy="bn+head", epochs=1, sfreq=64, device="cpu", cache_dir=tmp_path)
    est.fit(X, y, X_target_labeled=X[:4], y_target_labeled=np.array([0, 0, 0, 1]))
    assert est.n_target_labeled_ == 4
    assert "fewer than 2" in est.adaptation_["fallback"] and "{1: 1, 2: 0}" not in est.adaptation_["fallback"]
    assert est.adaptation_["strategy"] == "bn"  # the label-free part still ran
    assert est.pretrain_cache_hit_ is False


def test_new_classes_in_calibration_get_a_new_head(tmp_path):
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((30, 4, 64)), np.array([0, 1, 2] * 10)
    yt = np.array([7, 8] * 6)
    est = SubjectAdaptiveClassifier(epochs=1, adapt_epochs=3, sfreq=64, device="cpu", cache_dir=tmp_path)
    est.fit(X, y, X_target_labeled=X[:12], y_target_labeled=yt)
    assert est.bundle_.classes == ["7", "8"] and est.adaptation_["new_head"]
    assert set(est.predict(X)) <= {7, 8}
    assert est.predict_proba(X[:3])[:, :3].sum() == 0  # population classes are not predicted


# scikit-learn's own checks that apply to an estimator of 3-D trials. The others generate 2-D
# tables (n_samples, n_features), which this estimator refuses by design (its tags say so):
# fitting, cloning and refitting on trials is covered by the tests above.
API_CHECKS = ["check_no_attributes_set_in_init", "check_parameters_default_constructible",
              "check_get_params_invariance", "check_set_params", "check_estimator_cloneable",
              "check_estimator_repr", "check_do_not_raise_errors_in_init_or_set_params",
              "check_estimators_unfitted", "check_mixin_order", "check_valid_tag_types",
              "check_estimator_tags_renamed", "check_param_validation"]


@pytest.mark.parametrize("check", API_CHECKS)
def test_scikit_learn_estimator_checks(check):
    from sklearn.utils import estimator_checks

    getattr(estimator_checks, check)("SubjectAdaptiveClassifier", SubjectAdaptiveClassifier())


def test_parameters_are_validated_before_any_training():
    from sklearn.utils._param_validation import InvalidParameterError

    X = np.zeros((4, 2, 64), dtype=np.float32)
    with pytest.raises(InvalidParameterError, match="'epochs' parameter"):
        SubjectAdaptiveClassifier(epochs=0).fit(X, ["a", "b", "a", "b"])
    with pytest.raises(InvalidParameterError, match="'val_fraction' parameter"):
        SubjectAdaptiveClassifier(val_fraction=1.5).fit(X, ["a", "b", "a", "b"])
