"""Integration on the real Kalunga2016 cache: few epochs, three subjects."""

import numpy as np
import pytest
from conftest import target_split

from eegtransfer.adaptation import adapt
from eegtransfer.evaluation import score_bundle
from eegtransfer.io import KNOWN_DUPLICATES, load_dataset
from eegtransfer.training.pretraining import pretrain

pytestmark = pytest.mark.real


def test_kalunga_loads_with_metadata(kalunga_small):
    X, meta, recipe = kalunga_small
    assert X.shape == (256, 8, recipe.n_times) and X.dtype == np.float32
    assert sorted(meta["label"].unique()) == ["13", "17", "21", "rest"]
    assert meta.groupby("subject").size().to_dict() == {"2": 64, "4": 64, "5": 64, "6": 64}
    for _, run in meta.groupby(["subject", "session", "run"]):
        assert run["onset"].is_monotonic_increasing and len(run) == 32
        assert run["label"].value_counts().to_dict() == {"13": 8, "17": 8, "21": 8, "rest": 8}
        assert 3.5 < run["recording_seconds"].iloc[0] / 60 < 5.2


def test_the_published_copy_of_a_recording_is_removed_on_load(mne_data):
    assert KNOWN_DUPLICATES["Kalunga2016"]
    X7, without, _ = load_dataset("Kalunga2016", [7])
    Xk, with_dup, _ = load_dataset("Kalunga2016", [7], keep_duplicates=True)
    assert len(with_dup) == 96 and len(without) == 64
    assert "0" not in set(without["run"])
    X3, m3, _ = load_dataset("Kalunga2016", [3])
    # the removed run really is subject 3's second run, trial for trial
    copy = (with_dup["run"] == "0").to_numpy()
    assert np.array_equal(Xk[copy], X3[(m3["run"] == "1").to_numpy()])


def test_a_moabb_evaluation_never_sees_the_copy(mne_data):
    # MOABB's CrossSubjectEvaluation reads through paradigm.get_data: the same dataset-level rule
    from moabb.paradigms import SSVEP

    from eegtransfer.io import deduplicated, get_dataset

    clean = deduplicated(get_dataset("Kalunga2016"))
    assert type(clean).__name__ == "Kalunga2016" and deduplicated(clean) is clean
    _, _, meta = SSVEP(n_classes=4, resample=64).get_data(clean, subjects=[3, 7])
    runs = meta.groupby("subject")["run"].unique().apply(sorted).to_dict()
    assert runs == {3: ["0", "1"], 7: ["1", "2"]}


def test_adapted_model_beats_chance_on_later_runs(kalunga_small):
    X, meta, recipe = kalunga_small
    pop = (meta["subject"] != "6").to_numpy()
    population = pretrain(X[pop], meta["label"][pop].to_numpy(), meta[pop], recipe, model="EEGNet",
                          epochs=30, val_fraction=0, device="cpu", seed=0)
    before = {k: v.clone() for k, v in population.model.state_dict().items()}
    cal, test = target_split(meta, "6")
    patient = adapt(population, X[cal], meta["label"][cal].to_numpy(), strategy="head", device="cpu")
    s = score_bundle(patient, X[test], meta["label"][test].to_numpy())
    assert s["n"] == 32
    # 4 balanced classes: chance is 0.25; 14 of 32 correct has p < 0.03 under chance
    assert s["accuracy"] >= 14 / 32, s
    for k, v in population.model.state_dict().items():
        assert np.array_equal(v.numpy(), before[k].numpy()), k
