"""braindecode classifiers by name, and which of their parameters are "final".

Models are braindecode's own modules, built with its standard signature
(``n_chans``, ``n_outputs``, ``n_times``, ``sfreq``, ``chs_info``). What this
module adds is the layer map adaptation needs: the classification head
(``final_layer`` in every braindecode model) and the ordered blocks before it,
so that "the last k blocks" has a meaning.
"""

from __future__ import annotations

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

    ATCNet's head is a ModuleList applied per window: it cannot.
    """
    from torch import nn

    head = getattr(model, HEAD, None)
    children = [n for n, _ in model.named_children()]
    return (isinstance(head, nn.Module) and not isinstance(head, nn.ModuleList)
            and bool(children) and children[-1] == HEAD)


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
