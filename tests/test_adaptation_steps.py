"""Every adaptation strategy: what it changes, label-free use, the guard, curves, alignment."""

import numpy as np
import pytest
from conftest import target_split

from eegtransfer.adaptation import Step, adapt, chronological_folds, chronological_split
from eegtransfer.adaptation.alignment import (
    align_per_group,
    alignment_matrix,
    apply_alignment,
    mean_covariance,
)
from eegtransfer.bundle import Bundle
from eegtransfer.errors import EEGTransferError
from eegtransfer.evaluation.curve import block_bootstrap_upper, calibration_curve, plot_curve, stop_rule
from eegtransfer.models import batchnorm_modules, final_parameter_names


def _target(fake_trials):
    X, meta, _ = fake_trials
    cal, test = target_split(meta, "1")
    return X[cal], meta["label"][cal].to_numpy(), X[test], meta["label"][test].to_numpy()


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in after if not np.array_equal(before[k].cpu().numpy(), after[k].cpu().numpy())}


def _bn_buffers(model) -> set[str]:
    return {f"{m}.{b}" for m, _ in batchnorm_modules(model) for b in ("running_mean", "running_var",
                                                                     "num_batches_tracked")}


@pytest.mark.parametrize("strategy", ["head", "last-k", "full", "bn", "align"])
def test_each_strategy_changes_only_what_it_claims(fake_population, fake_trials, strategy):
    Xc, yc, _, _ = _target(fake_trials)
    pop = fake_population
    before = {k: v.clone() for k, v in pop.model.state_dict().items()}
    patient = adapt(pop, Xc, yc, strategy=strategy, epochs=3, device="cpu", guard=False)
    changed = _changed(before, patient.model.state_dict())
    assert not _changed(before, pop.model.state_dict())  # the population bundle is untouched
    params = {n for n, _ in pop.model.named_parameters()}
    if strategy == "head":
        assert changed and all(k.startswith("final_layer.") for k in changed)
    elif strategy == "last-k":
        last = final_parameter_names(pop.model, pop.model_name, k=1)
        blocks = {k.rsplit(".", 1)[0] for k in last}
        allowed = set(last) | {k for k in _bn_buffers(pop.model) if k.rsplit(".", 1)[0] in blocks}
        assert changed <= allowed and changed & set(last)
        assert any(not k.startswith("final_layer") for k in changed & set(last))
    elif strategy == "full":
        assert any(not k.startswith("final_layer") for k in changed & params)
    elif strategy == "bn":
        assert changed and changed <= _bn_buffers(pop.model)  # running stats only, no weight
        assert not changed & params
        assert patient.align is None
    elif strategy == "align":
        assert not changed
        assert patient.align is not None and patient.align.shape == (4, 4)
        np.testing.assert_allclose(patient.align, alignment_matrix(Xc), rtol=1e-5, atol=1e-6)
    assert patient.adaptation.strategy == strategy


@pytest.mark.parametrize("strategy", ["bn", "align", "align+bn"])
def test_label_free_strategies_run_without_labels(fake_population, fake_trials, strategy):
    Xc, _, Xt, _ = _target(fake_trials)
    patient = adapt(fake_population, Xc, None, strategy=strategy, device="cpu")
    a = patient.adaptation
    assert a.guard is None and a.guard_skipped.startswith("no labels") and "unavailable" in a.note
    assert ("bn" in strategy) == bool(a.details.get("bn", {}).get("bn_layers"))
    assert ("align" in strategy) == (patient.align is not None)
    proba = patient.predict_proba(Xt)
    assert proba.shape == (len(Xt), 3) and np.allclose(proba.sum(1), 1, atol=1e-5)


def _inconsistent(labels):
    """Labels whose map changes between the guard's two folds: what one fold teaches is wrong on the other."""
    classes = sorted(set(labels))
    folds = chronological_folds(labels, 2)
    return np.array([classes[(classes.index(c) + (1 if f == 0 else -1)) % len(classes)]
                     for c, f in zip(labels, folds)])


@pytest.mark.parametrize("strategy", ["head", "bn+head", "align+head", "last-k"])
def test_guard_compares_on_unseen_trials_and_refuses_what_does_not_transfer(fake_population, fake_trials,
                                                                            strategy):
    Xc, yc, _, _ = _target(fake_trials)
    for labels in (yc, _inconsistent(yc)):
        patient = adapt(fake_population, Xc, labels, strategy=strategy, epochs=5, device="cpu")
        g = patient.adaptation.guard
        assert g.n_compared == len(Xc) and g.n_folds == 2 and g.margin > 0
        assert {strategy, "zero-shot"} <= set(g.compared) and g.reason.startswith(f"kept the {g.kept} model")
        ll = {k: v["log_loss"] for k, v in g.compared.items()}
        if g.kept == strategy:
            assert ll[strategy] <= min(v for k, v in ll.items() if k != strategy) - g.margin
        else:
            assert ll[g.kept] == min(v for k, v in ll.items() if k != strategy)
            assert patient.adaptation.steps == [p for p in strategy.split("+") if p in ("align", "bn")] or g.kept == "zero-shot"
    # a map that changes between folds cannot beat zero-shot on the fold it did not see
    assert g.kept != strategy and not patient.adaptation.trainable


class _Spy(Step):
    """A supervised step that records the calibration trials it is fitted on."""

    name, supervised = "spy", True

    def __init__(self):
        self.seen = []

    def fit(self, bundle, X, y=None, **context):
        self.seen.append({x.tobytes() for x in X})
        return bundle


def test_guard_comparison_set_is_disjoint_from_fitting_and_early_stopping(fake_population, fake_trials):
    Xc, yc, _, _ = _target(fake_trials)
    spy = _Spy()
    patient = adapt(fake_population, Xc, yc, strategy=[spy], device="cpu")
    folds = chronological_folds(yc, 2)
    every = {x.tobytes() for x in Xc}
    guard_fits = spy.seen[:2]  # then a fit on every trial, had the guard kept the spy (it changes nothing)
    assert len(spy.seen) == 2 and patient.adaptation.guard.kept == "zero-shot"
    for k, fitted in enumerate(guard_fits):
        compared = {x.tobytes() for x in Xc[folds == k]}
        assert compared and fitted.isdisjoint(compared) and fitted | compared == every
    # steps that early-stop split the trials they are given (never the compared fold) in time order
    fit, val = chronological_split(yc[folds == 1], 0.25)
    assert fit.sum() + val.sum() == (folds == 1).sum()
    assert patient.adaptation.guard.n_compared == len(Xc)


def test_auto_reports_choice(fake_population, fake_trials):
    Xc, yc, Xt, _ = _target(fake_trials)
    patient = adapt(fake_population, Xc, yc, strategy="auto", epochs=3, device="cpu")
    a = patient.adaptation
    assert a.strategy == "auto" and a.chosen in a.candidates and a.guard.kept == a.chosen
    best = min(a.candidates.values())
    assert a.candidates[a.chosen] == best or a.candidates[a.chosen] < best + a.guard.margin
    assert "auto chose" in a.note and "cross-fitted log-loss" in a.note
    assert patient.predict(Xt).shape == (len(Xt),)


def test_curve_gives_every_strategy_the_same_window_and_test(fake_population, fake_trials, tmp_path):
    X, meta, _ = fake_trials
    subj = (meta["subject"] == "1").to_numpy()
    Xs, ms = X[subj], meta[subj].reset_index(drop=True)
    curve = calibration_curve(fake_population, Xs, ms, minutes=[0, 0.01, "run"],
                              strategies=["none", "bn", "head"], epochs=3)
    assert len(curve) == 3 * 3 and set(curve["strategy"]) == {"none", "bn", "head"}
    first_run = (ms["run"] == ms["run"].iloc[0]).to_numpy()
    assert (curve["n_test"] == int((~first_run).sum())).all()  # the later run, for every row
    for _, cell in curve.groupby("minutes"):  # one window per calibration amount, whatever the method
        assert cell["n_calibration"].nunique() == 1 and cell["minutes_used"].nunique() == 1
    grown = curve[curve["minutes"] == 0.01].iloc[0]
    assert grown["grown"] and grown["minutes_used"] > 0.01  # grown until every class has 2 trials
    at0 = curve[curve["minutes"] == 0].set_index("strategy")
    assert at0["accuracy"].notna().to_dict() == {"none": True, "bn": False, "head": False}
    assert (at0.loc[["bn", "head"], "reason"] == "no calibration data").all()
    fig = plot_curve(curve, tmp_path / "curve.png", title="fake")
    assert fig.axes and (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_block_bootstrap_bound_covers_the_mean_and_widens_with_dependence():
    rng = np.random.default_rng(0)
    d = rng.choice([-1.0, 0.0, 1.0], size=64, p=[0.2, 0.5, 0.3])
    up1 = block_bootstrap_upper(d, block=1)
    assert up1 > d.mean()
    runs = np.repeat(d[:16], 4)  # strongly dependent neighbours: blocks must see it
    assert block_bootstrap_upper(runs, block=4) > block_bootstrap_upper(runs, block=1)


def test_stop_rule_uses_calibration_trials_only(fake_population, fake_trials):
    X, meta, _ = fake_trials
    subj = (meta["subject"] == "1").to_numpy()
    Xs, ys = X[subj], meta["label"][subj].to_numpy()
    rule = stop_rule(fake_population, Xs[:40], ys[:40], strategy="head")
    assert rule["n_inner_test"] + rule["n_full"] == 40 and rule["n_half"] <= rule["n_full"] // 2 + 1
    assert rule["upper"] >= rule["gain"] and rule["stop"] == (rule["upper"] < rule["margin"])
    assert ("is below the margin" in rule["reason"]) == rule["stop"]
    few = stop_rule(fake_population, Xs[:4], ys[:4], strategy="head")
    assert not few["stop"] and few["reason"].startswith("keep recording")


def test_euclidean_alignment_whitens_mean_covariance(fake_trials):
    X, meta, _ = fake_trials
    subj = meta["subject"].to_numpy()
    one = X[subj == "1"]
    aligned = apply_alignment(one, alignment_matrix(one))
    np.testing.assert_allclose(mean_covariance(aligned), np.eye(4), atol=1e-4)
    per = align_per_group(X, subj)
    for s in np.unique(subj):
        np.testing.assert_allclose(mean_covariance(per[subj == s]), np.eye(4), atol=1e-4)


def test_align_bundle_round_trips(fake_population, fake_trials, tmp_path):
    Xc, yc, Xt, _ = _target(fake_trials)
    patient = adapt(fake_population, Xc, yc, strategy="align+head", device="cpu", guard=False)
    assert patient.align is not None
    patient.save(tmp_path / "patient")
    back = Bundle.load(tmp_path / "patient")
    np.testing.assert_array_equal(back.align, patient.align)
    np.testing.assert_allclose(back.predict_proba(Xt), patient.predict_proba(Xt), atol=1e-6)
    assert back.adaptation.strategy == "align+head"


def test_alignment_of_average_referenced_trials_is_finite_and_whitens_the_rest():
    """Average reference makes the mean covariance singular; alignment used to refuse it."""
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((8, 8))
    X = np.einsum("cd,ndt->nct", mix, rng.standard_normal((6, 8, 256)))
    X = X - X.mean(axis=1, keepdims=True)  # average reference: the channels sum to zero
    C = mean_covariance(X)
    w, V = np.linalg.eigh(C)
    assert w[0] < 1e-10 * w[-1]  # singular
    W = alignment_matrix(X)
    assert np.all(np.isfinite(W))
    full = V[:, 1:]  # the full-rank subspace
    aligned = mean_covariance(apply_alignment(X, W))
    np.testing.assert_allclose(full.T @ aligned @ full, np.eye(7), atol=1e-4)
    assert np.abs(aligned).max() < 1.5  # nothing blown up along the null direction
    with pytest.raises(EEGTransferError, match="mean covariance is zero"):
        alignment_matrix(np.zeros((3, 8, 64)))  # no signal: nothing to regularise towards


def test_alignment_of_well_conditioned_trials_is_unchanged():
    from eegtransfer.adaptation.alignment import inverse_sqrt

    rng = np.random.default_rng(1)
    X = np.einsum("cd,ndt->nct", rng.standard_normal((8, 8)) + 3 * np.eye(8),
                  rng.standard_normal((20, 8, 256)))
    np.testing.assert_allclose(alignment_matrix(X), inverse_sqrt(mean_covariance(X)), rtol=1e-10, atol=1e-12)
