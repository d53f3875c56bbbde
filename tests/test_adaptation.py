import numpy as np
import pandas as pd
import pytest
from conftest import assert_state_equal, target_split

from eegtransfer.adaptation import adapt, chronological_split, select_calibration
from eegtransfer.errors import EEGTransferError


def _target(fake_trials):
    X, meta, _ = fake_trials
    cal, test = target_split(meta, "1")
    return X[cal], meta["label"][cal].to_numpy(), X[test], meta["label"][test].to_numpy()


def _meta(onsets, labels, run="0", length=100.0):
    return pd.DataFrame({"subject": "1", "session": "0", "run": run, "onset": onsets,
                         "label": labels, "recording_seconds": length})


def test_select_calibration_is_chronological():
    meta = pd.concat([_meta([5, 15, 25, 35], list("abab"), run="0", length=40),
                      _meta([5, 15], list("ab"), run="1", length=20)], ignore_index=True)
    # the first 30 s: trials ending (onset + 5 s) by 30 s
    np.testing.assert_array_equal(select_calibration(meta, minutes=0.5, trial_seconds=5),
                                  [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(select_calibration(meta, trials=3), [1, 1, 1, 0, 0, 0])
    # the second run starts at 40 s on the shared timeline
    np.testing.assert_array_equal(select_calibration(meta, minutes=0.85, trial_seconds=5),
                                  [1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(select_calibration(meta, trials=1, per_class=True), [1, 1, 0, 0, 0, 0])


def test_select_calibration_errors():
    meta = _meta([5, 15], list("ab"), length=20)
    with pytest.raises(EEGTransferError, match="minutes=2 is longer than the recording"):
        select_calibration(meta, minutes=2)
    with pytest.raises(EEGTransferError, match="exactly one"):
        select_calibration(meta)
    with pytest.raises(EEGTransferError, match="trials=5 is more than the 2 trials"):
        select_calibration(meta, trials=5)


def test_chronological_split_keeps_latest_of_each_class():
    fit, val = chronological_split(np.array(list("aabbaabb")), 0.25)
    np.testing.assert_array_equal(val, [0, 0, 0, 0, 0, 1, 0, 1])


def test_head_adaptation_freezes_everything_else(fake_population, fake_trials):
    Xc, yc, _, _ = _target(fake_trials)
    before = {k: v.clone() for k, v in fake_population.model.state_dict().items()}
    patient = adapt(fake_population, Xc, yc, strategy="head", epochs=5, device="cpu", guard=False)
    after = patient.model.state_dict()
    head = [k for k in after if k.startswith("final_layer")]
    frozen = [k for k in after if not k.startswith("final_layer")]
    assert_state_equal(before, after, frozen)  # frozen weights and BN statistics are bit-identical
    assert any(not np.array_equal(before[k].numpy(), after[k].numpy()) for k in head)
    assert_state_equal(before, fake_population.model.state_dict())  # population untouched
    assert patient.adaptation.trainable and all(n.startswith("final_layer") for n in patient.adaptation.trainable)


def test_last_k_changes_only_last_block(fake_population, fake_trials):
    Xc, yc, _, _ = _target(fake_trials)
    before = {k: v.clone() for k, v in fake_population.model.state_dict().items()}
    patient = adapt(fake_population, Xc, yc, strategy="last-k", k=1, epochs=3, device="cpu", guard=False)
    after = patient.model.state_dict()
    allowed = ("final_layer", "conv_separable_depth", "conv_separable_point", "bnorm_2")
    changed = {k for k in after if not np.array_equal(before[k].numpy(), after[k].numpy())}
    assert changed and all(k.startswith(allowed) for k in changed)


def test_same_seed_bit_identical(fake_population, fake_trials):
    Xc, yc, _, _ = _target(fake_trials)
    a = adapt(fake_population, Xc, yc, strategy="last-k", epochs=4, device="cpu", seed=3, guard=False)
    b = adapt(fake_population, Xc, yc, strategy="last-k", epochs=4, device="cpu", seed=3, guard=False)
    assert_state_equal(a.model.state_dict(), b.model.state_dict())
    c = adapt(fake_population, Xc, yc, strategy="head", epochs=4, device="cpu", seed=3, guard=False)
    d = adapt(fake_population, Xc, yc, strategy="head", epochs=4, device="cpu", seed=3, guard=False)
    assert_state_equal(c.model.state_dict(), d.model.state_dict())


def test_new_classes_get_a_new_head(fake_population, fake_trials):
    Xc, yc, _, _ = _target(fake_trials)
    yc = np.where(yc == "feet", "rest", "move")
    patient = adapt(fake_population, Xc, yc, strategy="head", epochs=3, device="cpu")
    assert patient.classes == ["move", "rest"]
    assert patient.adaptation.new_head and "new head" in patient.adaptation.note
    assert patient.predict_proba(Xc[:3]).shape == (3, 2)


def test_calibration_errors(fake_population, fake_trials):
    Xc, yc, _, _ = _target(fake_trials)
    one = yc.copy()
    one[one == "feet"] = "left_hand"
    one[np.where(yc == "feet")[0][0]] = "feet"
    with pytest.raises(EEGTransferError, match="counts per class: .*'feet': 1"):
        adapt(fake_population, Xc, one, device="cpu")
    with pytest.raises(EEGTransferError, match="is empty"):
        adapt(fake_population, Xc[:0], yc[:0], device="cpu")
    with pytest.raises(EEGTransferError, match="needs labelled"):
        adapt(fake_population, Xc, None, strategy="head", device="cpu")
    with pytest.raises(EEGTransferError, match="unknown strategy 'magic'"):
        adapt(fake_population, Xc, yc, strategy="magic", device="cpu")
    with pytest.raises(EEGTransferError, match=r"shape \(n_trials, 4, 64\)"):
        adapt(fake_population, Xc[:, :2], yc, device="cpu")


# --- silent wrong results, now refused ---------------------------------------------

def test_calibration_must_cover_every_model_class(fake_population, fake_trials):
    """One class only (all the model's) used to calibrate and 'keep' a one-class model."""
    Xc, yc, _, _ = _target(fake_trials)
    only = yc == "feet"
    assert only.sum() >= 4
    for strategy in ("head", "auto"):
        with pytest.raises(EEGTransferError, match=r"every class; counts per class: \{'feet': \d+, "
                                                   r"'left_hand': 0, 'right_hand': 0\}"):
            adapt(fake_population, Xc[only], yc[only], strategy=strategy, device="cpu")
    # labels new to the model train a new head for exactly those classes: no model class is required
    new = np.where(yc[only], "rest", "rest")
    new[: len(new) // 2] = "move"
    patient = adapt(fake_population, Xc[only], new, strategy="head", device="cpu")
    assert patient.classes == ["move", "rest"] and patient.adaptation.new_head


def test_per_class_minutes_need_trial_seconds():
    meta = _meta([5, 15, 25, 35], list("abab"), length=40)
    with pytest.raises(EEGTransferError, match=r"trial_seconds= > 0.*got trial_seconds=0"):
        select_calibration(meta, minutes=0.3, per_class=True)
    # 18 s per class with 5-s trials: 3 trials each would fit, 2 exist; 6 s: 1 each
    np.testing.assert_array_equal(select_calibration(meta, minutes=0.3, per_class=True, trial_seconds=5),
                                  [1, 1, 1, 1])
    np.testing.assert_array_equal(select_calibration(meta, minutes=0.1, per_class=True, trial_seconds=5),
                                  [1, 1, 0, 0])


def test_lbfgs_prior_zero_pulls_towards_zero_from_the_start():
    import torch

    from eegtransfer.adaptation import fit_head_lbfgs

    torch.manual_seed(0)
    feats = torch.randn(40, 6)
    y = np.arange(40) % 3
    start = torch.nn.Linear(6, 3)
    w0 = {k: v.clone() for k, v in start.state_dict().items()}
    sp, zero = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3)
    sp.load_state_dict(w0)
    zero.load_state_dict(w0)
    assert fit_head_lbfgs(sp, feats, y, l2=100.0)["prior"] == "start"
    assert fit_head_lbfgs(zero, feats, y, l2=100.0, prior="zero")["prior"] == "zero"
    dist = lambda m, ref: sum(float(((v - ref[k]) ** 2).sum()) for k, v in m.state_dict().items())  # noqa: E731
    zeros = {k: torch.zeros_like(v) for k, v in w0.items()}
    assert dist(sp, w0) < 1e-3 and dist(zero, zeros) < 1e-3 < dist(zero, w0)
    with pytest.raises(EEGTransferError, match="prior= must be"):
        fit_head_lbfgs(zero, feats, y, prior="random")


def test_new_head_is_pulled_towards_zero_not_its_random_init(fake_population, fake_trials):
    from eegtransfer.models import HEAD

    Xc, yc, _, _ = _target(fake_trials)
    yc = np.where(yc == "feet", "rest", "move")
    patient = adapt(fake_population, Xc, yc, strategy="head", device="cpu", head_l2=1e3)
    head = getattr(patient.model, HEAD)
    assert max(float(p.abs().max()) for p in head.parameters()) < 1e-3
    assert patient.adaptation.new_head and patient.history["prior"] == "zero"
