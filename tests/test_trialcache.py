"""Populations larger than memory: the on-disk trial cache and training streamed from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import eegtransfer.io.moabb as moabb_mod
from eegtransfer.io import TrialCache, load_dataset
from eegtransfer.training import engine
from eegtransfer.training.streaming import DiskTrials

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def preprocessed(monkeypatch):
    """Count the subjects preprocessed (what a cache hit must not do)."""
    calls = []
    real = moabb_mod.iter_subject_trials

    def spy(*a, **kw):
        for X, meta in real(*a, **kw):
            calls.append(meta["subject"].iloc[0])
            yield X, meta

    monkeypatch.setattr(moabb_mod, "iter_subject_trials", spy)
    return calls


def test_cached_trials_equal_the_in_memory_ones_and_are_written_once(fake_dataset, fake_recipe, fake_trials,
                                                                     tmp_path, preprocessed):
    X, meta, _ = fake_trials  # subjects 1-4, in memory
    report: dict = {}
    Xc, mc, _ = load_dataset(fake_dataset, [1, 2, 3, 4], fake_recipe, cache=tmp_path, report=report)
    assert isinstance(Xc, np.memmap) and not Xc.flags.writeable and Xc.dtype == np.float32
    assert np.array_equal(Xc, X)
    pd.testing.assert_frame_equal(mc, meta)
    assert preprocessed == ["1", "2", "3", "4"]  # one subject at a time
    assert report["dataset"] == "FakeDataset" and report["source_sfreq"] == 128.0

    again: dict = {}
    X2, m2, _ = load_dataset(fake_dataset, [1, 2, 3, 4], fake_recipe, cache=tmp_path, report=again)
    assert preprocessed == ["1", "2", "3", "4"]  # a hit: nothing preprocessed
    assert np.array_equal(X2, X) and again == report
    pd.testing.assert_frame_equal(m2, meta)
    # the subjects' order is the trials' order: another order is another entry
    X3, m3, _ = load_dataset(fake_dataset, [2, 1], fake_recipe, cache=tmp_path)
    first = meta["subject"].isin(["2", "1"]).to_numpy()
    order = np.argsort(meta["subject"][first].map({"2": 0, "1": 1}).to_numpy(), kind="stable")
    assert np.array_equal(X3, X[first][order]) and len(TrialCache(tmp_path).keys()) == 2
    assert not list((tmp_path / "trials").glob("*.lock"))


def test_cached_kalunga_subjects_equal_the_in_memory_ones(mne_data, tmp_path):
    X, meta, recipe = load_dataset("Kalunga2016", [7, 3])  # subject 7's copied run removed
    Xc, mc, rc = load_dataset("Kalunga2016", [7, 3], cache=tmp_path)
    assert rc == recipe and isinstance(Xc, np.memmap) and Xc.shape == X.shape == (len(meta), 8, 512)
    assert np.array_equal(Xc, X)
    pd.testing.assert_frame_equal(mc, meta)
    info = json.loads((TrialCache(tmp_path).path(TrialCache(tmp_path).keys()[0]) / "trials_spec.json").read_text())
    assert info["trials_per_subject"] == {"7": int((meta["subject"] == "7").sum()),
                                          "3": int((meta["subject"] == "3").sum())}
    assert info["spec"]["data"]["subjects"] == [7, 3] and info["spec"]["recipe"] == recipe.to_dict()


def _chunks(n_chunks: int, die_after: int | None = None):
    rng = np.random.default_rng(0)
    for i in range(n_chunks):
        if die_after is not None and i == die_after:
            raise RuntimeError("preprocessing failed")
        yield (rng.standard_normal((5, 2, 8)).astype(np.float32),
               pd.DataFrame({"subject": [str(i)] * 5, "onset": np.arange(5) / 3, "label": list("abcab")}))


def test_a_failed_or_killed_writer_leaves_no_entry(tmp_path):
    cache, spec = TrialCache(tmp_path), {"kind": "trials", "test": 1}
    with pytest.raises(RuntimeError, match="preprocessing failed"):
        cache.get_or_write(spec, lambda: _chunks(3, die_after=2))
    assert cache.keys() == [] and not list(cache.folder.iterdir())  # no entry, no temporary folder, no lock

    # a process killed after writing 2 of 3 chunks, holding the lock
    code = textwrap.dedent(f"""
        import os
        import numpy as np, pandas as pd
        from eegtransfer.io.trialcache import TrialCache

        def dying():
            for i in range(3):
                if i == 2:
                    os._exit(9)
                yield np.zeros((5, 2, 8), np.float32), pd.DataFrame({{"subject": [str(i)] * 5}})

        TrialCache({str(tmp_path)!r}).get_or_write({spec!r}, dying)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 9, r.stderr[-2000:]
    assert cache.keys() == [] and list(cache.folder.glob(".*.tmp-*")) and list(cache.folder.glob("*.lock"))

    X, meta, info, hit = cache.get_or_write(spec, lambda: _chunks(3))  # breaks the dead writer's lock
    assert not hit and X.shape == (15, 2, 8) and info["trials_per_subject"] == {"0": 5, "1": 5, "2": 5}
    assert np.array_equal(X, np.concatenate([x for x, _ in _chunks(3)]))
    assert meta["onset"].tolist() == (np.arange(5) / 3).tolist() * 3  # floats round-trip exactly
    assert sorted(p.name for p in cache.folder.iterdir()) == cache.keys()  # the leftovers are gone
    assert cache.get_or_write(spec, lambda: _chunks(0))[3]  # a hit
    empty = (np.zeros((0, 2, 8), np.float32), pd.DataFrame({"subject": [], "onset": [], "label": []}))
    X2, meta2, _, _ = cache.get_or_write({**spec, "test": 3}, lambda: [empty, *_chunks(2)])
    assert np.array_equal(X2, X[:10]) and len(meta2) == 10


def test_an_unreadable_entry_is_rebuilt(tmp_path):
    cache, spec = TrialCache(tmp_path), {"kind": "trials", "test": 2}
    X, *_ = cache.get_or_write(spec, lambda: _chunks(2))
    path = Path(X.filename)
    del X
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 100)
    X, _, _, hit = cache.get_or_write(spec, lambda: _chunks(2))
    assert not hit and cache.rebuilt == 1 and X.shape == (10, 2, 8)


def _problem(tmp_path: Path) -> tuple[np.ndarray, np.ndarray, np.memmap]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    X = rng.standard_normal((90, 4, 128)).astype(np.float32)
    X[:, :2] += np.sin(2 * np.pi * (6 + 6 * y)[:, None, None] * np.arange(128) / 128.0).astype(np.float32)
    np.save(tmp_path / "X.npy", X)
    return X, y, np.load(tmp_path / "X.npy", mmap_mode="r")


def _fit(X, y, Xv, yv, **kw):
    from eegtransfer.models import build_model

    torch.manual_seed(1)
    net = build_model("EEGNet", 4, 3, 128, 128.0)
    hist = engine.train(net, X, y, X_val=Xv, y_val=yv, epochs=3, batch_size=16, lr=3e-3, patience=None,
                        seed=3, device="cpu", **kw)
    return net, [(e["train_loss"], e["val_loss"], e["val_acc"]) for e in hist.epochs]


def test_training_from_a_memmap_gives_the_losses_of_training_from_memory(tmp_path, monkeypatch):
    X, y, Xm = _problem(tmp_path)
    reads = []
    real_read = DiskTrials.read

    def spy(self, positions, out=None):
        reads.append(len(positions))
        return real_read(self, positions, out)

    monkeypatch.setattr(DiskTrials, "read", spy)
    net_a, mem = _fit(X[:60], y[:60], X[60:], y[60:])
    assert not reads  # in memory: nothing streamed
    net_b, disk = _fit(Xm[:60], y[:60], Xm[60:], y[60:])
    np.testing.assert_allclose(disk, mem, rtol=1e-6)
    for k, v in net_a.state_dict().items():
        torch.testing.assert_close(net_b.state_dict()[k], v, rtol=1e-6, atol=1e-7, msg=k)
    # batches, not the data set: 4 training batches (16, 16, 16, 12) and one validation batch per epoch
    assert reads == [16, 16, 16, 12, 30] * 3
    # a view of some rows (a validation split by subject) and a process group of one
    import torch.distributed as dist

    rows = np.r_[60:90, 0:60]
    view = DiskTrials(Xm).subset(rows)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        _, grouped = _fit(view.subset(np.arange(30, 90)), y[:60], view.subset(np.arange(30)), y[60:],
                          distributed=True)
    finally:
        dist.destroy_process_group()
    np.testing.assert_allclose(grouped, mem, rtol=1e-6)
    # stream=True reads an in-memory array the same way; the checkpoint digest is the same bytes
    _, streamed = _fit(X[:60], y[:60], X[60:], y[60:], stream=True)
    np.testing.assert_allclose(streamed, mem, rtol=1e-6)
    for full_below in (1 << 26, 1000):  # whole, and sampled blocks
        assert (engine.data_digest(view, y, full_below=full_below, n_blocks=7, block=999)
                == engine.data_digest(X[rows], y, full_below=full_below, n_blocks=7, block=999))


def test_the_compiling_pass_reads_a_streamed_batch_too(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda module, **kw: module)  # the pass, without compiling
    X, y, Xm = _problem(tmp_path)
    _, mem = _fit(X[:60], y[:60], X[60:], y[60:])
    _, disk = _fit(Xm[:60], y[:60], Xm[60:], y[60:], compile="on")
    np.testing.assert_allclose(disk, mem, rtol=1e-6)


def test_pretraining_streams_a_memmap_with_alignment(fake_trials, tmp_path):
    from eegtransfer.training.pretraining import pretrain

    X, meta, recipe = fake_trials
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    kw = dict(model="EEGNet", epochs=2, device="cpu", seed=0, align=True)
    a = pretrain(X, meta["label"].to_numpy(), meta, recipe, **kw)
    b = pretrain(Xm, meta["label"].to_numpy(), meta, recipe, **kw)
    curve = [[e[k] for k in ("train_loss", "val_loss")] for e in a.history["epochs"]]
    np.testing.assert_allclose([[e[k] for k in ("train_loss", "val_loss")] for e in b.history["epochs"]],
                               curve, rtol=1e-6)
    # aligned as read: the trials of align_per_group, one subject's reference at a time
    from eegtransfer.adaptation.alignment import align_per_group

    aligned = DiskTrials(Xm).aligned(meta["subject"].to_numpy())
    np.testing.assert_allclose(aligned[::7], align_per_group(X, meta["subject"].to_numpy())[::7], rtol=1e-6,
                               atol=1e-6)


def test_training_does_not_load_the_memmap(tmp_path):
    """Peak resident memory of a fresh process training on a 128 MB memmap grows by a few batches."""
    code = textwrap.dedent(f"""
        import json, numpy as np, torch
        from torch import nn
        from eegtransfer.training.engine import train

        def peak():
            status = open("/proc/self/status").read().split(chr(10))
            return {{k: int(line.split()[1]) / 1024 for line in status for k in ("VmHWM", "RssAnon", "RssFile")
                     if line.startswith(k + ":")}}

        from pathlib import Path
        import pandas as pd
        from eegtransfer.io.trialcache import write_trials

        folder = Path({str(tmp_path)!r})  # written without mapping it: appended a chunk at a time
        write_trials(folder, ((np.random.default_rng(i).standard_normal((512, 8, 512), dtype=np.float32),
                               pd.DataFrame({{"subject": [str(i)] * 512}})) for i in range(16)))
        X = np.load(folder / "X.npy", mmap_mode="r")
        y = np.arange(len(X)) % 2
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(8 * 512, 2))
        train(model, X[:64], y[:64], epochs=1, patience=None)  # warm-up: allocator, threads
        before = peak()
        train(model, X, y, X_val=X[:1024], y_val=y[:1024], epochs=1, patience=None)
        print(json.dumps({{"before": before, "after": peak()}}))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    # 128 MB of trials were read; the peak grew by at most a few 1 MB batches (and the page
    # cache, not this process, holds what was read: no file pages mapped either)
    assert m["after"]["VmHWM"] - m["before"]["VmHWM"] < 24, m
    assert m["after"]["RssFile"] - m["before"]["RssFile"] < 24, m


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_streamed_cuda_batches_match_pinned_host_batches(tmp_path):
    """On CUDA the read-ahead buffers are pinned and copied without blocking; same batches as from memory."""
    X, y, Xm = _problem(tmp_path)
    kw = dict(epochs=3, batch_size=16, lr=3e-3, patience=None, seed=3, device="cuda")
    from eegtransfer.models import build_model

    curves = []
    for data, extra in ((X, {"data_on_device": False}), (Xm, {})):
        torch.manual_seed(1)
        net = build_model("EEGNet", 4, 3, 128, 128.0)
        hist = engine.train(net, data[:60], y[:60], X_val=data[60:], y_val=y[60:], **kw, **extra)
        curves.append([(e["train_loss"], e["val_loss"]) for e in hist.epochs])
    np.testing.assert_allclose(curves[1], curves[0], rtol=1e-3)
