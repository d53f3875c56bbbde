"""Under fault and under load: pretraining killed at any point, concurrent calibrations.

A killed process (SIGKILL: no ``finally``, no ``atexit``) must leave nothing
that a later run would read as a complete file: the rerun resumes or restarts
and ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

CHANS = ["C3", "Cz", "C4", "Pz"]

# A tiny population: 4 subjects x 12 trials, 4 channels x 64 samples, 3 classes.
PRETRAIN = textwrap.dedent("""
    import numpy as np, pandas as pd
    from eegtransfer.preprocessing import Recipe
    from eegtransfer.training.pretraining import pretrain

    def population(out, ckpt, epochs=3):
        recipe = Recipe(channels=["C3", "Cz", "C4", "Pz"], sfreq=64.0, tmin=0.0, tmax=1.0, l_freq=2.0,
                        h_freq=30.0, notch=[])
        rng = np.random.default_rng(0)
        y = np.tile(["a", "b", "c"], 16)
        X = rng.standard_normal((48, 4, recipe.n_times)).astype(np.float32)
        X[:, 0] += (np.arange(48) % 3)[:, None].astype(np.float32)
        meta = pd.DataFrame({"subject": np.repeat(["1", "2", "3", "4"], 12)})
        b = pretrain(X, y, meta, recipe, model="EEGNet", epochs=epochs, batch_size=8, device="cpu",
                     seed=0, checkpoint=ckpt)
        return b.save(out, overwrite=True)
""")

KILL = PRETRAIN + textwrap.dedent("""
    import os, signal, stat, sys
    from pathlib import Path
    import eegtransfer.bundle as bundle_mod
    import eegtransfer.training.engine as engine_mod

    out, ckpt, point, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    count = {"batch": 0, "fsync": 0, "replace": 0}

    real_call = engine_mod._Batcher.__call__
    def batch(self, idx):
        count["batch"] += 1
        if point == "epoch" and count["batch"] == n:
            die()
        return real_call(self, idx)
    engine_mod._Batcher.__call__ = batch

    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename
    def fsync(fd):
        real_fsync(fd)
        count["fsync"] += stat.S_ISREG(os.fstat(fd).st_mode)  # files, not folders
        if point == "checkpoint_flush" and count["fsync"] == n:
            die()  # the temporary checkpoint is written, not yet renamed
    def replace(src, dst):
        count["replace"] += 1
        if point == "checkpoint_rename" and count["replace"] == n:
            die()
        return real_replace(src, dst)
    def rename(src, dst):
        if point == "bundle_rename" and str(dst) == str(Path(out).absolute()):
            die()
        return real_rename(src, dst)
    os.fsync, os.replace, os.rename = fsync, replace, rename
    if point == "bundle_write":
        bundle_mod._fsync_tree = lambda p: (Path(p, "bundle.json").unlink(), die())  # half a bundle

    population(out, ckpt)
""")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run's weights (in this process)."""
    from eegtransfer.bundle import Bundle

    folder = tmp_path_factory.mktemp("ref")
    ns: dict = {}
    exec(PRETRAIN, ns)
    with pytest.MonkeyPatch.context() as mp:  # one thread, as in the reruns: float sums depend on it
        mp.setenv("OMP_NUM_THREADS", "1")
        path = ns["population"](folder / "pop", str(folder / "pop.ckpt"))
    return {k: v.numpy() for k, v in Bundle.load(path).model.state_dict().items()}


# 48 trials, 12 validation (one subject): 36 training trials = 5 batches of 8 per epoch; 3 epochs.
POINTS = {  # where to kill, and at which batch / checkpoint (drawn, but the same at every run)
    "epoch": lambda rng: rng.randint(6, 14),  # in epoch 1 or 2: some epochs are saved
    "checkpoint_flush": lambda rng: rng.randint(2, 3),  # the 2nd or 3rd checkpoint, written, not renamed
    "checkpoint_rename": lambda rng: rng.randint(2, 3),
    "bundle_write": lambda rng: 0,
    "bundle_rename": lambda rng: 0,
}


@pytest.mark.slow  # ~30-35 s on 2 busy cores: 5 processes that import torch
@pytest.mark.parametrize("point", sorted(POINTS))
def test_killed_pretraining_resumes_to_the_same_weights(point, reference, tmp_path, monkeypatch):
    import torch

    from eegtransfer.bundle import Bundle

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    n = POINTS[point](random.Random(point))
    out, ckpt = tmp_path / "pop", tmp_path / "pop.ckpt"
    r = subprocess.run([sys.executable, "-c", KILL, str(out), str(ckpt), point, str(n)],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == -signal.SIGKILL, (point, n, r.returncode, r.stderr[-2000:])
    assert not out.exists()  # never a half-written bundle under the real name
    if ckpt.exists():  # whatever is there is a whole checkpoint
        assert isinstance(torch.load(ckpt, weights_only=True)["epoch"], int)
    ns: dict = {}
    exec(PRETRAIN, ns)
    ns["population"](out, str(ckpt))  # the rerun: resumes (or restarts) and finishes
    again = Bundle.load(out).model.state_dict()
    for k, v in reference.items():
        assert np.array_equal(again[k].numpy(), v), (point, k)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pop", "pop.ckpt"]  # nothing left over


# --- under load: processes that share one population bundle and one cache ----------

def _cli(*args, env_extra=None):
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "eegtransfer.cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow  # four calibrations at once on two shared cores: about a minute
def test_four_calibrations_at_once_match_a_lone_run(fake_population, fake_dataset, tmp_path, capsys,
                                                    monkeypatch):
    from eegtransfer.bundle import verify_weights
    from eegtransfer.cli import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("EEGTRANSFER_CACHE", str(tmp_path / "cache"))
    pop = fake_population.save(tmp_path / "pop")
    before = _tree(pop)
    raw = fake_dataset.get_data([1])[1]["0"]["0"]
    rec = tmp_path / "s1_raw.fif"
    raw.save(rec, verbose="error")
    args = ["calibrate", "--model", pop, "--recording", rec, "--trials", 5, "--per-class", "--json",
            "--quiet", "--device", "cpu", "--seed", 3]
    assert main([*map(str, args), "--out", str(tmp_path / "lone")]) == 0
    lone = json.loads(capsys.readouterr().out)

    procs = [_cli(*args, "--out", tmp_path / f"p{i}", env_extra={"EEGTRANSFER_CACHE": str(tmp_path / "cache")})
             for i in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    lone_meta = verify_weights(tmp_path / "lone")
    for i, (out, _) in enumerate(outs):
        res = json.loads(out)
        assert res["out"] == str(tmp_path / f"p{i}")
        drop = {"seconds", "out"}
        assert {k: v for k, v in res.items() if k not in drop} == {k: v for k, v in lone.items() if k not in drop}
        meta = verify_weights(tmp_path / f"p{i}")  # whole, and its checksums hold
        assert meta["weights"]["sha256"] == lone_meta["weights"]["sha256"], i
        assert meta["metrics"] == lone_meta["metrics"] and meta["classes"] == lone_meta["classes"]
    assert _tree(pop) == before  # the shared input is untouched
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


CACHED = textwrap.dedent("""
    import json, sys
    import numpy as np, pandas as pd
    from eegtransfer.training.cache import cached_pretrain
    from eegtransfer.preprocessing import Recipe

    recipe = Recipe(channels=["C3", "Cz", "C4", "Pz"], sfreq=64.0, tmin=0.0, tmax=1.0, l_freq=2.0,
                    h_freq=30.0, notch=[])
    rng = np.random.default_rng(0)
    X = rng.standard_normal((24, 4, recipe.n_times)).astype(np.float32)
    meta = pd.DataFrame({"subject": np.repeat(["1", "2"], 12)})
    b, hit = cached_pretrain(X, np.tile(["a", "b"], 12), meta, recipe, cache_dir=sys.argv[1], epochs=2,
                             batch_size=8, device="cpu")
    print(json.dumps({"hit": hit, "sha256": b.path and json.load(open(b.path / "bundle.json"))["weights"]["sha256"]}))
""")


@pytest.mark.slow  # three processes that import torch
def test_processes_sharing_a_cache_train_once(tmp_path, monkeypatch):
    import os

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    procs = [subprocess.Popen([sys.executable, "-c", CACHED, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ}) for _ in range(3)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["hit"] for r in results) == [False, True, True]  # trained once
    assert len({r["sha256"] for r in results}) == 1
    entries = list((tmp_path / "pretrain").iterdir())
    assert [p.name for p in entries if p.is_dir()] and not [p for p in entries if p.name.endswith(".lock")]
