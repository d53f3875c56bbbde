"""Pretraining with class-preserving augmentations, on the nested development set (not adopted).

The issue asked for braindecode augmentations that keep an SSVEP's class (no frequency shift).
This runs ``dev_nested.py`` unchanged except that every training batch of every pretraining (never
a validation batch) passes through one fixed composition, chosen before the first run and not
tuned: ``FTSurrogate(0.5)`` (random Fourier phases, the same for every channel: the amplitude
spectrum and the cross-spectra stay, and Kalunga's responses are not phase-locked anyway),
``SignFlip(0.5)`` and ``ChannelsDropout(0.5, p_drop=0.2)``. Their random states are seeded
once per process, so a run is reproducible with the same ``--pairs`` split. The package has no
augmentation option: on this development set it did not help enough to add one
(``results/dev_recipe/recipes.md``). ::

    python benchmarks/dev_augment.py --pairs 0-27 --out benchmarks/out/aug_a --pop-cache DIR &
    python benchmarks/dev_augment.py --pairs 28-54 --out benchmarks/out/aug_b --pop-cache DIR &

``--epochs`` and ``--patience`` as in ``dev_nested.py``; a ``--pop-cache`` of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dev_nested  # noqa: E402
from braindecode.augmentation import ChannelsDropout, Compose, FTSurrogate, SignFlip  # noqa: E402

from eegtransfer.training import engine  # noqa: E402

AUGMENT = Compose([FTSurrogate(0.5, channel_indep=False, random_state=0), SignFlip(0.5, random_state=1),
                   ChannelsDropout(0.5, p_drop=0.2, random_state=2)])
VARIANT = "augmented (FTSurrogate 0.5, SignFlip 0.5, ChannelsDropout 0.5 of 0.2)"
_batch = engine._Batcher.__call__


def _augmented_batch(self: engine._Batcher, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch, augmented.

    The in-memory batcher serves training batches only (validation slices the trials), and
    ``auto``'s SSVEP candidates train no weights, so only pretraining sees augmented trials.
    """
    xb, yb = _batch(self, idx)
    with torch.no_grad():
        xa, _ = AUGMENT(xb, yb)
    return xa.contiguous(), yb


if __name__ == "__main__":
    engine._Batcher.__call__ = _augmented_batch
    raise SystemExit(dev_nested.main(variant=VARIANT))
