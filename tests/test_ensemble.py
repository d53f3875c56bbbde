"""BundleEnsemble: several bundles of one task, their probabilities averaged."""

from pathlib import Path

import numpy as np
import pytest

from eegtransfer.bundle import Bundle
from eegtransfer.ensemble import BundleEnsemble
from eegtransfer.errors import EEGTransferError


@pytest.fixture(scope="module")
def two_seeds(fake_trials, fake_population):
    from eegtransfer.training.pretraining import pretrain

    X, meta, recipe = fake_trials
    pop = (meta["subject"] != "1").to_numpy()
    other = pretrain(X[pop], meta["label"][pop].to_numpy(), meta[pop], recipe, model="EEGNet", epochs=3,
                     device="cpu", seed=1)
    return [fake_population, other]


def test_probabilities_are_the_members_mean_from_arrays_files_and_raw(two_seeds, fake_trials, fake_dataset,
                                                                      tmp_path):
    X, meta, _ = fake_trials
    Xt = X[(meta["subject"] == "1").to_numpy()]
    ens = BundleEnsemble(two_seeds)
    members = [m.predict_proba(Xt) for m in two_seeds]
    assert not np.allclose(members[0], members[1])  # two seeds: two different networks
    proba = ens.predict_proba(Xt)
    np.testing.assert_allclose(proba, (members[0] + members[1]) / 2, atol=1e-6)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    assert list(ens.predict(Xt)) == list(np.asarray(ens.classes)[proba.argmax(1)])
    paths = [m.save(tmp_path / f"seed{i}") for i, m in enumerate(two_seeds)]
    np.testing.assert_allclose(BundleEnsemble.load(paths).predict_proba(Xt), proba, atol=1e-5)
    raw = next(iter(next(iter(fake_dataset.get_data([1])[1].values())).values()))
    from_raw = [m.predict_proba(raw) for m in two_seeds]
    np.testing.assert_allclose(ens.predict_proba(raw), (from_raw[0] + from_raw[1]) / 2, atol=1e-6)
    frame = ens.predict_frame(raw)
    np.testing.assert_allclose(frame[[f"p_{c}" for c in ens.classes]].to_numpy(), ens.predict_proba(raw), atol=1e-6)
    assert list(frame["predicted"]) == list(ens.predict(raw)) and len(ens.predict_annotations(raw)) == len(frame)
    assert "BundleEnsemble of 2 EEGNet bundles" in repr(ens) and len(ens) == 2


def test_adapt_adapts_every_member_and_leaves_the_population(two_seeds, fake_trials):
    X, meta, _ = fake_trials
    t = (meta["subject"] == "1").to_numpy()
    before = [m.predict_proba(X[t]) for m in two_seeds]
    patient = BundleEnsemble(two_seeds).adapt(X[t][:40], strategy="bn", device="cpu")
    assert isinstance(patient, BundleEnsemble) and len(patient) == 2
    assert [m.adaptation.steps for m in patient.members] == [["bn"], ["bn"]]
    for m, b in zip(two_seeds, before):
        np.testing.assert_array_equal(m.predict_proba(X[t]), b)


def test_members_must_share_classes_channels_and_recipe(two_seeds):
    other = two_seeds[1].copy()
    other.classes = list(reversed(other.classes))
    with pytest.raises(EEGTransferError, match=r"ensemble member 1 has other classes than member 0"):
        BundleEnsemble([two_seeds[0], other])
    aligned = two_seeds[1].copy()
    aligned.provenance = {**aligned.provenance, "euclidean_alignment": True}
    with pytest.raises(EEGTransferError, match=r"ensemble member 1 has other Euclidean alignment than member 0"):
        BundleEnsemble([two_seeds[0], aligned])
    with pytest.raises(EEGTransferError, match="at least 2 bundles, got 1"):
        BundleEnsemble(two_seeds[:1])
    with pytest.raises(EEGTransferError, match="ensemble member 1 is a str, not a Bundle"):
        BundleEnsemble([two_seeds[0], "seed1"])
    assert isinstance(two_seeds[0], Bundle)
    import eegtransfer

    assert eegtransfer.BundleEnsemble is BundleEnsemble  # exported at the top level


def test_predict_command_averages_several_bundles(two_seeds, fake_dataset, tmp_path, capsys):
    import json

    import pandas as pd

    from eegtransfer.cli import main

    raw = next(iter(next(iter(fake_dataset.get_data([1])[1].values())).values()))
    rec = tmp_path / "s1_raw.fif"
    raw.save(rec, verbose="error")
    dirs = [str(m.save(tmp_path / f"seed{i}")) for i, m in enumerate(two_seeds)]

    def predict(*models: str) -> pd.DataFrame:
        out = tmp_path / f"{len(models)}-{Path(models[0]).name}.csv"
        assert main(["predict", "--model", *models, "--recording", str(rec), "--out", str(out), "--json",
                     "--quiet"]) == 0
        assert json.loads(capsys.readouterr().out)["n_trials"] > 0
        return pd.read_csv(out)

    singles, both = [predict(d) for d in dirs], predict(*dirs)
    cols = [f"p_{c}" for c in two_seeds[0].classes]
    np.testing.assert_allclose(both[cols], (singles[0][cols] + singles[1][cols]) / 2, atol=2e-6)
    assert main(["predict", "--model", dirs[0], str(tmp_path), "--recording", str(rec),
                 "--out", str(tmp_path / "x.csv")]) != 0  # a folder that is not a bundle: refused
    assert str(tmp_path) in capsys.readouterr().err
    assert main(["predict", "--model", dirs[0], dirs[0], "--recording", str(rec),
                 "--out", str(tmp_path / "x.csv")]) != 0  # one folder twice would count twice
    assert "is given twice" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
