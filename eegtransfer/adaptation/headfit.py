"""Fit the classification head on cached trunk features, deterministically.

The head step minimises, over the head's parameters ``theta``,

    (class-weighted) mean cross-entropy(head(feats), y) + l2 * ||theta - theta_0||^2

with ``theta_0`` the pretrained head (L2-SP) or zero for a new head. :func:`fit_head` picks how:

- **Newton** when the head is affine in its input: one ``Linear`` layer, or one convolution whose
  kernel covers the whole feature map (EEGNet, ShallowFBCSPNet, Deep4Net, EEGConformer), followed
  by reshapes only. The problem is then a multinomial logistic regression on the flattened
  features ``A`` (plus a column of ones for the bias). Its gradient in ``theta`` lies in the row
  span of ``A``, so the minimiser is ``theta_0`` plus a vector in that span, of dimension at most
  ``n_trials``: Newton's method there, in float64, reaches the exact minimiser in a few steps
  (:func:`fit_affine_newton`). This is the same objective, solved exactly, with far fewer unknowns.
- **L-BFGS** through the head module otherwise (ATCNet's per-window max-norm dense layers), or
  when the span is large (:func:`fit_head_lbfgs`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..errors import EEGTransferError

HEAD_L2 = 1e-2
#: Newton is used up to this many unknowns (classes x span dimension): its Hessian is square in it.
NEWTON_MAX_UNKNOWNS = 512
# Modules that only reshape, allowed after the affine layer of a head.
_RESHAPES = ("Rearrange", "SqueezeFinalOutput", "Flatten", "Unflatten", "Identity")


def _check_prior(prior: str) -> None:
    if prior not in ("start", "zero"):
        raise EEGTransferError(f"prior= must be 'start' or 'zero', got {prior!r}")


def fit_head(head: Any, feats: Any, y: np.ndarray, *, l2: float = HEAD_L2, max_iter: int = 100,
             device: Any = None, prior: str = "start", balanced: bool = True,
             method: str = "auto") -> dict[str, Any]:
    """Fit the head as an L2-regularised multinomial logistic regression, in place.

    Minimises ``cross_entropy(head(feats), y) + l2 * ||theta - theta_0||^2`` from the head's
    current weights. ``prior="start"``: ``theta_0`` is those weights, the pretrained head
    (L2-SP: with few trials ``l2`` large keeps zero-shot); ``prior="zero"`` for a new, randomly
    initialised head, which carries no knowledge.

    Parameters
    ----------
    head : torch.nn.Module
        Maps ``feats`` to (n_trials, n_classes) logits.
    feats : torch.Tensor, shape (n_trials, ...)
        Cached trunk outputs (:func:`eegtransfer.training.engine.module_inputs`).
    y : ndarray of int, shape (n_trials,)
    l2 : float
    max_iter : int
        Most iterations of the solver.
    device : str | torch.device | None
        Where L-BFGS runs; ``None``: where ``feats`` are. Newton runs on the CPU. The head stays
        on ``device``.
    prior : {"start", "zero"}
    balanced : bool
        Weight the trials so that every class counts the same (a chronological calibration
        window is mostly the class recorded first, such as Kalunga2016's opening ``rest``).
    method : {"auto", "newton", "lbfgs"}
        ``"auto"``: Newton for an affine head (see the module) with at most
        :data:`NEWTON_MAX_UNKNOWNS` unknowns and ``l2 > 0``, else L-BFGS.

    Returns
    -------
    info : dict
        ``loss`` (final objective), ``iterations``, ``seconds``, ``solver`` (``"newton"`` or
        ``"lbfgs"``), ``l2``, ``prior`` and ``balanced``.
    """
    if method not in ("auto", "newton", "lbfgs"):
        raise EEGTransferError(f"method= must be 'auto', 'newton' or 'lbfgs', got {method!r}")
    _check_prior(prior)
    if method != "lbfgs":
        layer = affine_layer(head, feats) if l2 > 0 else None
        if layer is not None and (method == "newton" or _unknowns(layer, feats) <= NEWTON_MAX_UNKNOWNS):
            return fit_affine_newton(layer, feats, y, l2=l2, max_iter=max_iter, prior=prior, balanced=balanced)
        if method == "newton":
            raise EEGTransferError("method='newton' needs l2 > 0 and a head that is one Linear layer, or one "
                                   "convolution over the whole feature map, followed by reshapes only")
    return fit_head_lbfgs(head, feats, y, l2=l2, max_iter=max_iter, device=device, prior=prior, balanced=balanced)


def affine_layer(head: Any, feats: Any) -> Any:
    """The layer of ``head`` that makes it affine in ``feats``, or ``None``.

    ``head`` qualifies when it is an ``nn.Linear`` on (n, F) features, or an ``nn.Conv1d/2d/3d``
    (one group, no padding, no dilation) whose kernel covers the whole feature map, alone or
    first in an ``nn.Sequential`` whose other modules only reshape; no parametrisation. Then
    ``head(feats) == feats.flatten(1) @ weight.flatten(1).T + bias``, which is checked on a few trials.
    """
    import torch
    from torch import nn
    from torch.nn.utils import parametrize

    mods = list(head) if isinstance(head, nn.Sequential) else [head]
    if not mods or any(type(m).__name__ not in _RESHAPES for m in mods[1:]):
        return None
    layer = mods[0]
    x = torch.as_tensor(feats)
    if parametrize.is_parametrized(layer):
        return None
    if type(layer) is nn.Linear:
        if x.ndim != 2:
            return None
    elif type(layer) in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
        pad = layer.padding
        if (layer.groups != 1 or x.ndim != layer.weight.ndim or tuple(x.shape[2:]) != tuple(layer.weight.shape[2:])
                or any(d != 1 for d in layer.dilation)
                or not (pad == "valid" or (not isinstance(pad, str) and all(p == 0 for p in pad)))):
            return None
    else:
        return None
    with torch.no_grad():
        few = x[:8].to(layer.weight.device, layer.weight.dtype)
        out = head(few)
        lin = few.flatten(1) @ layer.weight.flatten(1).T
        if layer.bias is not None:
            lin = lin + layer.bias
    scale = 1.0 + float(lin.abs().max()) if lin.numel() else 1.0
    if out.shape != lin.shape or not torch.allclose(out.float(), lin.float(), rtol=1e-4, atol=1e-5 * scale):
        return None
    return layer


def _unknowns(layer: Any, feats: Any) -> int:
    n_in = int(np.prod(layer.weight.shape[1:])) + (layer.bias is not None)
    return int(layer.weight.shape[0]) * min(len(feats), n_in)


def _trial_weights(y: np.ndarray, n_classes: int, balanced: bool) -> np.ndarray:
    """Weights of the trials in the data term, summing to 1 (``cross_entropy(weight=...)``'s mean)."""
    if balanced:  # every class counts the same, however many trials it has
        counts = np.bincount(y, minlength=n_classes)
        w = 1.0 / counts[y]
    else:
        w = np.ones(len(y))
    return w / w.sum()


def fit_affine_newton(layer: Any, feats: Any, y: np.ndarray, *, l2: float = HEAD_L2, max_iter: int = 100,
                      prior: str = "start", balanced: bool = True, tol: float = 1e-12) -> dict[str, Any]:
    """:func:`fit_head` for an affine head (:func:`affine_layer`): Newton's method in the span of the features.

    With ``A`` the flattened features plus a column of ones, ``theta`` = [weight | bias] and
    ``A = U S V^T`` (thin SVD, rank ``r``), ``theta = theta_0 + B V^T``: the logits are
    ``A theta_0^T + (U S) B^T`` and the penalty is ``l2 ||B||^2``, a logistic regression with
    ``n_classes x r`` unknowns. Newton with backtracking (Armijo) runs in float64 until half the
    squared Newton decrement, a bound on the distance to the minimum in the objective near it,
    is below ``tol``. ``layer``'s weight and bias are set in place.
    """
    import torch

    _check_prior(prior)
    if l2 <= 0:
        raise EEGTransferError(f"Newton's method on the head needs l2 > 0, got {l2}")
    t0 = time.perf_counter()
    # float64 on the CPU in torch: its thread pool, not a second one (numpy's BLAS) that would
    # spin against it on a small machine.
    f64 = {"dtype": torch.float64, "device": "cpu"}
    weight, bias = layer.weight, layer.bias
    n_classes = int(weight.shape[0])
    yi = torch.as_tensor(np.asarray(y, dtype=np.int64))
    A = torch.as_tensor(feats).detach().flatten(1).to(**f64)
    theta = weight.detach().flatten(1).to(**f64)
    if bias is not None:
        A = torch.cat([A, torch.ones(len(A), 1, **f64)], 1)
        theta = torch.cat([theta, bias.detach().to(**f64)[:, None]], 1)
    theta0 = theta if prior == "start" else torch.zeros_like(theta)
    w = torch.as_tensor(_trial_weights(yi.numpy(), n_classes, balanced), **f64)
    U, s, Vt = torch.linalg.svd(A, full_matrices=False)
    r = int((s > s[0] * max(A.shape) * torch.finfo(torch.float64).eps).sum()) if len(s) and s[0] > 0 else 0
    Z, V = U[:, :r] * s[:r], Vt[:r]
    base = A @ theta0.T
    onehot = torch.nn.functional.one_hot(yi, n_classes).to(**f64)
    eye = torch.eye(n_classes, **f64)

    def value(B: torch.Tensor) -> tuple[float, torch.Tensor]:
        L = base + Z @ B.T
        lse = torch.logsumexp(L, 1)
        return float(w @ (lse - (L * onehot).sum(1)) + l2 * (B ** 2).sum()), torch.exp(L - lse[:, None])

    B = (theta - theta0) @ V.T  # the starting head, projected on the span (0 for prior="start")
    f, P = value(B)
    iterations = 0
    while r and iterations < max_iter:  # r = 0: features all zero (no bias), nothing to fit
        iterations += 1
        g = (w[:, None] * (P - onehot)).T @ Z + 2 * l2 * B
        # Hessian of the data term: sum_i w_i (diag(p_i) - p_i p_i^T) (x) z_i z_i^T, as one product
        S = w[:, None, None] * (P[:, :, None] * eye - P[:, :, None] * P[:, None, :])
        H = ((S.reshape(len(S), -1)[:, :, None] * Z[:, None, :]).reshape(len(S), -1).T @ Z)
        H = H.reshape(n_classes, n_classes, r, r).permute(0, 2, 1, 3).reshape(n_classes * r, n_classes * r)
        H = H + 2 * l2 * torch.eye(n_classes * r, **f64)
        d = -torch.linalg.solve(H, g.reshape(-1)).reshape(n_classes, r)
        decrement = -float((g * d).sum())
        if decrement / 2 <= tol:
            break
        t = 1.0
        while True:
            f_new, P_new = value(B + t * d)
            if f_new <= f - 1e-4 * t * decrement or t < 1e-10:
                break
            t /= 2
        if f_new > f:  # no descent left at float64 precision
            break
        B, f, P = B + t * d, f_new, P_new
    theta = theta0 + B @ V
    with torch.no_grad():
        n_w = weight[0].numel()
        weight.copy_(theta[:, :n_w].reshape(weight.shape))
        if bias is not None:
            bias.copy_(theta[:, n_w])
    return {"loss": f, "iterations": iterations, "seconds": time.perf_counter() - t0, "solver": "newton", "l2": l2,
            "prior": prior, "balanced": balanced, "span": r}


def fit_head_lbfgs(head: Any, feats: Any, y: np.ndarray, *, l2: float = HEAD_L2, max_iter: int = 100,
                   device: Any = None, prior: str = "start", balanced: bool = True) -> dict[str, Any]:
    """:func:`fit_head` with full-batch L-BFGS through ``head``, from its current weights, in place.

    Any head module works (parametrised layers included). Parameters and return value as
    :func:`fit_head`; ``solver`` is ``"lbfgs"``.
    """
    _check_prior(prior)
    import torch
    from torch import nn

    t0 = time.perf_counter()
    xf = torch.as_tensor(feats, dtype=torch.float32)
    device = xf.device if device is None else device
    xf = xf.to(device)
    head.to(device).eval()
    params = list(head.parameters())
    theta0 = torch.cat([p.detach().flatten() for p in params])
    if prior == "zero":
        theta0 = torch.zeros_like(theta0)
    for p in params:
        p.requires_grad_(True)
    yt = torch.as_tensor(y, dtype=torch.long).to(device)
    cw = None
    if balanced:  # every class counts the same, however many trials it has
        counts = torch.bincount(yt, minlength=int(yt.max()) + 1).float()
        cw = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
        cw = torch.cat([cw, torch.zeros(max(0, _n_outputs(head, xf) - len(cw)), device=cw.device)])
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")
    calls = [0]

    def objective() -> Any:
        loss = nn.functional.cross_entropy(head(xf).float(), yt, weight=cw)
        return loss + l2 * ((torch.cat([p.flatten() for p in params]) - theta0) ** 2).sum()

    def closure() -> Any:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        calls[0] += 1
        return loss

    opt.step(closure)
    with torch.no_grad():
        loss = objective()  # step() returns the first evaluation's, not the final one's
    return {"loss": float(loss), "iterations": calls[0], "seconds": time.perf_counter() - t0,
            "solver": "lbfgs", "l2": l2, "prior": prior, "balanced": balanced}


def _n_outputs(head: Any, xf: Any) -> int:
    import torch

    with torch.no_grad():
        return int(head(xf[:1]).shape[1])
