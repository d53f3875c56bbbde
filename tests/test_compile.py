"""torch.compile in the engine: the switch, the "auto" rule, the eager fallback, plain saved state."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import assert_state_equal, sine_trials, small_eegnet
from torch import nn

from eegtransfer.errors import EEGTransferError
from eegtransfer.training import engine

pytestmark = pytest.mark.usefixtures("one_thread")

_model = small_eegnet


def _data(n: int = 41, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return sine_trials(n, seed)


class _FakeCompiled(nn.Module):
    """What ``torch.compile(module)`` returns, minus the compiling: an ``OptimizedModule``-like
    wrapper whose own state dict has ``_orig_mod.`` prefixes; it counts the batch sizes it ran."""

    def __init__(self, module: nn.Module, sizes: list[int]) -> None:
        super().__init__()
        self._orig_mod = module
        self.sizes = sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        return self._orig_mod(x)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "eegtransfer"]


def test_a_failed_compile_warns_once_and_trains_eager(monkeypatch, caplog):
    """torch.compile raising at once (no compiler), or at the first call (an op dynamo cannot
    trace): one warning, then the eager run's very weights."""
    X, y = _data()
    kw = dict(X_val=X[:16], y_val=y[:16], epochs=3, batch_size=16, lr=3e-3, patience=None, seed=3)
    eager = _model()
    h_eager = engine.train(eager, X, y, **kw)
    assert h_eager.compile_seconds is None

    def raises(*args, **kwargs):
        raise RuntimeError("Compiler: cc not found\nsecond line")

    def fails_when_called(module, *args, **kwargs):
        def call(x):
            raise RuntimeError("backend='inductor' raised: an operator it cannot lower")
        return call

    for fake in (raises, fails_when_called):
        monkeypatch.setattr(torch, "compile", fake)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="eegtransfer"):
            model = _model()
            hist = engine.train(model, X, y, compile=True, **kw)
        msgs = _warnings(caplog)
        assert len(msgs) == 1 and "torch.compile failed" in msgs[0] and "training eager" in msgs[0], msgs
        assert "\n" not in msgs[0]
        assert hist.compile_seconds is None
        assert_state_equal(eager.state_dict(), model.state_dict())
        assert [e["train_loss"] for e in hist.epochs] == [e["train_loss"] for e in h_eager.epochs]


def test_compiled_step_runs_full_batches_and_saves_the_plain_module(monkeypatch, tmp_path):
    """Full batches go through the compiled module, the ragged last one eager; the returned model,
    its state dict and the checkpoint are the plain module's (no ``_orig_mod.`` prefix); the
    compiling pass leaves no trace (same weights as an eager run)."""
    sizes: list[int] = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: _FakeCompiled(module, sizes))
    X, y = _data(41)  # 2 full batches of 16 + 9
    kw = dict(X_val=X[:16], y_val=y[:16], epochs=2, batch_size=16, lr=3e-3, patience=None, seed=3)
    eager = _model()
    engine.train(eager, X, y, **kw)
    model = _model()
    ckpt = tmp_path / "run.ckpt"
    hist = engine.train(model, X, y, compile="on", checkpoint=ckpt, **kw)
    assert type(model).__name__ == "EEGNet"
    assert sizes == [16] * (1 + 2 * 2)  # the compiling pass, then 2 full batches per epoch
    assert hist.compile_seconds is not None and hist.compile_seconds >= 0
    assert_state_equal(eager.state_dict(), model.state_dict())
    saved = torch.load(ckpt, weights_only=True)
    for state in (model.state_dict(), saved["model"], saved["best"] or {}):
        assert not [k for k in state if "_orig_mod" in k]
    assert set(saved["model"]) == set(eager.state_dict())


def test_pretrain_compile_bundle_is_the_plain_module(monkeypatch, fake_trials, tmp_path):
    from safetensors.torch import load_file

    from eegtransfer.bundle import WEIGHTS_FILE, Bundle
    from eegtransfer.training.pretraining import pretrain

    sizes: list[int] = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: _FakeCompiled(module, sizes))
    X, meta, recipe = fake_trials
    pop = pretrain(X, meta["label"].to_numpy(), meta, recipe, epochs=1, batch_size=16, device="cpu",
                   seed=0, compile=True)
    assert sizes and set(sizes) == {16}
    assert pop.provenance["compile_seconds"] is not None
    pop.save(tmp_path / "pop")
    keys = set(load_file(tmp_path / "pop" / WEIGHTS_FILE))
    assert keys and not [k for k in keys if "_orig_mod" in k]
    assert type(Bundle.load(tmp_path / "pop").model).__name__ == "EEGNet"
    # "auto" on this small set does not compile
    sizes.clear()
    pop = pretrain(X, meta["label"].to_numpy(), meta, recipe, epochs=1, batch_size=16, device="cpu", seed=0)
    assert sizes == [] and pop.provenance["compile_seconds"] is None


def test_auto_compiles_only_where_the_compile_time_pays():
    pays = engine.compile_pays
    # the demo: Kalunga2016, ~600 training trials of 8 x 512, early stopping after 40 epochs at best
    assert not pays((600, 8, 512), 64, 41, "cpu")
    assert not pays((600, 8, 512), 64, 100, "cpu")
    # BNCI2014_001-shaped pretraining, 2,073 training trials of 22 x 1000: 41 epochs at least
    assert pays((2073, 22, 1000), 64, 41, "cpu")
    assert not pays((2073, 22, 1000), 64, 5, "cpu")
    # the threshold: 1.5e9 values in full batches
    assert pays((1000, 1, 1000), 100, 1500, "cpu") and not pays((1000, 1, 1000), 100, 1499, "cpu")
    assert not pays((50, 22, 1000), 64, 10_000, "cpu")  # no full batch
    assert not pays((2073, 22, 1000), 64, 1000, "cuda")  # not measured on a GPU: eager
    assert not pays((2073, 22, 1000), 64, 1000, "mps")


def test_compile_setting_is_checked_and_auto_stays_eager_on_small_runs(monkeypatch):
    X, y = _data(20)
    with pytest.raises(EEGTransferError, match="compile= must be"):
        engine.train(_model(), X, y, epochs=1, compile="fast")
    called = []
    monkeypatch.setattr(torch, "compile", lambda *a, **k: called.append(1))
    for setting in ("auto", "off", False):
        assert engine.train(_model(), X, y, epochs=1, compile=setting).compile_seconds is None
    assert not called
    assert engine._compile_mode(True) == "on" and engine._compile_mode("OFF") == "off"


def test_scale_lr_is_square_root_scaling():
    from eegtransfer.training.pretraining import scale_lr

    assert scale_lr(3e-3, 64) == pytest.approx(3e-3)
    assert scale_lr(3e-3, 256) == pytest.approx(6e-3)
    assert scale_lr(3e-3, 1024) == pytest.approx(1.2e-2)
    assert scale_lr(1e-3, 32, base_batch_size=128) == pytest.approx(5e-4)
    with pytest.raises(EEGTransferError):
        scale_lr(1e-3, 0)


def test_cli_compile_option():
    from eegtransfer.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["pretrain", "--dataset", "X", "--out", "o"]).compile == "auto"
    assert parser.parse_args(["pretrain", "--dataset", "X", "--out", "o", "--compile", "off"]).compile == "off"
    with pytest.raises(SystemExit):
        parser.parse_args(["pretrain", "--dataset", "X", "--out", "o", "--compile", "yes"])


@pytest.mark.slow  # one real compilation of a tiny EEGNet: ~20-35 s on 2 busy cores
def test_real_compile_trains_like_eager_and_is_reproducible(tmp_path):
    """Without dropout, a compiled run has the eager run's losses and predictions (the compiling
    pass is undone); compiled runs with one seed give the same weights; the state stays plain.

    Weights are not compared one by one with the eager run's: the gradient of EEGNet's first
    batch-norm bias is zero up to rounding (the next batch norm removes any shift), and AdamW
    turns that rounding noise into lr-sized steps whose sign differs between the two.
    """
    X, y = _data(41)
    kw = dict(epochs=3, batch_size=16, lr=1e-3, patience=None, seed=3)
    eager = _model(drop_prob=0.0)
    h_eager = engine.train(eager, X, y, **kw)
    first = _model(drop_prob=0.0)
    h = engine.train(first, X, y, compile=True, checkpoint=tmp_path / "c.ckpt", **kw)
    if h.compile_seconds is None:
        pytest.skip("torch.compile does not work on this machine (the fallback warned)")
    again = _model(drop_prob=0.0)
    engine.train(again, X, y, compile=True, **kw)  # the graph is cached: no second compilation
    assert_state_equal(first.state_dict(), again.state_dict())
    np.testing.assert_allclose([e["train_loss"] for e in h.epochs], [e["train_loss"] for e in h_eager.epochs],
                               rtol=1e-5)
    np.testing.assert_allclose(engine.predict_logits(first, X), engine.predict_logits(eager, X), atol=1e-3)
    assert type(first).__name__ == "EEGNet"
    assert not [k for k in torch.load(tmp_path / "c.ckpt", weights_only=True)["model"] if "_orig_mod" in k]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compile_on_cuda_trains_and_keeps_the_plain_module(tmp_path):
    """On CUDA (bf16 autocast) the compiled step runs, and the state stays the plain module's."""
    X, y = _data(72)
    model = _model()
    hist = engine.train(model, X, y, X_val=X[:16], y_val=y[:16], epochs=3, batch_size=32, lr=3e-3,
                        patience=None, seed=3, device="cuda", compile=True, checkpoint=tmp_path / "c.ckpt")
    assert hist.compile_seconds is not None, "torch.compile failed on CUDA (see the warning)"
    assert engine.model_device(model).type == "cuda" and type(model).__name__ == "EEGNet"
    assert all(np.isfinite(e["train_loss"]) for e in hist.epochs)
    assert not [k for k in torch.load(tmp_path / "c.ckpt", weights_only=True)["model"] if "_orig_mod" in k]
