import mne
import numpy as np
import pytest

from eegtransfer.errors import EEGTransferError
from eegtransfer.preprocessing import Recipe, epochs_from_raw, standardize


def make_raw(sfreq=256.0, seconds=40.0, ch_names=("Oz", "O1", "O2"), freq=13.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(sfreq * seconds)) / sfreq
    data = 1e-6 * (rng.standard_normal((len(ch_names), len(t))) + 3 * np.sin(2 * np.pi * freq * t))
    info = mne.create_info(list(ch_names), sfreq, "eeg")
    return mne.io.RawArray(data, info, verbose=False)


def test_recipe_json_round_trip():
    r = Recipe(channels=["Oz", "O1"], sfreq=128, tmin=0.5, tmax=2.5, notch=[50, 100], reference="average")
    again = Recipe.from_json(r.to_json())
    assert again == r
    assert again.n_times == 256


@pytest.mark.parametrize("kw, word", [
    (dict(channels=[]), "channels"),
    (dict(channels=["Oz", "Oz"]), "duplicates"),
    (dict(channels=["Oz"], tmin=2, tmax=1), "tmin"),
    (dict(channels=["Oz"], sfreq=64, h_freq=40), "Nyquist"),
])
def test_recipe_rejects_bad_values(kw, word):
    with pytest.raises(EEGTransferError, match=word):
        Recipe(**kw)


def test_recipe_rejects_unknown_field():
    with pytest.raises(EEGTransferError, match="unknown recipe field"):
        Recipe.from_dict({"channels": ["Oz"], "lowpass": 3})


def test_epochs_shape_metadata_and_channel_order():
    raw = make_raw()
    events = np.array([[int(256 * s), 0, c] for s, c in [(2, 1), (10, 2), (20, 1), (30, 2)]])
    recipe = Recipe(channels=["O2", "Oz"], sfreq=128, tmin=0.0, tmax=2.0)
    X, meta = epochs_from_raw(raw, events, {"a": 1, "b": 2}, recipe, subject=3, run="1")
    assert X.dtype == np.float32 and X.shape == (4, 2, 256)
    assert list(meta["label"]) == ["a", "b", "a", "b"]
    np.testing.assert_allclose(meta["onset"], [2, 10, 20, 30])
    assert set(meta["subject"]) == {"3"} and set(meta["run"]) == {"1"}
    # per-trial standardisation: zero mean, unit std per channel
    np.testing.assert_allclose(X.mean(-1), 0, atol=1e-4)
    np.testing.assert_allclose(X.std(-1), 1, atol=1e-3)


def test_epochs_same_recipe_same_output_for_reordered_channels():
    raw = make_raw(ch_names=("O1", "Oz", "O2"))
    shuffled = raw.copy().reorder_channels(["O2", "O1", "Oz"])
    events = np.array([[512, 0, 1], [2560, 0, 1]])
    recipe = Recipe(channels=["Oz", "O1", "O2"], sfreq=128, tmin=0, tmax=1)
    a, _ = epochs_from_raw(raw, events, {"x": 1}, recipe)
    b, _ = epochs_from_raw(shuffled, events, {"x": 1}, recipe)
    np.testing.assert_array_equal(a, b)


def test_scaling_to_microvolts_without_standardisation():
    raw = make_raw()
    events = np.array([[512, 0, 1]])
    recipe = Recipe(channels=["Oz"], sfreq=256, tmin=0, tmax=1, l_freq=None, h_freq=None, notch=[],
                    standardize=None)
    X, _ = epochs_from_raw(raw, events, {"x": 1}, recipe)
    expected = raw.get_data(picks=["Oz"])[:, 512:768] * 1e6
    np.testing.assert_allclose(X[0], expected, rtol=1e-5)


def test_errors_name_the_problem():
    raw = make_raw()
    events = np.array([[512, 0, 1]])
    with pytest.raises(EEGTransferError, match=r"\['Cz'\].*missing"):
        epochs_from_raw(raw, events, {"x": 1}, Recipe(channels=["Oz", "Cz"]), source="rec.fif")
    with pytest.raises(EEGTransferError, match="no event matches.*found: \\[1\\]"):
        epochs_from_raw(raw, events, {"x": 7}, Recipe(channels=["Oz"]))
    low = make_raw(sfreq=100.0)
    with pytest.raises(EEGTransferError, match="100 Hz is below the model's 128 Hz"):
        epochs_from_raw(low, events, {"x": 1}, Recipe(channels=["Oz"], h_freq=40))
    nan = make_raw()
    nan._data[1, 100] = np.nan
    with pytest.raises(EEGTransferError, match=r"NaN.*\['O1'\]"):
        epochs_from_raw(nan, events, {"x": 1}, Recipe(channels=["Oz", "O1"]))
    flat = make_raw()
    flat._data[2] = 0.0
    with pytest.raises(EEGTransferError, match=r"flat channel.*\['O2'\]"):
        epochs_from_raw(flat, events, {"x": 1}, Recipe(channels=["O2"]))


def test_standardize_none_is_identity():
    X = np.random.default_rng(0).standard_normal((2, 3, 10)).astype(np.float32)
    np.testing.assert_array_equal(standardize(X, None), X)


def test_fake_dataset_through_moabb(fake_trials, fake_recipe):
    X, meta, recipe = fake_trials
    assert X.shape[1:] == (4, fake_recipe.n_times)
    assert set(meta["subject"]) == {"1", "2", "3", "4"}
    assert set(meta["label"]) == {"left_hand", "right_hand", "feet"}
    # trials are in recording order within each run
    for _, g in meta.groupby(["subject", "session", "run"]):
        assert np.all(np.diff(g["onset"].to_numpy()) > 0)
