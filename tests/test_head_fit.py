"""Head adaptation on cached trunk features: Newton for affine heads, L-BFGS otherwise."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from eegtransfer.adaptation import fit_head, fit_head_lbfgs
from eegtransfer.adaptation import headfit as hf


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
