import json

import numpy as np
import pytest

from eegtransfer.bundle import Bundle, read_meta
from eegtransfer.errors import BundleError, EEGTransferError


def test_round_trip_identical_predictions(fake_population, fake_trials, tmp_path):
    X, meta, _ = fake_trials
    path = fake_population.save(tmp_path / "pop")
    again = Bundle.load(path)
    np.testing.assert_array_equal(fake_population.predict_proba(X[:20]), again.predict_proba(X[:20]))
    assert again.classes == fake_population.classes
    assert again.recipe == fake_population.recipe
    m = read_meta(path)
    for key in ("dataset", "subjects", "seed", "versions", "train_seconds"):
        assert key in m["provenance"] or key == "dataset"
    assert m["model"]["braindecode_config"]["n_chans"] == 4
    assert sorted(p.name for p in path.iterdir()) == ["bundle.json", "weights.safetensors"]


def test_never_overwrites_without_permission(fake_population, tmp_path):
    path = fake_population.save(tmp_path / "pop")
    before = (path / "weights.safetensors").read_bytes()
    with pytest.raises(EEGTransferError, match="already exists.*--overwrite"):
        fake_population.save(path)
    assert (path / "weights.safetensors").read_bytes() == before
    fake_population.save(path, overwrite=True)
    assert Bundle.load(path).classes == fake_population.classes
    # no temporary folders are left behind
    assert [p.name for p in tmp_path.iterdir()] == ["pop"]


def test_altered_weights_are_detected(fake_population, tmp_path):
    path = fake_population.save(tmp_path / "pop")
    w = path / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="weights.safetensors.*does not match"):
        Bundle.load(path)


def test_newer_format_is_refused(fake_population, tmp_path):
    path = fake_population.save(tmp_path / "pop")
    meta = json.loads((path / "bundle.json").read_text())
    meta["format_version"] = 99
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="format version 99 is newer"):
        Bundle.load(path)


def test_inconsistent_meta_is_named(fake_population, tmp_path):
    path = fake_population.save(tmp_path / "pop")
    meta = json.loads((path / "bundle.json").read_text())
    meta["classes"] = meta["classes"][:2]
    (path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="n_outputs=3 but 2 classes"):
        read_meta(path)


def test_failed_write_leaves_nothing(fake_population, tmp_path, monkeypatch):
    import eegtransfer.bundle as bmod

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(bmod, "sha256_file", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        fake_population.save(tmp_path / "pop")
    assert list(tmp_path.iterdir()) == []


def test_output_inside_input_bundle_refused(fake_population, tmp_path):
    path = fake_population.save(tmp_path / "pop")
    b = Bundle.load(path)
    for out in (path / "nested", path, tmp_path):
        with pytest.raises(EEGTransferError, match="inside or contains the input bundle"):
            b.save(out, overwrite=True, protect=[path])
    assert Bundle.load(path).classes == b.classes


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no such bundle folder"):
        read_meta(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="bundle.json is missing"):
        read_meta(tmp_path / "empty")
