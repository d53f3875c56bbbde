"""The pretrain cache: keys, hits, rebuilds of corrupt entries, and the lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import eegtransfer.pretrain as pretrain_mod
from eegtransfer.cache import (
    PretrainCache,
    cache_key,
    cached_pretrain,
    default_cache_dir,
    file_lock,
    pretrain_spec,
)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One torch thread per training: the CPUs are shared (engine.configure_threads reads it)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def counted(monkeypatch):
    """Count calls to pretrain() (what the cache must avoid)."""
    calls = []
    real = pretrain_mod.pretrain

    def spy(*a, **kw):
        calls.append(kw.get("seed"))
        return real(*a, **kw)

    monkeypatch.setattr(pretrain_mod, "pretrain", spy)
    return calls


def _small(fake_trials):
    X, meta, recipe = fake_trials
    keep = (meta["subject"].isin(["2", "3"]) & (meta["run"] == meta["run"].iloc[0])).to_numpy()
    return X[keep], meta["label"][keep].to_numpy(), meta[keep].reset_index(drop=True), recipe


def test_second_run_is_a_hit_and_does_not_train(fake_trials, tmp_path, counted):
    X, y, meta, recipe = _small(fake_trials)
    kw = dict(cache_dir=tmp_path, model="EEGNet", epochs=1, seed=0, device="cpu")
    a, hit_a = cached_pretrain(X, y, meta, recipe, **kw)
    b, hit_b = cached_pretrain(X, y, meta, recipe, **kw)
    assert (hit_a, hit_b) == (False, True) and len(counted) == 1
    for k, v in a.model.state_dict().items():
        assert np.array_equal(v.numpy(), b.model.state_dict()[k].numpy()), k
    assert b.provenance["cache_key"] == a.provenance["cache_key"]
    assert (tmp_path / "pretrain" / a.provenance["cache_key"] / "cache_spec.json").is_file()
    # anything that changes the weights changes the key: seed, hyper-parameters, data
    _, hit = cached_pretrain(X, y, meta, recipe, **{**kw, "seed": 1})
    assert not hit and len(counted) == 2
    _, hit = cached_pretrain(X[:-3], y[:-3], meta[:-3], recipe, **kw)
    assert not hit and len(counted) == 3
    assert len(PretrainCache(tmp_path).keys()) == 3


def test_truncated_entry_is_rebuilt(fake_trials, tmp_path, counted):
    X, y, meta, recipe = _small(fake_trials)
    kw = dict(cache_dir=tmp_path, epochs=1, seed=0, device="cpu")
    a, _ = cached_pretrain(X, y, meta, recipe, **kw)
    weights = tmp_path / "pretrain" / a.provenance["cache_key"] / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # a half-written entry
    cache = PretrainCache(tmp_path)
    assert cache.get(a.provenance["cache_key"]) is None and cache.rebuilt == 1
    b, hit = cached_pretrain(X, y, meta, recipe, **kw)
    assert not hit and len(counted) == 2
    assert weights.stat().st_size == len(data)
    c, hit = cached_pretrain(X, y, meta, recipe, **kw)
    assert hit and len(counted) == 2


def test_concurrent_requests_train_once(fake_trials, tmp_path, counted):
    X, y, meta, recipe = _small(fake_trials)
    results = []

    def worker():
        results.append(cached_pretrain(X, y, meta, recipe, cache_dir=tmp_path, epochs=1, device="cpu")[1])

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True] and len(counted) == 1


def test_lock_excludes_another_process(tmp_path):
    lock = tmp_path / "entry.lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from eegtransfer.cache import file_lock
        with file_lock(Path({str(lock)!r})):
            print("locked", flush=True)
            time.sleep(1.5)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        with file_lock(lock):
            waited = time.perf_counter() - t0
    finally:
        holder.wait(timeout=30)
    assert waited > 0.8, waited


def test_keys_and_folder(tmp_path, monkeypatch, fake_recipe):
    spec = pretrain_spec(data={"dataset": "X", "subjects": [1, 2]}, recipe=fake_recipe, model="EEGNet",
                         model_kwargs=None, hyperparameters={"epochs": 3, "lr": 1e-3}, seed=0)
    same = pretrain_spec(data={"subjects": [1, 2], "dataset": "X"}, recipe=fake_recipe.to_dict(),
                         model="EEGNet", model_kwargs={}, hyperparameters={"lr": 1e-3, "epochs": 3}, seed=0)
    assert cache_key(spec) == cache_key(same) and len(cache_key(spec)) == 64
    assert cache_key(spec) != cache_key({**spec, "seed": 1})
    assert spec["eegtransfer_version"]
    monkeypatch.setenv("EEGTRANSFER_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    assert default_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("EEGTRANSFER_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "eegtransfer")
    with pytest.raises(ValueError, match="hex"):
        PretrainCache(tmp_path).path("../escape")
