"""Installed versions, the device ``auto`` picks, and a one-line install check.

``python -m eegtransfer.sysinfo --check`` ends ``make install``: it imports the stack that
eegtransfer needs and, when that fails, prints one line naming the packages that clash
instead of a long traceback. ``eegtransfer --version`` prints :func:`version_text`.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from importlib import metadata

# Imported in this order: a failure names the first package that does not load.
STACK = ("torch", "torchaudio", "braindecode", "mne", "moabb")


def installed_version(dist: str) -> str | None:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _release(version: str) -> str:
    """``2.11.0+cu130`` -> ``2.11.0``: local build tags do not change the ABI pairing."""
    return version.split("+", 1)[0]


def check_stack() -> str | None:
    """Import the stack; return None when it loads, else one line that says what clashes."""
    torch_v, audio_v = installed_version("torch"), installed_version("torchaudio")
    missing = [name for name in STACK if installed_version(name) is None]
    if missing:
        return f"not installed: {', '.join(missing)} (run `make install`, or pip install -r requirements/lock.txt)"
    # torchaudio's compiled library loads only with the torch release it was built for.
    if _release(torch_v) != _release(audio_v):
        return (
            f"torch {torch_v} and torchaudio {audio_v} do not match: braindecode imports torchaudio, "
            "which loads only with its own torch release; install the pair from requirements/lock.txt"
        )
    for name in STACK:
        try:
            with warnings.catch_warnings():  # braindecode's deprecation chatter is not a failure
                warnings.simplefilter("ignore")
                importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - any import failure is reported in one line
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            return f"{name} {installed_version(name)} does not import with torch {torch_v}: {first}"
    return None


def auto_device() -> str:
    """The device that ``device="auto"`` resolves to on this machine."""
    from .training.engine import resolve_device

    return str(resolve_device("auto"))


def version_text() -> str:
    """Package, torch/CUDA, braindecode, MNE and MOABB versions, and the ``auto`` device."""
    from . import __version__

    lines = [f"eegtransfer {__version__}"]
    import torch

    cuda = torch.version.cuda or "none"
    lines.append(f"torch {torch.__version__} (CUDA {cuda}, cuDNN {torch.backends.cudnn.version() or 'none'})")
    for dist in ("torchaudio", "braindecode", "mne", "moabb", "pyriemann", "numpy"):
        lines.append(f"{dist} {installed_version(dist) or 'not installed'}")
    lines.append(f"python {sys.version.split()[0]}")
    lines.append(f"device (auto) {auto_device()}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--check"]:
        problem = check_stack()
        if problem:
            print(f"eegtransfer install check failed: {problem}", file=sys.stderr)
            return 1
        print("eegtransfer install check: " + ", ".join(f"{n} {installed_version(n)}" for n in STACK))
        return 0
    print(version_text())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
