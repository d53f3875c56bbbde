"""Head adaptation on cached trunk features: Newton for affine heads, L-BFGS otherwise, ATCNet's windows."""

import copy

import numpy as np
import pytest
import torch
from conftest import N_CHANS, N_CLASSES, N_TIMES, SFREQ, sine_trials, target_split
from torch import nn

from eegtransfer.adaptation import adapt, fit_head, fit_head_lbfgs
from eegtransfer.adaptation import headfit as hf
from eegtransfer.adaptation.steps import _cached_head_features
from eegtransfer.models import HEAD, build_model, cached_head
from eegtransfer.training.engine import module_inputs, predict_logits


def _objective(head, feats, y, theta0, l2, balanced=True):
    """The head step's objective, in float64, recomputed from scratch."""
    yt = torch.as_tensor(y)
    counts = torch.bincount(yt, minlength=int(yt.max()) + 1).double()
    cw = 1.0 / counts if balanced else None
    with torch.no_grad():
        logits = head.double()(torch.as_tensor(feats).double())
        head.float()
        data = nn.functional.cross_entropy(logits, yt, weight=cw)
        pen = sum(((p.double() - p0.double()) ** 2).sum() for p, p0 in zip(head.parameters(), theta0))
    return float(data + l2 * pen)


def _problem(n=30, shape=(6,), n_classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = np.arange(n) % n_classes
    feats = torch.randn(n, *shape, generator=g) + torch.as_tensor(y, dtype=torch.float32).reshape(-1, *[1] * len(shape))
    return feats, y


class _SqueezeFinalOutput(nn.Module):  # stand-in named like braindecode's, which only reshapes
    def forward(self, x):
        return x.flatten(1)


_SqueezeFinalOutput.__name__ = "SqueezeFinalOutput"


def test_affine_layer_recognises_linear_and_whole_map_convolutions():
    from torch.nn.utils.parametrizations import weight_norm

    feats2, _ = _problem(shape=(6,))
    feats4, _ = _problem(shape=(5, 7, 1))
    lin = nn.Linear(6, 3)
    assert hf.affine_layer(lin, feats2) is lin
    conv = nn.Conv2d(5, 3, (7, 1))
    assert hf.affine_layer(nn.Sequential(conv, _SqueezeFinalOutput()), feats4) is conv
    # not affine in the flattened features, or not one layer: refused
    assert hf.affine_layer(nn.Sequential(nn.Conv2d(5, 3, (3, 1)), _SqueezeFinalOutput()), feats4) is None  # slides
    assert hf.affine_layer(nn.Sequential(nn.Linear(6, 3), nn.ReLU()), feats2) is None
    assert hf.affine_layer(nn.Sequential(nn.Linear(6, 3), nn.LogSoftmax(1)), feats2) is None
    assert hf.affine_layer(weight_norm(nn.Linear(6, 3)), feats2) is None  # parametrised weight
    assert hf.affine_layer(nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 3)), feats2) is None


@pytest.mark.parametrize("prior", ["start", "zero"])
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_newton_reaches_the_lbfgs_minimum_of_the_same_objective(kind, prior):
    torch.manual_seed(0)
    if kind == "linear":
        feats, y = _problem(shape=(6,))
        head = nn.Linear(6, 3)
    else:  # ShallowFBCSPNet's kind of head: a convolution over the whole feature map, then a squeeze
        feats, y = _problem(shape=(5, 7, 1))
        head = nn.Sequential(nn.Conv2d(5, 3, (7, 1)), _SqueezeFinalOutput())
    start = [p.detach().clone() for p in head.parameters()]
    theta0 = start if prior == "start" else [torch.zeros_like(p) for p in start]
    newton, lbfgs = copy.deepcopy(head), copy.deepcopy(head)
    info = fit_head(newton, feats, y, l2=1e-2, prior=prior, method="newton")
    ref = fit_head_lbfgs(lbfgs, feats, y, l2=1e-2, prior=prior, max_iter=2000)
    assert info["solver"] == "newton" and ref["solver"] == "lbfgs" and info["prior"] == prior
    f_newton = _objective(newton, feats, y, theta0, 1e-2)
    assert info["loss"] == pytest.approx(f_newton, abs=1e-6)
    assert f_newton <= _objective(lbfgs, feats, y, theta0, 1e-2) + 1e-6
    with torch.no_grad():
        torch.testing.assert_close(newton(feats), lbfgs(feats), rtol=1e-3, atol=2e-3)
    # a minimum: the gradient of the objective vanishes there
    params = list(newton.parameters())
    loss = nn.functional.cross_entropy(newton(feats), torch.as_tensor(y), weight=1.0 / torch.bincount(torch.as_tensor(y)).float())
    loss = loss + 1e-2 * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, theta0))
    grads = torch.autograd.grad(loss, params)
    assert max(float(g.abs().max()) for g in grads) < 1e-4


def test_auto_takes_newton_for_a_small_span_and_lbfgs_beyond(monkeypatch):
    feats, y = _problem(shape=(6,))
    assert fit_head(nn.Linear(6, 3), feats, y)["solver"] == "newton"
    assert fit_head(nn.Linear(6, 3), feats, y, l2=0.0)["solver"] == "lbfgs"  # Newton needs l2 > 0
    monkeypatch.setattr(hf, "NEWTON_MAX_UNKNOWNS", 3 * 6)  # 3 classes x min(30 trials, 7): 21 unknowns
    assert fit_head(nn.Linear(6, 3), feats, y)["solver"] == "lbfgs"
    assert fit_head(nn.Linear(6, 3), feats, y, method="newton")["solver"] == "newton"
    with pytest.raises(Exception, match="needs l2 > 0 and a head"):
        fit_head(nn.Sequential(nn.Linear(6, 3), nn.ReLU()), feats, y, method="newton")


def test_lbfgs_reports_the_final_objective():
    feats, y = _problem(shape=(6,))
    head = nn.Linear(6, 3)
    theta0 = [p.detach().clone() for p in head.parameters()]
    before = _objective(head, feats, y, theta0, 1e-2)
    info = fit_head_lbfgs(head, feats, y, l2=1e-2)
    assert info["loss"] < before
    assert info["loss"] == pytest.approx(_objective(head, feats, y, theta0, 1e-2), rel=1e-5)


# --- ATCNet: its dense layers run inside the sliding-window loop --------------------------------

@pytest.fixture(scope="module")
def atcnet_population(fake_trials):
    """A tiny ATCNet pretrained one epoch on FakeDataset subjects 2-4 (CPU, seed 0)."""
    from eegtransfer.training.pretraining import pretrain

    X, meta, recipe = fake_trials
    pop = (meta["subject"] != "1").to_numpy()
    return pretrain(X[pop], meta["label"][pop].to_numpy(), meta[pop], recipe, model="ATCNet", epochs=1,
                    device="cpu", seed=0)


def _target(fake_trials):
    X, meta, _ = fake_trials
    cal, test = target_split(meta, "1")
    return X[cal], meta["label"][cal].to_numpy(), X[test], meta["label"][test].to_numpy()


def _atcnet_case(case, atcnet_population, fake_trials):
    """(model, X_fit, y_fit, X_new): the pretrained one-window ATCNet on its data, or a random
    ATCNet on 8 channels x 512 samples, whose sliding window makes several windows."""
    if case == "pretrained":
        Xc, yc, Xt, _ = _target(fake_trials)
        pop = atcnet_population
        return copy.deepcopy(pop.model), pop.prepare_input(Xc), pop.encode(yc), pop.prepare_input(Xt)
    torch.manual_seed(0)
    model = build_model("ATCNet", 8, 4, 512, 128.0).eval()
    X = torch.randn(40, 8, 512).numpy()
    return model, X[:24], np.arange(24) % 4, X[24:]


@pytest.mark.parametrize("case", ["pretrained", "windows"])
def test_atcnet_head_fitted_on_cached_features_is_what_the_network_computes(case, atcnet_population, fake_trials,
                                                                            one_thread):
    model, Xf, yf, Xn = _atcnet_case(case, atcnet_population, fake_trials)
    reference = copy.deepcopy(model)
    cached, feats = _cached_head_features(model, Xf, "cpu")  # None unless the head gives the logits
    n_windows = len(model.final_layer)
    assert (n_windows > 1) == (case == "windows")
    assert cached.inputs == [f"{HEAD}.{i}" for i in range(n_windows)]
    assert feats.shape[:2] == (len(Xf), n_windows)
    assert type(cached.module).__name__ == "GatheredWindowedHead"
    info = fit_head(cached.module, feats, yf)
    assert info["solver"] == "lbfgs" and info["iterations"] > 1
    # the fitted function of the cached features, on new trials, before it is written into the model
    inputs, _ = module_inputs(model, Xn, cached.inputs)
    with torch.no_grad():
        expected = cached.module(cached.features(inputs))
    cached.commit()
    got = torch.as_tensor(predict_logits(model, Xn))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, torch.as_tensor(predict_logits(reference, Xn)))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, reference.state_dict()[k])}
    assert changed and all(k.startswith(HEAD + ".") for k in changed)


def test_atcnet_head_adaptation_takes_the_cached_path_and_changes_only_the_head(atcnet_population, fake_trials):
    Xc, yc, Xt, _ = _target(fake_trials)
    pop = atcnet_population
    before = {k: v.clone() for k, v in pop.model.state_dict().items()}
    patient = adapt(pop, Xc, yc, strategy="head", device="cpu", guard=False)
    assert patient.history["solver"] == "lbfgs" and "epochs" not in patient.history  # not AdamW epochs
    after = patient.model.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(HEAD + ".") for k in changed)
    assert all(torch.equal(before[k], v) for k, v in pop.model.state_dict().items())  # population untouched
    # with the guard, on the same trials: the same patient model (the guard only decides whether to keep it)
    guarded = adapt(pop, Xc, yc, strategy="head", device="cpu", margin=-100.0)
    assert guarded.adaptation.guard.kept == "head"
    assert all(torch.equal(v, guarded.model.state_dict()[k]) for k, v in after.items())
    # the patient's probabilities are the softmax of its head on the cached window features
    cached = cached_head(patient.model)
    inputs, _ = module_inputs(patient.model, patient.prepare_input(Xt), cached.inputs)
    with torch.no_grad():
        logits = cached.module(cached.features(inputs))
    np.testing.assert_allclose(patient.predict_proba(Xt), torch.softmax(logits.double(), 1).numpy(), atol=1e-5)


def test_atcnet_windows_without_max_norm_share_the_layers_parameters(one_thread):
    from torch.nn.utils import parametrize

    torch.manual_seed(0)
    model = build_model("ATCNet", 8, 4, 512, 128.0).eval()  # a fresh one: parametrised classes are shared by copies
    for layer in model.final_layer:
        parametrize.remove_parametrizations(layer, "weight")
    cached = cached_head(model)
    assert type(cached.module).__name__ == "WindowedHead"
    assert {id(p) for p in cached.module.parameters()} == {id(p) for p in model.final_layer.parameters()}
    X = torch.randn(6, 8, 512).numpy()
    assert _cached_head_features(model, X, "cpu") is not None  # None if the head did not give the logits


def test_atcnet_head_learns_a_separable_problem(one_thread):
    """A random ATCNet trunk on sines whose frequency is the class: the head alone separates them."""
    X, y = sine_trials(60, seed=3)
    torch.manual_seed(0)
    model = build_model("ATCNet", N_CHANS, N_CLASSES, N_TIMES, SFREQ).eval()
    zero_shot = predict_logits(model, X)
    cached, feats = _cached_head_features(model, X[:40], "cpu")
    info = fit_head(cached.module, feats, y[:40], l2=1e-4)
    cached.commit()
    logits = predict_logits(model, X)
    assert info["solver"] == "lbfgs"
    assert (zero_shot.argmax(1) == y).mean() <= 0.5
    assert (logits[:40].argmax(1) == y[:40]).mean() >= 0.95
    assert (logits[40:].argmax(1) == y[40:]).mean() >= 0.8


def test_a_head_that_does_not_give_the_logits_is_trained_through_the_network(fake_population, fake_trials,
                                                                              monkeypatch, caplog):
    from eegtransfer import models

    Xc, yc, _, _ = _target(fake_trials)
    real = models.cached_head

    def wrong(model):
        ch = real(model)
        ch.module = nn.Sequential(ch.module, nn.Softmax(1))  # not the model's output
        return ch

    monkeypatch.setattr(models, "cached_head", wrong)
    with caplog.at_level("WARNING", logger="eegtransfer"):
        patient = adapt(fake_population, Xc, yc, strategy="head", epochs=2, device="cpu", guard=False)
    assert "does not give the model's logits" in caplog.text
    assert patient.history.get("epochs") and "solver" not in patient.history


def test_module_inputs_match_head_inputs_and_logits(fake_population, fake_trials):
    from eegtransfer.training.engine import head_inputs

    Xc, _, _, _ = _target(fake_trials)
    model, Xa = fake_population.model, fake_population.prepare_input(Xc)
    (feats,), logits = module_inputs(model, Xa, [HEAD], batch_size=7)
    torch.testing.assert_close(feats, head_inputs(model, Xa))
    np.testing.assert_allclose(logits.numpy(), predict_logits(model, Xa), rtol=1e-5, atol=1e-6)
    assert not feats.is_inference() and not logits.is_inference()


@pytest.mark.parametrize("which", ["EEGNet", "ATCNet"])
def test_the_guard_of_a_lone_head_runs_the_trunk_once_and_scores_as_cross_fit(which, fake_population,
                                                                             atcnet_population, fake_trials,
                                                                             monkeypatch):
    from eegtransfer.adaptation import Head, core, cross_fit
    from eegtransfer.adaptation.guard import cross_fit_head

    pop = fake_population if which == "EEGNet" else atcnet_population
    Xc, yc, _, _ = _target(fake_trials)
    fast = cross_fit_head(pop, Head(), Xc, yc, device="cpu")
    fit = core._fitter(pop, Xc, yc, device="cpu", seed=0)
    slow = cross_fit({"head": fit([Head()]), "zero-shot": lambda mask: pop}, Xc, yc)
    assert set(fast) == set(slow) == {"head", "zero-shot"}
    for cand in slow:
        assert fast[cand]["log_loss"] == pytest.approx(slow[cand]["log_loss"], abs=1e-4)
        assert fast[cand]["accuracy"] == pytest.approx(slow[cand]["accuracy"])

    def refused(*args, **kwargs):
        raise AssertionError("a lone head step should not go through the generic cross_fit")

    monkeypatch.setattr(core, "cross_fit", refused)
    patient = adapt(pop, Xc, yc, strategy="head", device="cpu")
    assert patient.adaptation.guard.compared == fast
