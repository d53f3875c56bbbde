"""balance_classes: label-free class balance over one recording (transductive)."""

import numpy as np
import pytest

from eegtransfer.adaptation import balance_classes
from eegtransfer.errors import EEGTransferError


def drifted(n_per_class: int = 8, k: int = 4, shift: float = 2.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of a balanced recording whose decoder drifted towards class 0 by ``shift`` nats."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n_per_class)
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), y] += 1.5
    logits[:, 0] += shift
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), y


def test_the_recording_mean_becomes_the_prior_and_the_drift_is_undone():
    p, y = drifted()
    q = balance_classes(p)
    np.testing.assert_allclose(q.mean(0), 0.25, atol=1e-8)
    np.testing.assert_allclose(q.sum(1), 1.0)
    assert (p.argmax(1) == 0).mean() > 0.5  # the drift: most trials called class 0
    assert (q.argmax(1) == y).mean() >= (p.argmax(1) == y).mean() + 0.15  # 21 of 32 trials against 16
    # one shift per class, the same for every trial: log-odds between two classes move by a constant
    shift = np.log(p[:, 1] / p[:, 2]) - np.log(q[:, 1] / q[:, 2])
    np.testing.assert_allclose(shift, shift[0], atol=1e-8)
    prior = np.array([0.4, 0.2, 0.2, 0.2])
    np.testing.assert_allclose(balance_classes(p, prior).mean(0), prior, atol=1e-8)


def test_a_balance_not_reached_in_max_iter_says_so(caplog):
    p, _ = drifted(shift=8.0)
    with caplog.at_level("WARNING", logger="eegtransfer"):
        q = balance_classes(p, max_iter=2)
    assert "after 2 rescalings the class means are" in caplog.text
    assert np.abs(q.mean(0) - 0.25).max() > 1e-3


def test_balanced_probabilities_are_left_as_they_are_and_groups_are_balanced_alone():
    p, _ = drifted(shift=0.0)
    centred = balance_classes(p)
    np.testing.assert_allclose(balance_classes(centred), centred, atol=1e-8)  # already balanced: unchanged
    a, _ = drifted(seed=1)
    b, _ = drifted(shift=-1.0, seed=2)
    groups = np.repeat(["run2", "run3"], len(a))
    both = balance_classes(np.concatenate([a, b]), groups=groups)
    np.testing.assert_allclose(both[: len(a)], balance_classes(a))
    np.testing.assert_allclose(both[len(a):], balance_classes(b))


def test_a_prior_applies_to_every_group_and_a_rounded_prior_is_reached(caplog):
    a, _ = drifted(seed=3)
    b, _ = drifted(shift=-1.0, seed=4)
    prior = np.array([0.4, 0.2, 0.2, 0.2])
    both = balance_classes(np.concatenate([a, b]), prior, groups=np.repeat([1, 2], len(a)))
    np.testing.assert_allclose(both[: len(a)].mean(0), prior, atol=1e-8)
    np.testing.assert_allclose(both[len(a):].mean(0), prior, atol=1e-8)
    with caplog.at_level("WARNING", logger="eegtransfer"):
        q = balance_classes(a[:, :3] / a[:, :3].sum(1, keepdims=True), [0.333333] * 3)
    assert not caplog.text  # normalised: no 1000 rescalings chasing a prior that sums to 0.999999
    np.testing.assert_allclose(q.mean(0), 1 / 3, atol=1e-8)


@pytest.mark.parametrize("proba, kwargs, message", [
    (np.full((8, 2), 0.5), {"max_iter": 0}, "max_iter must be a whole number >= 1, got 0"),
    (np.full((8, 2), 0.5), {"tol": 0.0}, "tol must be > 0, got 0.0"),
    (np.full((9, 2), 0.5), {"groups": np.repeat(["run1", "run2"], [8, 1])},
     r"recording 'run2': balancing the classes needs at least as many trials as classes \(2\), got 1"),
    (np.full((3, 4), 0.25), {}, r"at least as many trials as classes \(4\), got 3"),
    (np.full(8, 0.5), {}, r"shape \(n_trials, n_classes >= 2\), got \(8,\)"),
    (np.full((8, 2), -0.5), {}, "finite, non-negative"),
    (np.full((8, 2), 0.5), {"prior": [0.5, 0.6]}, "prior must be 2 positive proportions that sum to 1"),
    (np.full((8, 2), 0.5), {"groups": np.zeros(7)}, r"one recording per trial \(8\), got shape \(7,\)"),
])
def test_bad_input_is_a_one_line_error_naming_the_parameter(proba, kwargs, message):
    with pytest.raises(EEGTransferError, match=message):
        balance_classes(proba, **kwargs)
