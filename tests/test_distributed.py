"""Data-parallel training (DistributedDataParallel under torchrun): 2 CPU processes with gloo against one.

Measured on this problem (``tests/ddp_worker.py``, 4 epochs, global batch 16, a ragged last
batch): without batch norm or dropout, 2 processes give the per-epoch training loss of 1
process within a relative 1.7e-7, the validation loss within 5.5e-7 and the weights within
1.1e-7 (float reduction order); the tests allow 1e-5. EEGNet, whose batch norm normalises
each process's half batch and whose dropout draws other masks: within 4.7 % (training loss;
2.5 % with dropout off, batch norm alone) and 0.33 % (validation loss); the tests allow 10 %
and 2 %."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ddp_worker
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def torchrun(*args: str, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run`` on this machine, importing this checkout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                           "--standalone", *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=REPO)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    """The worker's runs, trained once by 2 processes; their results in a folder."""
    out = tmp_path_factory.mktemp("ddp")
    r = torchrun(str(REPO / "tests" / "ddp_worker.py"), str(out))
    assert r.returncode == 0, r.stderr[-4000:]
    return out


def _result(out: Path, name: str, rank: int) -> dict:
    return torch.load(out / f"{name}.{rank}.pt", weights_only=True)


def _curve(history: dict, key: str = "train_loss") -> list[float]:
    return [e[key] for e in history["epochs"]]


def test_two_processes_give_the_loss_curve_of_one_with_the_same_global_batch(two_processes):
    net, hist = ddp_worker.fit("plain")  # one process, batches of 16
    one = hist.to_dict()
    assert _curve(one)[-1] < 0.5 * _curve(one)[0]  # it learns: not a comparison of two no-ops
    for rank in (0, 1):
        two = _result(two_processes, "plain", rank)
        np.testing.assert_allclose(_curve(two["history"]), _curve(one), rtol=1e-5)
        np.testing.assert_allclose(_curve(two["history"], "val_loss"), _curve(one, "val_loss"), rtol=1e-5)
        assert _curve(two["history"], "val_acc") == _curve(one, "val_acc")
        for k, v in net.state_dict().items():
            torch.testing.assert_close(two["state"][k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_batch_norm_and_dropout_models_agree_loosely_and_ranks_exactly(two_processes):
    _, hist = ddp_worker.fit("eegnet")
    one = hist.to_dict()
    ranks = [_result(two_processes, "eegnet", rank) for rank in (0, 1)]
    np.testing.assert_allclose(_curve(ranks[0]["history"]), _curve(one), rtol=0.1)
    np.testing.assert_allclose(_curve(ranks[0]["history"], "val_loss"), _curve(one, "val_loss"), rtol=0.02)
    # every rank ends with rank 0's weights and statistics, and the same history
    for k, v in ranks[0]["state"].items():
        assert torch.equal(ranks[1]["state"][k], v), k
    scores = [[{k: v for k, v in e.items() if k != "seconds"} for e in r["history"]["epochs"]] for r in ranks]
    assert scores[0] == scores[1]


def test_only_rank_0_writes_the_checkpoint_and_every_rank_resumes_from_it(two_processes):
    writers = [json.loads((two_processes / f"writers.{rank}.json").read_text()) for rank in (0, 1)]
    assert writers == [[0] * 4, []]  # 2 epochs, then 2 more after resuming
    for rank in (0, 1):  # interrupted after 2 of 4 epochs and resumed == uninterrupted, bit for bit
        full, resumed = _result(two_processes, "eegnet", rank), _result(two_processes, "resumed", rank)
        assert _curve(resumed["history"]) == _curve(full["history"])
        for k, v in full["state"].items():
            assert torch.equal(resumed["state"][k], v), k


def _manifest(folder: Path) -> Path:
    """4 subjects x 2 classes, one 12 s file per class (4 channels at 128 Hz), labelled as a whole."""
    import mne
    import pandas as pd

    rng = np.random.default_rng(0)
    info = mne.create_info(["C3", "Cz", "C4", "Pz"], 128.0, "eeg")
    t = np.arange(12 * 128) / 128.0
    rows = []
    for subject in range(1, 5):
        for label, freq in (("a", 9.0), ("b", 17.0)):
            data = 1e-5 * (rng.standard_normal((4, len(t))) + np.sin(2 * np.pi * freq * t))
            path = folder / f"s{subject}_{label}_raw.fif"
            mne.io.RawArray(data, info, verbose="error").save(path, verbose="error")
            rows.append({"path": path.name, "subject": f"p{subject}", "session": "1", "label": label})
    man = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(man, index=False)
    return man


def test_cli_nproc_2_trains_in_two_processes_and_rank_0_writes(tmp_path):
    from test_cli import run_cli

    man, out, ckpt = _manifest(tmp_path), tmp_path / "pop", tmp_path / "run.ckpt"
    r = run_cli("pretrain", "--manifest", man, "--tmin", 0, "--tmax", 1, "--epochs", 2, "--nproc", 2,
                "--device", "cpu", "--checkpoint", ckpt, "--allow-chance", "--json", "--quiet", "--out", out,
                env={"OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads(r.stdout)  # one JSON object: rank 0 alone reports; 11 windows of 1 s per 12 s file
    assert res["n_trials"] == 8 * 11 and res["subjects"] == ["p1", "p2", "p3", "p4"]
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["provenance"]["processes"] == 2
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1


def test_processes_get_the_command_line_in_full_without_nproc():
    from torch.distributed.run import get_args_parser

    from eegtransfer.cli import build_parser
    from eegtransfer.cli.pretrain import child_argv

    parser = build_parser()
    args = parser.parse_args(["pretrain", "--man", "m.csv", "--tmin=-0.5", "--nproc", "2", "--event-id", "a=1",
                              "--event-id", "b=2", "--channels", "C3", "Cz", "--allow", "--out", "x", "--json"])
    argv = child_argv(args)
    assert "--nproc" not in " ".join(argv) and "--manifest=m.csv" in argv and "--tmin=-0.5" in argv
    assert {**vars(parser.parse_args(argv)), "nproc": 2} == vars(args)
    # torchrun reads them too: none that it gets may be (a prefix of) one of its options
    theirs = [s for a in get_args_parser()._actions for s in a.option_strings]
    ours = [s for a in args.parser._actions for s in a.option_strings if s not in ("-h", "--help", "--nproc")]
    assert not [o for o in ours if any(t.startswith(o) for t in theirs)]
