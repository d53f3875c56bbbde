"""braindecode classifiers by name, and which of their parameters are "final".

Models are braindecode's own modules, built with its standard signature
(``n_chans``, ``n_outputs``, ``n_times``, ``sfreq``, ``chs_info``). What this
module adds is the layer map adaptation needs: the classification head
(``final_layer`` in every braindecode model) and the ordered blocks before it,
so that "the last k blocks" has a meaning.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from .errors import EEGTransferError, close_names

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

# name -> (extra constructor kwargs, blocks from input to head). Each block is a
# list of module names (dotted for nested ones); the head is always ``final_layer``.
MODELS: dict[str, tuple[dict[str, Any], list[list[str]]]] = {
    "EEGNet": ({}, [
        ["conv_temporal", "bnorm_temporal"],
        ["conv_spatial", "bnorm_1"],
        ["conv_separable_depth", "conv_separable_point", "bnorm_2"],
    ]),
    "ShallowFBCSPNet": ({}, [["conv_time_spat.conv_time"], ["conv_time_spat.conv_spat", "bnorm"]]),
    "Deep4Net": ({}, [
        ["conv_time_spat", "bnorm"],
        ["conv_2", "bnorm_2"],
        ["conv_3", "bnorm_3"],
        ["conv_4", "bnorm_4"],
    ]),
    "EEGConformer": ({}, [["patch_embedding"], ["transformer"], ["fc"]]),
    "ATCNet": ({}, [["conv_block"], ["attention_blocks"], ["temporal_conv_nets"]]),
}

HEAD = "final_layer"


def known_models() -> list[str]:
    return list(MODELS)


def check_model_name(name: str) -> str:
    """Return the canonical name (case-insensitive match) or raise listing the known ones."""
    for known in MODELS:
        if known.lower() == str(name).lower():
            return known
    close = close_names(name, list(MODELS))
    raise EEGTransferError(f"unknown model {name!r}; " + (f"did you mean {close}? " if close else "")
                           + f"known models: {', '.join(MODELS)}")


def _braindecode_models() -> Any:
    """``braindecode.models``, imported without its FutureWarnings.

    Importing it builds montages with names MNE has deprecated; that notice is
    braindecode's to fix, not the user's. Filtered here, for this import only.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import braindecode.models as bdm
    return bdm


def build_model(
    name: str,
    n_chans: int,
    n_outputs: int,
    n_times: int,
    sfreq: float,
    ch_names: list[str] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a braindecode classifier by name.

    Parameters
    ----------
    name : str
        One of :func:`known_models`.
    n_chans, n_outputs, n_times : int
        Input channels, classes and samples per trial.
    sfreq : float
        Sampling rate in Hz.
    ch_names : list of str | None
        Channel names, passed to braindecode as ``chs_info``.
    **kwargs
        Model hyper-parameters, passed on to braindecode.

    Returns
    -------
    model : torch.nn.Module
        Outputs logits of shape (n_trials, n_outputs).
    """
    import warnings

    name = check_model_name(name)
    bdm = _braindecode_models()
    extra, _ = MODELS[name]
    params = {**extra, **kwargs}
    chs_info = [{"ch_name": ch} for ch in ch_names] if ch_names else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # size auto-adjust notices
        try:
            return getattr(bdm, name)(
                n_chans=n_chans, n_outputs=n_outputs, n_times=n_times, sfreq=sfreq,
                chs_info=chs_info, **params,
            )
        except (ValueError, RuntimeError, TypeError) as err:
            raise EEGTransferError(
                f"cannot build {name} for {n_chans} channels x {n_times} samples at "
                f"{sfreq:g} Hz: {err}"
            ) from None


def blocks(model: nn.Module, name: str) -> list[list[str]]:
    """Ordered blocks (lists of module names) before the head."""
    _, layout = MODELS[check_model_name(name)]
    modules = dict(model.named_modules())
    return [[c for c in block if c in modules] for block in layout]


def final_parameter_names(model: nn.Module, name: str, k: int = 0) -> list[str]:
    """Names of the head's parameters plus those of the last ``k`` blocks.

    Parameters
    ----------
    model : torch.nn.Module
    name : str
        Model name, for its layer map.
    k : int
        Number of blocks before the head to include (0 = head only).

    Returns
    -------
    names : list of str
        Keys of ``model.named_parameters()``.
    """
    layout = blocks(model, name)
    if k < 0 or k > len(layout):
        raise EEGTransferError(f"k={k} blocks requested; {name} has {len(layout)} before its head")
    prefixes = [HEAD] + [c for block in layout[len(layout) - k:] for c in block]
    return [n for n, _ in model.named_parameters()
            if any(n == p or n.startswith(p + ".") for p in prefixes)]


def batchnorm_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every batch-norm layer (for AdaBN)."""
    from torch import nn

    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def head_is_callable(model: nn.Module) -> bool:
    """Whether ``model.final_layer`` is one module applied last, so it can run on cached features.

    ATCNet's head is a ModuleList applied per window: it runs on cached features through
    :func:`cached_head` instead.
    """
    from torch import nn

    head = getattr(model, HEAD, None)
    children = [n for n, _ in model.named_children()]
    return (isinstance(head, nn.Module) and not isinstance(head, nn.ModuleList)
            and bool(children) and children[-1] == HEAD)


class CachedHead:
    """How head-only adaptation runs ``model``'s head on cached trunk features.

    Attributes
    ----------
    inputs : list of str
        Modules whose inputs are cached (:func:`eegtransfer.training.engine.module_inputs`): the
        head, or ATCNet's dense layer of each sliding window.
    windows : bool
        Whether the inputs are one per window, stacked by :meth:`features`.
    module : torch.nn.Module
        Maps :meth:`features` to the model's output. Fitting its parameters fits the head once
        :meth:`commit` has run: they are the head's own, or a copy gathered in fewer tensors.
    """

    def __init__(self, inputs: list[str], module: nn.Module, *, windows: bool = False) -> None:
        self.inputs, self.module, self.windows = inputs, module, windows

    def features(self, inputs: list[Any]) -> Any:
        """The cached inputs as one tensor: the head's input, or the windows' stacked (n, n_windows, F)."""
        import torch

        return torch.stack(inputs, 1) if self.windows else inputs[0]

    def commit(self) -> None:
        """Write ``module``'s parameters into the model's head (a no-op when they are the head's own)."""
        commit = getattr(self.module, "commit", None)
        if commit is not None:
            commit()


@functools.cache
def _window_heads() -> tuple[type, type]:
    """``(WindowedHead, GatheredWindowedHead)``: ATCNet's head on cached window features."""
    import torch
    from torch import nn

    class WindowedHead(nn.Module):
        """Input (n, n_windows, F): the mean over windows of each window's dense layer, then the
        model's ``out_fun``, as in ``ATCNet.forward``. With ``concat=True`` there is one "window",
        the concatenated features. The parameters are the layers' own."""

        def __init__(self, layers: nn.ModuleList, out: nn.Module) -> None:
            super().__init__()
            self.layers, self.out = layers, out

        def forward(self, x: Any) -> Any:
            outs = [layer(x[:, w]) for w, layer in enumerate(self.layers)]
            return self.out(torch.stack(outs).mean(0) if len(outs) > 1 else outs[0])

    class GatheredWindowedHead(nn.Module):
        """The same function as ``WindowedHead`` for braindecode's ``MaxNormLinear`` layers, in two
        tensors: ``original`` holds the windows' unconstrained weights side by side (n_classes,
        n_windows * F), ``bias`` their biases (n_windows, n_classes). ``MaxNorm`` scales each column
        by its own norm, so one ``MaxNorm`` of the weights side by side is each window's weight, and
        the mean over windows is one product: a fraction of the operations of ``WindowedHead``, for
        a solver that calls it hundreds of times. :meth:`commit` writes the tensors back."""

        def __init__(self, layers: nn.ModuleList, out: nn.Module) -> None:
            super().__init__()
            self._layers = list(layers)  # a plain list: their parameters are not this module's
            self.original = nn.Parameter(torch.cat([m.parametrizations.weight.original.detach()
                                                    for m in layers], 1).clone())
            self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in layers]).clone())
            self.norm, self.out = layers[0].parametrizations.weight[0], out

        def forward(self, x: Any) -> Any:
            return self.out(x.flatten(1) @ self.norm(self.original).T / len(self._layers) + self.bias.mean(0))

        def commit(self) -> None:
            with torch.no_grad():
                for m, original, bias in zip(self._layers, self.original.chunk(len(self._layers), 1), self.bias):
                    m.parametrizations.weight.original.copy_(original)
                    m.bias.copy_(bias)

    return WindowedHead, GatheredWindowedHead


def _gatherable(layers: Any) -> bool:
    """Whether ATCNet's window layers are ``nn.Linear``s whose weight has one parametrisation, the
    same braindecode ``MaxNorm`` (same settings), which acts on each column alone."""
    import torch
    from torch import nn
    from torch.nn.utils import parametrize

    pars = []
    for m in layers:
        if (not isinstance(m, nn.Linear) or type(m).forward is not nn.Linear.forward or m.bias is None
                or not parametrize.is_parametrized(m, "weight") or len(m.parametrizations) != 1
                or len(m.parametrizations.weight) != 1):
            return False
        par = m.parametrizations.weight[0]
        if type(par).__name__ != "MaxNorm" or type(par).__module__ != "braindecode.modules.parametrization":
            return False
        pars.append(par)
    if any((p.max_norm_val, p.eps) != (pars[0].max_norm_val, pars[0].eps) for p in pars) \
            or len({m.weight.shape for m in layers}) != 1:
        return False
    with torch.no_grad():  # and it does act column by column, on these weights
        originals = [m.parametrizations.weight.original for m in layers]
        apart = torch.cat([pars[0](o) for o in originals], 1)
        return bool(torch.allclose(pars[0](torch.cat(originals, 1)), apart, rtol=1e-6, atol=1e-7))


def cached_head(model: nn.Module) -> CachedHead | None:
    """The head of ``model`` as a function of cached features, or ``None`` where there is none.

    One module applied last (:func:`head_is_callable`): its input. ATCNet: the input of each
    window's dense layer, stacked; the module averages the windows' outputs as the model does.
    The caller checks that the module reproduces the model's logits on the cached features, and
    calls :meth:`CachedHead.commit` after fitting it.
    """
    from torch import nn

    if head_is_callable(model):
        return CachedHead([HEAD], getattr(model, HEAD))
    head = getattr(model, HEAD, None)
    if type(model).__name__ == "ATCNet" and isinstance(head, nn.ModuleList) and len(head):
        out = getattr(model, "out_fun", None)
        out = out if isinstance(out, nn.Module) else nn.Identity()
        windowed, gathered = _window_heads()
        module = gathered(head, out) if _gatherable(head) else windowed(head, out)
        return CachedHead([f"{HEAD}.{i}" for i in range(len(head))], module, windows=True)
    return None


def with_new_head(model: nn.Module, name: str, n_outputs: int, n_chans: int, n_times: int,
                  sfreq: float, ch_names: list[str] | None = None, **kwargs: Any) -> nn.Module:
    """A copy of ``model`` whose head is new (random) and has ``n_outputs`` classes.

    Every other parameter and buffer is copied, so the trunk is the same.
    braindecode's ``reset_head`` is not implemented for every model, hence a
    rebuild.
    """
    new = build_model(name, n_chans, n_outputs, n_times, sfreq, ch_names=ch_names, **kwargs)
    trunk = {k: v for k, v in model.state_dict().items() if not (k == HEAD or k.startswith(HEAD + "."))}
    result = new.load_state_dict(trunk, strict=False)
    stray = [k for k in result.missing_keys if not k.startswith(HEAD + ".")]
    if stray or result.unexpected_keys:
        raise EEGTransferError(f"cannot move the trunk of {name} to a new head: missing {stray}, "
                               f"unexpected {result.unexpected_keys}")
    return new
