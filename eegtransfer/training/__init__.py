"""Training: the engine, population pretraining and the pretrain cache.

1. :mod:`~eegtransfer.training.engine` trains a braindecode module on in-memory trials
   (devices resolved once, seeded batches, early stopping, resumable checkpoints) and
   computes the cached trunk features that head adaptation fits on; trials on disk
   (a ``np.memmap``, :class:`~eegtransfer.training.streaming.DiskTrials`) are streamed
   a batch at a time instead.
2. :func:`pretrain` fits a population model with a validation split **by subject** and
   returns a :class:`~eegtransfer.bundle.Bundle`; :func:`pretrain_on_dataset` loads a MOABB
   dataset first.
3. :mod:`~eegtransfer.training.cache` keeps pretrained populations on disk, keyed by data,
   recipe, model, hyper-parameters, seed and versions, so benchmarks train each one once.
"""

from .cache import PretrainCache, cached_pretrain, cached_pretrain_on_dataset
from .engine import History, resolve_device, same_device, train
from .pretraining import pretrain, pretrain_on_dataset
from .streaming import DiskTrials

__all__ = ["DiskTrials", "History", "PretrainCache", "cached_pretrain", "cached_pretrain_on_dataset", "pretrain",
           "pretrain_on_dataset", "resolve_device", "same_device", "train"]
