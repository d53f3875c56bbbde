"""The pretrain cache: keys, hits, rebuilds of corrupt entries, and the lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import eegtransfer.training.pretraining as pretrain_mod
from eegtransfer.training.cache import (
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
        from eegtransfer.training.cache import file_lock
        with file_lock(Path({str(lock)!r})):
            print("locked", flush=True)
            time.sleep(1.5)
        """)], stdout=subprocess.PIPE, text=True)
    waited = _waited_for(holder, lock)
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


# --- only proven corruption deletes; entries appear whole; a lock that needs no flock ---

def test_an_error_that_is_not_corruption_keeps_the_entry(fake_trials, tmp_path, monkeypatch):
    import eegtransfer.bundle as bundle_mod

    X, y, meta, recipe = _small(fake_trials)
    a, _ = cached_pretrain(X, y, meta, recipe, cache_dir=tmp_path, epochs=1, device="cpu")
    key = a.provenance["cache_key"]

    def broken_install(*args, **kwargs):
        raise ImportError("libtorchaudio.so: cannot open shared object file")

    monkeypatch.setattr(bundle_mod.Bundle, "load", classmethod(broken_install))
    cache = PretrainCache(tmp_path)
    with pytest.raises(ImportError, match="libtorchaudio"):
        cache.get(key)
    assert cache.keys() == [key] and cache.rebuilt == 0


def test_entry_is_published_whole_with_its_spec_and_versions(fake_trials, tmp_path, monkeypatch):
    import json
    import os

    import eegtransfer.bundle as bundle_mod

    X, y, meta, recipe = _small(fake_trials)
    seen = []
    real_rename = os.rename

    def rename(src, dst):  # what the entry folder holds at the moment it appears
        if str(dst).endswith(tuple("0123456789abcdef")) and "pretrain" in str(dst):
            seen.append(sorted(p.name for p in os.scandir(src)))
        return real_rename(src, dst)

    monkeypatch.setattr(bundle_mod.os, "rename", rename)
    a, _ = cached_pretrain(X, y, meta, recipe, cache_dir=tmp_path, epochs=1, device="cpu")
    assert seen == [["bundle.json", "cache_spec.json", "weights.safetensors"]]
    spec = json.loads((tmp_path / "pretrain" / a.provenance["cache_key"] / "cache_spec.json").read_text())
    assert spec["device_type"] == "cpu" and spec["torch_version"] and spec["braindecode_version"]


def _lock_holder_code(lock, *, no_flock):
    patch = "import fcntl; fcntl.flock = lambda *a: None\n" if no_flock else ""
    return patch + textwrap.dedent(f"""
        import time
        from pathlib import Path
        from eegtransfer.training.cache import file_lock
        with file_lock(Path({str(lock)!r})):
            print("locked", flush=True)
            time.sleep(1.5)
        """)


def test_lock_holds_where_flock_does_nothing(tmp_path, monkeypatch):
    """A network file system where flock is a no-op (or local only): the lock file still excludes."""
    import fcntl

    monkeypatch.setattr(fcntl, "flock", lambda *a: None)
    lock = tmp_path / "entry.lock"
    holder = subprocess.Popen([sys.executable, "-c", _lock_holder_code(lock, no_flock=True)],
                              stdout=subprocess.PIPE, text=True)
    waited = _waited_for(holder, lock)
    assert waited > 0.8, waited
    assert not lock.exists()  # released


def test_lock_names_its_holder_and_stale_locks_are_broken(tmp_path):
    import json
    import os
    import socket

    lock = tmp_path / "entry.lock"
    with file_lock(lock):
        held = json.loads(lock.read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname() and held["time"]
    # a holder on another host that is still refreshing its lock: wait, then a one-line error
    lock.write_text(json.dumps({"pid": 1, "host": "worker-7", "time": "2026-01-01T00:00:00"}))
    with pytest.raises(ValueError, match=r"entry.lock: still locked after 0.3 s by pid 1 on worker-7"):
        with file_lock(lock, timeout=0.3):
            pass
    # ... not refreshed for longer than stale_after: broken
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with file_lock(lock, timeout=5, stale_after=600):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    # a dead process of this host: broken at once, whatever its age
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    lock.write_text(json.dumps({"pid": int(dead), "host": socket.gethostname(), "time": "now"}))
    t0 = time.perf_counter()
    with file_lock(lock, timeout=5):
        pass
    assert time.perf_counter() - t0 < 2 and not lock.exists()


def _waited_for(holder: subprocess.Popen, lock: Path) -> float:
    """Seconds this process waited for ``lock`` while ``holder`` (printing "locked") held it."""
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        with file_lock(lock):
            return time.perf_counter() - t0
    finally:
        holder.wait(timeout=30)
