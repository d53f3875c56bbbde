"""The training engine against a plain torch loop, checkpoint resume, and cached head features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import N_CLASSES, assert_state_equal, sine_trials, small_eegnet
from torch import nn

from eegtransfer.errors import EEGTransferError
from eegtransfer.models import HEAD
from eegtransfer.training import engine

pytestmark = pytest.mark.usefixtures("one_thread")

_data, _model = sine_trials, small_eegnet


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _reference_loop(model: nn.Module, X: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
                    lr: float, seed: int) -> list[float]:
    """Textbook torch training: seeded shuffle per epoch, AdamW, cross-entropy."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y, dtype=torch.long)
    losses = []
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(yt), generator=gen)
        total, seen = 0.0, 0
        for i in range(0, len(yt), batch_size):
            idx = perm[i:i + batch_size]
            if len(idx) < 2:
                continue
            loss = nn.functional.cross_entropy(model(Xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        losses.append(total / seen)
    model.eval()
    return losses


def test_engine_matches_a_plain_torch_loop():
    X, y = _data(41)  # 41 = 2 full batches of 16 + 9: a ragged last batch
    ours, ref = _model(), _model()
    hist = engine.train(ours, X, y, epochs=5, batch_size=16, lr=3e-3, patience=None, seed=3, device="cpu")
    ref_losses = _reference_loop(ref, X, y, epochs=5, batch_size=16, lr=3e-3, seed=3)
    np.testing.assert_allclose([e["train_loss"] for e in hist.epochs], ref_losses, rtol=1e-5, atol=1e-6)
    assert ref_losses[-1] < ref_losses[0]  # it learns: the comparison is not between two no-ops
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert len(hist.epochs) == 5 and all(e["seconds"] > 0 for e in hist.epochs)
    assert not any(p.grad is None for p in ours.parameters())  # parameters were trained


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    X, y = _data(40)
    Xv, yv = _data(16, seed=1)
    kw = dict(X_val=Xv, y_val=yv, batch_size=16, lr=3e-3, patience=50, seed=5, device="cpu")
    full = _model()
    h_full = engine.train(full, X, y, epochs=6, **kw)

    ckpt = tmp_path / "run.ckpt"
    part = _model()
    engine.train(part, X, y, epochs=3, checkpoint=ckpt, **kw)  # "interrupted" after 3 epochs
    resumed = _model()  # a new process would start from a freshly built model
    h_res = engine.train(resumed, X, y, epochs=6, checkpoint=ckpt, **kw)
    assert_state_equal(full.state_dict(), resumed.state_dict())
    assert [e["train_loss"] for e in h_res.epochs] == [e["train_loss"] for e in h_full.epochs]
    assert h_res.best_epoch == h_full.best_epoch


def test_resume_after_a_crash_mid_epoch(tmp_path):
    X, y = _data(48)
    kw = dict(batch_size=16, lr=3e-3, patience=None, seed=2, device="cpu")
    full = _model()
    engine.train(full, X, y, epochs=4, **kw)

    crashing = _model()
    calls = {"n": 0}

    def crash(module, inputs):
        calls["n"] += 1
        if calls["n"] == 8:  # the 2nd batch of epoch 3: epochs 0-1 are saved, epoch 2 is lost
            raise KeyboardInterrupt

    handle = crashing.register_forward_pre_hook(crash)
    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        engine.train(crashing, X, y, epochs=4, checkpoint=ckpt, **kw)
    handle.remove()
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    resumed = _model()
    engine.train(resumed, X, y, epochs=4, checkpoint=ckpt, **kw)
    assert_state_equal(full.state_dict(), resumed.state_dict())


def test_checkpoint_of_another_run_is_refused_and_early_stop_is_kept(tmp_path):
    X, y = _data(32)
    ckpt = tmp_path / "run.ckpt"
    engine.train(_model(), X, y, epochs=2, batch_size=16, patience=None, checkpoint=ckpt)
    with pytest.raises(EEGTransferError, match="different training run"):
        engine.train(_model(), X, y, epochs=3, batch_size=8, patience=None, checkpoint=ckpt)

    # a run that stopped early does not train on when resumed
    Xv, yv = _data(12, seed=4)
    ckpt2 = tmp_path / "stopped.ckpt"
    m = _model()
    h = engine.train(m, X, y, X_val=Xv, y_val=yv, epochs=40, lr=0.5, patience=1, checkpoint=ckpt2)
    assert h.stopped_early
    again = _model()
    h2 = engine.train(again, X, y, X_val=Xv, y_val=yv, epochs=40, lr=0.5, patience=1, checkpoint=ckpt2)
    assert len(h2.epochs) == len(h.epochs) and h2.stopped_early
    assert_state_equal(m.state_dict(), again.state_dict())


def test_cached_head_features_train_the_same_head_as_the_frozen_trunk():
    X, y = _data(40)
    pre = _model()
    engine.train(pre, X, y, epochs=2, batch_size=16, patience=None)  # a non-trivial trunk
    through, cached = _model(), _model()
    through.load_state_dict(pre.state_dict())
    cached.load_state_dict(pre.state_dict())
    head_names = [n for n, _ in through.named_parameters() if n.startswith(HEAD + ".")]
    kw = dict(epochs=6, batch_size=16, lr=1e-2, patience=None, seed=9, device="cpu")

    engine.train(through, X, y, trainable=head_names, **kw)
    feats = engine.head_inputs(cached, X)
    assert not feats.is_inference() and feats.shape[0] == len(X)
    engine.train(getattr(cached, HEAD), feats, y, **kw)

    trunk = [k for k in pre.state_dict() if not k.startswith(HEAD + ".")]
    assert_state_equal(pre.state_dict(), through.state_dict(), trunk)  # frozen, BN stats included
    for k in head_names:
        torch.testing.assert_close(cached.state_dict()[k], through.state_dict()[k], rtol=1e-4, atol=1e-5)
        assert not torch.equal(pre.state_dict()[k], through.state_dict()[k])  # the head did change


def test_configure_threads(monkeypatch):
    assert engine.configure_threads() == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not-a-number")
    assert engine.configure_threads() == engine.available_cpus() == torch.get_num_threads()
    assert 1 <= engine.available_cpus() <= (torch.multiprocessing.cpu_count() or 1)
    assert engine.configure_threads(1) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pinned_host_batches_match_device_batches():
    X, y = _data(40)
    a, b = _model(), _model()
    kw = dict(epochs=2, batch_size=16, patience=None, seed=0, device="cuda")
    ha = engine.train(a, X, y, data_on_device=True, **kw)
    hb = engine.train(b, X, y, data_on_device=False, **kw)
    assert [e["train_loss"] for e in ha.epochs] == pytest.approx([e["train_loss"] for e in hb.epochs],
                                                                  rel=1e-3)


@pytest.fixture
def fake_gpus(monkeypatch):
    """Two CUDA devices, current one 0, as far as device resolution can tell (no kernels run)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_resolve_device_on_the_cpu():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        want = "mps"
    assert engine.resolve_device("auto").type == want == engine.resolve_device(None).type
    assert engine.resolve_device("cpu") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "tpu"):
        with pytest.raises(EEGTransferError, match=f"device='{bad}'"):
            engine.resolve_device(bad)


def test_cuda_resolves_with_its_index_and_compares_by_type_and_index(fake_gpus):
    # The P0 crash: torch.device("cuda") != tensor.device ("cuda:0"), so data already on the
    # GPU was staged through pinned host buffers. Resolved devices always carry the index.
    assert engine.resolve_device("cuda") == torch.device("cuda", 0)
    assert engine.resolve_device("auto") == torch.device("cuda", 0)
    assert engine.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert engine.same_device("cuda", torch.device("cuda", 0))
    assert engine.same_device(torch.device("cuda", 0), "cuda")
    assert not engine.same_device("cuda:0", "cuda:1")
    assert not engine.same_device("cuda:0", "cpu")
    assert engine.same_device("cpu", torch.device("cpu"))
    with pytest.raises(EEGTransferError, match=r"device='cuda:2'.*2 CUDA device"):
        engine.resolve_device("cuda:2")


def test_cuda_is_refused_by_name_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EEGTransferError, match="device='cuda' requested but no CUDA GPU"):
        engine.resolve_device("cuda")


def test_predictions_run_where_the_model_is_and_autotuning_is_restored():
    X, y = _data(24)
    m = _model()
    before = torch.backends.cudnn.benchmark
    engine.train(m, X, y, epochs=1, batch_size=8, patience=None, device="cpu", autotune=True)
    assert torch.backends.cudnn.benchmark == before  # never left on for later, smaller runs
    assert engine.model_device(m) == torch.device("cpu")
    logits = engine.predict_logits(m, X)  # device=None: no move
    assert logits.shape == (24, N_CLASSES) and engine.model_device(m) == torch.device("cpu")
    feats = engine.head_inputs(m, X)
    assert feats.device == torch.device("cpu") and not feats.is_inference()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_plain_cuda_name_keeps_device_data_on_the_device():
    X, y = _data(40)
    Xt = torch.as_tensor(X).to("cuda")
    batches = engine._Batcher(Xt, torch.as_tensor(y).to("cuda"), engine.resolve_device("cuda"), 16)
    assert not batches.staged
    m = _model()
    hist = engine.train(m, Xt, y, epochs=2, batch_size=16, patience=None, device="cuda")
    assert len(hist.epochs) == 2 and engine.model_device(m).type == "cuda"
    assert engine.predict_logits(m, X).shape == (40, N_CLASSES)


# --- checkpoints are tied to their data and settings --------------------------------

def test_checkpoint_of_other_data_or_settings_is_refused_by_name(tmp_path):
    X, y = _data(32)
    ckpt = tmp_path / "run.ckpt"
    kw = dict(epochs=2, batch_size=16, patience=None, checkpoint=ckpt)
    engine.train(_model(), X, y, fingerprint_extra={"align": False, "subjects": ["1", "2"]}, **kw)
    other, _ = _data(32, seed=9)  # another subject set of the same size
    with pytest.raises(EEGTransferError, match=r"different training run \(the training data \(X, y\) differ"):
        engine.train(_model(), other, y, fingerprint_extra={"align": False, "subjects": ["1", "2"]}, **kw)
    Xv, yv = _data(8, seed=3)
    with pytest.raises(EEGTransferError, match="the validation data differ"):
        engine.train(_model(), X, y, X_val=Xv, y_val=yv,
                     fingerprint_extra={"align": False, "subjects": ["1", "2"]}, **kw)
    with pytest.raises(EEGTransferError, match=r"align \(checkpoint False, now True\)"):
        engine.train(_model(), X, y, fingerprint_extra={"align": True, "subjects": ["1", "2"]}, **kw)
    # the same run resumes (here: nothing left to do)
    h = engine.train(_model(), X, y, fingerprint_extra={"subjects": ["1", "2"], "align": False}, **kw)
    assert [e["epoch"] for e in h.epochs] == [0, 1]


def test_data_digest_is_stable_and_samples_large_arrays():
    X, y = _data(16)
    assert engine.data_digest(X, y) == engine.data_digest(torch.as_tensor(X), list(y))
    assert engine.data_digest(X, y) != engine.data_digest(X[::-1].copy(), y)
    big = np.zeros((64, 64, 1024), np.float32)  # 16 MiB: sampled when full_below is small
    d0 = engine.data_digest(big, np.zeros(64), full_below=1 << 20)
    big[0, 0, 0] = 1.0  # the first block is always in the sample
    assert engine.data_digest(big, np.zeros(64), full_below=1 << 20) != d0


def test_unreadable_checkpoint_is_a_one_line_error(tmp_path):
    X, y = _data(16)
    ckpt = tmp_path / "run.ckpt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(EEGTransferError, match="checkpoint .*run.ckpt is unreadable") as err:
        engine.train(_model(), X, y, epochs=1, checkpoint=ckpt)
    assert "\n" not in str(err.value)
    assert ckpt.read_bytes() == b"not a checkpoint"  # the user's file is left alone


def test_pretrain_checkpoint_remembers_alignment_and_subjects(fake_trials, tmp_path):
    from eegtransfer.training.pretraining import pretrain

    X, meta, recipe = fake_trials
    one_run = (meta["run"] == meta["run"].iloc[0]).to_numpy()
    X, meta = X[one_run], meta[one_run].reset_index(drop=True)
    first, other = meta["subject"].isin(["1", "2", "3"]).to_numpy(), meta["subject"].isin(["2", "3", "4"]).to_numpy()
    assert first.sum() == other.sum()  # same size: the old fingerprint could not tell them apart
    ckpt = tmp_path / "pop.ckpt"
    kw = dict(model="EEGNet", epochs=1, device="cpu", seed=0, checkpoint=str(ckpt))
    pretrain(X[first], meta["label"][first].to_numpy(), meta[first], recipe, **kw)
    with pytest.raises(EEGTransferError, match=r"subjects \(checkpoint \['1', '2', '3'\], now \['2', '3', '4'\]\)"):
        pretrain(X[other], meta["label"][other].to_numpy(), meta[other], recipe, **kw)
    with pytest.raises(EEGTransferError, match=r"align \(checkpoint False, now True\)"):
        pretrain(X[first], meta["label"][first].to_numpy(), meta[first], recipe, align=True, **kw)


def test_monitor_accuracy_keeps_the_epoch_that_classifies_not_the_flat_loss():
    """The chance-level trap: validation loss lowest at a near-uniform epoch, accuracy highest later."""
    curve = [(1.385, 0.25), (1.42, 0.45), (1.39, 0.60), (1.50, 0.55)]
    kept = {}
    for monitor in ("val_loss", "val_acc"):
        stop, model = engine._EarlyStopping(patience=10, monitor=monitor), _model()
        best = [e for e, (loss, acc) in enumerate(curve) if stop.update(loss, e, model, acc)]
        kept[monitor] = best[-1]
    assert kept == {"val_loss": 0, "val_acc": 2}
    X, y = _data(20)
    with pytest.raises(EEGTransferError, match="monitor= must be"):
        engine.train(_model(), X, y, X_val=X, y_val=y, epochs=1, monitor="val_f1")


def test_pretraining_keeps_its_most_accurate_validation_epoch(fake_trials):
    from eegtransfer.training.pretraining import pretrain

    X, meta, recipe = fake_trials
    pop = pretrain(X, meta["label"].to_numpy(), meta, recipe, epochs=4, patience=10, device="cpu", seed=0)
    accs = [e["val_acc"] for e in pop.history["epochs"]]
    assert pop.metrics["val_acc"] == max(accs)
    assert pop.provenance["hyperparameters"]["monitor"] == "val_acc"
