"""Shared fixtures: FakeDataset trials for unit tests, the Kalunga2016 cache for real ones."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MNE_DATA = REPO.parent / "shared" / "data" / "mne_data"

os.environ.setdefault("MOABB_DOWNLOAD_PROVIDER", "upstream")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see eegtransfer.cli.main
warnings.filterwarnings("ignore", category=FutureWarning)


# A small problem for the training engine: 4 channels, 1 s at 128 Hz, 3 classes.
N_CHANS, N_TIMES, SFREQ, N_CLASSES = 4, 128, 128.0, 3


@pytest.fixture
def one_thread(monkeypatch):
    """One intra-op thread: train() reads OMP_NUM_THREADS, and on a shared machine two
    spinning OpenMP threads can be many times slower than one."""
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(before)


def sine_trials(n: int = 42, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Trials whose class sets the frequency of a sine on some channels, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n)
    t = np.arange(N_TIMES) / SFREQ
    X = rng.standard_normal((n, N_CHANS, N_TIMES)).astype(np.float32)
    X[:, :2] += np.sin(2 * np.pi * (6 + 6 * y)[:, None, None] * t).astype(np.float32)
    return X, y


def small_eegnet(seed: int = 1, **kwargs):
    """EEGNet for :func:`sine_trials`, its weights seeded."""
    import torch

    from eegtransfer.models import build_model

    torch.manual_seed(seed)
    return build_model("EEGNet", N_CHANS, N_CLASSES, N_TIMES, SFREQ, **kwargs)


def real_data_path() -> Path | None:
    path = Path(os.environ.get("MNE_DATA", SHARED_MNE_DATA))
    return path if (path / "MNE-ssvepexo-data").is_dir() else None


@pytest.fixture(scope="session")
def mne_data() -> Path:
    path = real_data_path()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"the Kalunga2016 cache is missing under {os.environ.get('MNE_DATA', SHARED_MNE_DATA)}")
        pytest.skip("Kalunga2016 MOABB cache not found; set MNE_DATA")
    os.environ["MNE_DATA"] = str(path)
    return path


@pytest.fixture(scope="session")
def kalunga_path(mne_data: Path) -> Path:
    return mne_data / "MNE-ssvepexo-data" / "zenodo" / "2392979"


@pytest.fixture(scope="session")
def fake_dataset():
    from moabb.datasets.fake import FakeDataset

    return FakeDataset(event_list=["left_hand", "right_hand", "feet"], n_subjects=4, n_sessions=1,
                       n_runs=2, duration=60, sfreq=128, paradigm="imagery", seed=7,
                       channels=("C3", "Cz", "C4", "Pz"))


@pytest.fixture(scope="session")
def fake_recipe():
    from eegtransfer.preprocessing import Recipe

    return Recipe(channels=["C3", "Cz", "C4", "Pz"], sfreq=64.0, tmin=0.0, tmax=1.0,
                  l_freq=2.0, h_freq=30.0, notch=[])


@pytest.fixture(scope="session")
def fake_trials(fake_dataset, fake_recipe):
    """(X, meta, recipe) for FakeDataset subjects 1-4."""
    from eegtransfer.io import load_dataset

    return load_dataset(fake_dataset, [1, 2, 3, 4], fake_recipe)


@pytest.fixture(scope="session")
def fake_population(fake_trials):
    """A tiny EEGNet pretrained on FakeDataset subjects 2-4 (CPU, seed 0)."""
    from eegtransfer.training.pretraining import pretrain

    X, meta, recipe = fake_trials
    pop = (meta["subject"] != "1").to_numpy()
    return pretrain(X[pop], meta["label"][pop].to_numpy(), meta[pop], recipe, model="EEGNet",
                    epochs=3, device="cpu", seed=0)


@pytest.fixture(scope="session")
def kalunga_small(mne_data):
    """Kalunga2016 subjects 2, 4, 5 and 6, preprocessed with the default recipe."""
    from eegtransfer.io import load_dataset

    return load_dataset("Kalunga2016", [2, 4, 5, 6])


KALUNGA_ID = {"13": 2, "17": 4, "21": 3, "rest": 1}


def kalunga_annotated(kalunga_path: Path, subject: int = 1, run: int = 1):
    """A Kalunga FIF read as a user's file: EEG channels only, stim events turned into annotations.

    Returns the raw and the stim-channel events it was annotated from.
    """
    import mne

    raw = mne.io.read_raw_fif(kalunga_path / f"subject{subject:02d}_run{run}_raw.fif", preload=True,
                              verbose="error")
    ev = mne.find_events(raw, shortest_event=0, verbose="error")
    names = {v: k for k, v in KALUNGA_ID.items()}
    raw.set_annotations(mne.annotations_from_events(ev, raw.info["sfreq"], event_desc=names,
                                                    first_samp=raw.first_samp, verbose="error"))
    return raw.pick("eeg"), ev


def target_split(meta, subject: str):
    """Boolean masks: the subject's first run (calibration) and its later runs (test)."""
    is_t = (meta["subject"] == subject).to_numpy()
    first = meta[is_t].iloc[0]
    first_run = is_t & (meta["session"] == first["session"]).to_numpy() & (meta["run"] == first["run"]).to_numpy()
    return first_run, is_t & ~first_run


def assert_state_equal(a: dict, b: dict, keys=None) -> None:
    for k in keys if keys is not None else a:
        assert np.array_equal(a[k].cpu().numpy(), b[k].cpu().numpy()), k
