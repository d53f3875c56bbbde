"""The CCA expert: correlations, its logistic regression, the ``cca`` step and the bundle's product."""

import numpy as np
import pytest

from eegtransfer.adaptation import CCA, Align, Head, auto_candidates, parse_strategy, run_steps
from eegtransfer.errors import EEGTransferError
from eegtransfer.evaluation.baselines import CCADetector
from eegtransfer.ssvep import (
    REST_EVIDENCE,
    CCAExpert,
    cca_correlations,
    filter_bank_correlations,
    ssvep_frequencies,
    subbands,
)

SFREQ, CLASSES = 64.0, ["13", "17", "21", "rest"]


def ssvep_trials(labels, *, snr=0.5, n_chans=4, n_times=256, seed=0):
    """Noise plus, for a frequency class, a sinusoid at it and its second harmonic on every channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_times) / SFREQ
    X = rng.standard_normal((len(labels), n_chans, n_times))
    for i, c in enumerate(labels):
        if c != "rest":
            f = float(c)
            phase = rng.uniform(0, 2 * np.pi, n_chans)
            X[i] += snr * (np.sin(2 * np.pi * f * t + phase[:, None]) + 0.5 * np.sin(4 * np.pi * f * t))
    return X.astype(np.float32)


def test_correlations_find_the_stimulation_frequency_and_match_the_detector():
    y = np.repeat(["13", "17", "21"], 5)
    X = ssvep_trials(y, snr=1.0)
    rho = cca_correlations(X, SFREQ, [13, 17, 21], max_freq=30)
    assert rho.shape == (15, 3) and ((rho >= 0) & (rho <= 1)).all()
    two = cca_correlations(X, SFREQ, [13, 17, 21], max_freq=30, n_components=2)
    assert two.shape == (15, 6)
    np.testing.assert_allclose(two[:, :3], rho)  # the first correlations, then the second ones
    assert (two[:, 3:] <= two[:, :3] + 1e-12).all()
    assert (np.array(["13", "17", "21"])[rho.argmax(1)] == y).all()
    det = CCADetector(sfreq=SFREQ, max_freq=30).fit(X, y)
    np.testing.assert_allclose(det.correlations(X), rho)  # one implementation
    # invariant to a spatial filter and a per-channel scale, so alignment does not change it
    mix = np.random.default_rng(1).standard_normal((4, 4)) + 3 * np.eye(4)
    np.testing.assert_allclose(cca_correlations(np.einsum("ij,njt->nit", mix, X), SFREQ, [13, 17, 21],
                                                max_freq=30), rho, atol=1e-8)


def test_a_harmonic_above_the_band_is_dropped_and_a_fundamental_above_it_is_refused():
    X = ssvep_trials(["13"] * 2)
    assert cca_correlations(X, SFREQ, [13], n_harmonics=3, max_freq=30).shape == (2, 1)
    with pytest.raises(EEGTransferError, match="31 Hz is above"):
        cca_correlations(X, SFREQ, [31], max_freq=30)


def test_expert_learns_rest_and_frequencies_and_round_trips():
    y = np.tile(CLASSES, 10)
    X = ssvep_trials(y)
    e = CCAExpert.for_classes(CLASSES, SFREQ, max_freq=30).fit(X, y, l2=1e-3)
    yt = np.tile(CLASSES, 10)
    acc = (np.array(CLASSES)[e.log_proba(ssvep_trials(yt, seed=3)).argmax(1)] == yt).mean()
    assert acc > 0.8  # chance is 0.25; rest is the class without a frequency
    again = CCAExpert.from_dict(e.to_dict())
    np.testing.assert_allclose(again.log_proba(X), e.log_proba(X))
    assert CCAExpert.for_classes(["left", "right"], SFREQ) is None
    assert ssvep_frequencies(["13", "rest"]) == {"13": 13.0}


def test_the_prior_holds_with_a_strong_pull_and_classes_count_the_same():
    y = np.tile(CLASSES, 10)
    prior = CCAExpert.for_classes(CLASSES, SFREQ, max_freq=30).fit(ssvep_trials(y), y, l2=1e-3)
    few = np.array(["rest"] * 9 + ["13", "17", "21"])
    Xf = ssvep_trials(few, seed=5)
    held = CCAExpert.for_classes(CLASSES, SFREQ, max_freq=30).fit(Xf, few, l2=1e4, prior=prior)
    np.testing.assert_allclose(held.coef_, prior.coef_, atol=1e-2)
    loose = CCAExpert.for_classes(CLASSES, SFREQ, max_freq=30).fit(Xf, few, l2=1e-2, prior=prior)
    # balanced: nine rest trials do not make rest the answer for everything
    pred = np.array(CLASSES)[loose.log_proba(ssvep_trials(np.tile(CLASSES, 5), seed=6)).argmax(1)]
    assert (pred != "rest").sum() >= 10


def test_head_weighs_classes_the_same_by_default():
    import torch

    from eegtransfer.adaptation import fit_head_lbfgs

    rng = np.random.default_rng(0)
    y = np.array([0] * 40 + [1] * 4)
    feats = torch.as_tensor(rng.standard_normal((44, 3)) + np.where(y[:, None] == 1, 0.8, 0.0), dtype=torch.float32)
    share = {}
    for balanced in (False, True):
        head = torch.nn.Linear(3, 2)
        torch.nn.init.zeros_(head.weight), torch.nn.init.zeros_(head.bias)
        info = fit_head_lbfgs(head, feats, y, l2=1e-4, prior="zero", balanced=balanced)
        assert info["balanced"] is balanced
        share[balanced] = float((head(feats).argmax(1) == 1).float().mean())
    assert share[True] > share[False]


def test_strategy_names_with_cca():
    steps = parse_strategy("align+head+cca", cca_l2=3.0, cca_weight=0.5)
    assert [type(s) for s in steps] == [Align, Head, CCA]
    assert (steps[-1].l2, steps[-1].weight) == (3.0, 0.5)
    with pytest.raises(EEGTransferError, match="the experts cca and ts with any"):
        parse_strategy("cca+cca")


def test_cca_step_refuses_classes_without_frequencies(fake_population, fake_trials):
    X, meta, _ = fake_trials
    with pytest.raises(EEGTransferError, match="SSVEP classes named by frequency"):
        run_steps(fake_population, [CCA()], X[:12], meta["label"].to_numpy()[:12])
    assert fake_population.cca is None  # motor imagery: no expert, no cca candidate
    assert not [c for c in auto_candidates(fake_population) if "cca" in c]


def test_population_expert_then_cca_step_on_kalunga(kalunga_small, tmp_path, caplog, monkeypatch):
    from eegtransfer.adaptation import adapt
    from eegtransfer.bundle import Bundle
    from eegtransfer.training.pretraining import pretrain

    X, meta, recipe = kalunga_small
    y = meta["label"].astype(str).to_numpy()
    t = (meta["subject"].astype(str) == "2").to_numpy()
    pop = pretrain(X[~t], y[~t], meta[~t], recipe, epochs=2, device="cpu", seed=0, align=True)
    assert pop.cca is not None and pop.cca.weight == 0  # a prior: the population predicts with its network
    Xt, yt = X[t], y[t]
    cand = auto_candidates(pop)
    # SSVEP: fused with the expert, the network's label-free steps only; each also with the ts expert
    assert cand == ["align+cca", "align+cca+ts"]
    assert auto_candidates(pop, np.array(["9", "11"])) == ["align+head+cca", "align+head+cca+ts"]  # a new head
    # the population's expert alone, on a subject it never saw (a weak one): above the 25% of chance
    from scipy.stats import binomtest

    hits = int((np.array(pop.classes)[pop.cca.log_proba(Xt).argmax(1)] == yt).sum())
    assert binomtest(hits, len(yt), 0.25, alternative="greater").pvalue < 0.01
    patient = adapt(pop, Xt[:32], yt[:32], strategy="align+cca", guard=False, device="cpu")
    # the product's exponent was fitted on the population's validation subjects
    assert 0 < pop.cca.fitted_weight_ <= 10 and patient.cca.weight == pop.cca.fitted_weight_
    assert 0 < pop.cca.fitted_net_weight_ <= 10 and patient.cca.net_weight == pop.cca.fitted_net_weight_
    assert patient.adaptation.steps == ["align", "cca"]
    from eegtransfer.bundle import summarize

    assert "expert     CCA at 13, 17, 21 Hz on 4 bands: a prior for the cca step" in summarize(pop.to_meta())
    assert f"weight {pop.cca.fitted_weight_:.2f} in the product" in summarize(patient.to_meta())
    only = adapt(pop, Xt[:32], yt[:32], strategy="auto", device="cpu")
    assert only.adaptation.chosen in cand and set(only.adaptation.candidates) == set(cand)
    # the aligned network without the expert is scored beside the candidates, as a reference only
    assert set(only.adaptation.guard.compared) == set(cand) | {"align"}
    assert "the network without the expert ('align', not a candidate)" in only.adaptation.note
    # auto's warning is the chosen strategy's own guard: the same cross-fitted scores, the same verdict
    # (benchmarks/auto_warning.py reads the warning from the single strategies' rows on that basis)
    from eegtransfer.adaptation.auto import NOT_AHEAD

    chosen = only.adaptation.chosen
    single = adapt(pop, Xt[:32], yt[:32], strategy=chosen, device="cpu").adaptation.guard
    for name in (chosen, "align"):
        assert single.compared[name]["log_loss"] == pytest.approx(only.adaptation.guard.compared[name]["log_loss"])
    assert (single.kept != chosen) == (NOT_AHEAD in only.adaptation.guard.reason)
    # where the network alone scores best, auto still keeps a fused candidate and says so loudly
    import eegtransfer.adaptation.auto as auto_module

    real = auto_module.cross_fit

    def network_wins(cands, *args, **kwargs):
        scores = real(cands, *args, **kwargs)
        scores["align"]["log_loss"] = min(v["log_loss"] for v in scores.values()) - 1.0
        return scores

    monkeypatch.setattr(auto_module, "cross_fit", network_wins)
    with caplog.at_level("WARNING", logger="eegtransfer"):
        fused = adapt(pop, Xt[:32], yt[:32], strategy="auto", device="cpu")
    assert fused.adaptation.chosen in cand and NOT_AHEAD in caplog.text
    monkeypatch.undo()
    caplog.clear()
    with caplog.at_level("WARNING", logger="eegtransfer"):  # an aligned network fed unaligned trials
        adapt(pop, Xt[:32], yt[:32], strategy="cca", guard=False, device="cpu")
    assert "expects whitened trials" in caplog.text
    net_only = patient.copy()
    net_only.cca = None
    assert not np.allclose(patient.predict_proba(Xt[32:]), net_only.predict_proba(Xt[32:]))
    # the population's expert keeps half its say on rest, and so does the patient's; format 4 says so
    assert pop.cca.rest_evidence == patient.cca.rest_evidence == REST_EVIDENCE
    patient.save(tmp_path / "p")
    back = Bundle.load(tmp_path / "p")
    np.testing.assert_allclose(back.predict_proba(Xt[32:]), patient.predict_proba(Xt[32:]), atol=1e-5)
    import json

    from eegtransfer.errors import BundleError

    assert json.loads((tmp_path / "p" / "bundle.json").read_text())["format_version"] == 4
    monkeypatch.setattr("eegtransfer.bundle.FORMAT_VERSION", 3)  # a reader before it would give it the full say
    with pytest.raises(BundleError, match="format version 4 is newer than this eegtransfer reads"):
        Bundle.load(tmp_path / "p")


def test_fit_weight_trusts_the_expert_as_far_as_unseen_trials_say():
    y = np.tile(CLASSES, 10)
    e = CCAExpert.for_classes(CLASSES, SFREQ, max_freq=30).fit(ssvep_trials(y), y, l2=1e-3)
    yv = np.tile(CLASSES, 8)
    Xv = ssvep_trials(yv, seed=5)
    uniform = np.full((len(yv), 4), np.log(0.25))
    assert e.fit_weight(uniform, Xv, yv) > 0.5  # a network that knows nothing: the expert decides
    sure = np.log(np.where(np.eye(4)[[CLASSES.index(c) for c in yv]] > 0, 0.97, 0.01))
    noise = ssvep_trials(np.full(len(yv), "rest"), seed=6)  # trials in which the expert sees nothing
    assert e.fit_weight(sure, noise, yv) < 0.2  # a network that is right: the expert stays out
    back = CCAExpert.from_dict(e.to_dict())
    assert (back.fitted_weight_, back.fitted_net_weight_) == (e.fitted_weight_, e.fitted_net_weight_)


def test_fit_weight_tempers_an_overconfident_network():
    """A network right on 60 % of trials with 99 % confidence gets an exponent under 1, and the
    product leans further towards an expert that is right more often than with the network's
    exponent held at 1."""
    from scipy.optimize import minimize_scalar

    from eegtransfer.ssvep import _log_softmax

    y = np.tile(CLASSES, 10)
    e = CCAExpert.for_classes(CLASSES, SFREQ, max_freq=30).fit(ssvep_trials(y, snr=0.2), y, l2=1e-3)
    yv = np.tile(CLASSES, 15)
    Xv = ssvep_trials(yv, seed=5, snr=0.2)  # the expert is right on 85 % of them
    rng = np.random.default_rng(0)
    said = np.where(rng.random(len(yv)) < 0.6, yv, rng.choice(CLASSES, len(yv)))
    net = np.log(np.where(np.array(CLASSES)[None] == said[:, None], 0.99, 0.01 / 3))
    w = e.fit_weight(net, Xv, yv)
    assert e.fitted_net_weight_ < 0.5
    cols = e._class_index(yv)
    expert = e.log_proba(Xv)
    w_fixed = minimize_scalar(lambda v: -_log_softmax(net + v * expert)[np.arange(len(yv)), cols].mean(),
                              bounds=(0, 10), method="bounded").x
    assert w / e.fitted_net_weight_ > 1.3 * w_fixed


def test_without_a_population_the_expert_starts_from_the_cca_rule():
    classes = ["13", "17", "21"]
    y = np.array(classes * 2)  # a few seconds per class on a new set-up
    X = ssvep_trials(y, snr=1.0)
    e = CCAExpert.for_classes(classes, SFREQ, max_freq=30).fit(X, y, l2=1e4)
    n_bands, n_comp = len(e.bands), e.n_components
    assert n_comp == 2  # each band: the first correlations with 13, 17, 21 Hz, then the second ones
    rule = np.tile(np.hstack([2.0 / n_bands * np.eye(3), np.zeros((3, 3 * (n_comp - 1)))]), n_bands)
    np.testing.assert_allclose(e.coef_, rule, atol=1e-2)  # held at the rule: first correlations only
    yt = np.array(classes * 10)
    Xt = ssvep_trials(yt, snr=1.0, seed=4)
    assert (np.array(classes)[e.log_proba(Xt).argmax(1)] == yt).mean() > 0.9
    # without a filter bank the rule is plain CCA: the largest correlation wins
    plain = CCAExpert.for_classes(classes, SFREQ, max_freq=30, bands=[None]).fit(X, y, l2=1e4)
    rule = np.array(classes)[cca_correlations(Xt, SFREQ, [13, 17, 21], max_freq=30).argmax(1)]
    assert (np.array(classes)[plain.log_proba(Xt).argmax(1)] == rule).all()


def test_filter_bank_has_one_subband_per_frequency_and_keeps_the_background_out():
    assert subbands([13, 17, 21], 64.0, max_freq=30) == [None, (12.0, 30.0), (16.0, 30.0), (20.0, 30.0)]
    assert subbands([13, 29], 64.0, max_freq=30) == [None, (12.0, 30.0)]  # no room above 28 Hz
    # 21 Hz under a strong 10 Hz background (alpha): the 20-30 Hz band sees 21 Hz alone
    rng = np.random.default_rng(0)
    t = np.arange(256) / SFREQ
    X = 0.3 * rng.standard_normal((6, 4, 256))
    X += 0.2 * np.sin(2 * np.pi * 21 * t + rng.uniform(0, 6, (6, 4, 1)))
    X += 3.0 * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6, (6, 4, 1))) * rng.uniform(0.5, 1.5, (6, 4, 1))
    rho = filter_bank_correlations(X, SFREQ, [17, 21], [None, (20.0, 30.0)], max_freq=30)
    assert rho.shape == (6, 4)  # band-major: (broadband 17, 21), (sub-band 17, 21)
    assert (rho[:, 3] > rho[:, 1] + 0.1).all() and (rho[:, 3] > 0.6).all()
    # a spatial filter leaves every band's correlations unchanged (alignment does not touch the expert)
    mix = rng.standard_normal((4, 4)) + 3 * np.eye(4)
    np.testing.assert_allclose(filter_bank_correlations(np.einsum("ij,njt->nit", mix, X), SFREQ, [17, 21],
                                                        [None, (20.0, 30.0)], max_freq=30), rho, atol=1e-8)


def test_the_expert_keeps_only_part_of_its_say_on_rest():
    """Rest is learnt from the correlations' overall level, which drifts between runs."""
    y = np.tile(CLASSES, 10)
    X = ssvep_trials(y)
    full = CCAExpert.for_classes(CLASSES, SFREQ, max_freq=30).fit(X, y, l2=1e-3)
    assert full.rest_evidence == 1.0 and REST_EVIDENCE == 0.5  # full say by default; a population's: half
    lp = {}
    for share in (0.0, 0.5, 1.0):
        e = CCAExpert.from_dict({**full.to_dict(), "rest_evidence": share})
        assert e.unfitted(weight=1.0).rest_evidence == share and repr(e).endswith(f"rest_evidence={share:g})")
        lp[share] = e.log_proba(X)
        np.testing.assert_allclose(np.exp(lp[share]).sum(1), 1.0, rtol=1e-6)  # probabilities
    # none: no say on rest (1 in 4 for every trial), the frequencies in their softmax's proportions
    np.testing.assert_allclose(np.exp(lp[0.0][:, 3]), 0.25, rtol=1e-6)
    stim = np.exp(lp[1.0][:, :3]) / np.exp(lp[1.0][:, :3]).sum(1, keepdims=True)
    np.testing.assert_allclose(np.exp(lp[0.0][:, :3]) / 0.75, stim, rtol=1e-5)
    # rest against the best frequency: half the expert's say lies strictly between none and all
    odds = {k: v[:, 3] - v[:, :3].max(1) for k, v in lp.items()}
    rest = y == "rest"
    assert (odds[1.0][rest] > odds[0.5][rest]).all() and (odds[0.5][rest] > odds[0.0][rest]).all()
    assert (odds[1.0][rest] > 0).mean() > 0.8  # the full expert does know rest here
    # with every class a frequency nothing changes; a bundle without the key keeps the full say
    three = np.tile(["13", "17", "21"], 8)
    e3 = CCAExpert.for_classes(["13", "17", "21"], SFREQ, max_freq=30).fit(ssvep_trials(three), three)
    np.testing.assert_allclose(e3.log_proba(X), CCAExpert.from_dict({**e3.to_dict(), "rest_evidence": 0.5})
                               .log_proba(X), atol=1e-12)
    d = CCAExpert.from_dict({**full.to_dict(), "rest_evidence": 0.5}).to_dict()
    del d["rest_evidence"]
    assert CCAExpert.from_dict(d).rest_evidence == 1.0
    with pytest.raises(EEGTransferError, match=r"CCAExpert rest_evidence= must be between 0 and 1, got 1.5"):
        CCAExpert(CLASSES, {"13": 13.0}, SFREQ, rest_evidence=1.5)


def test_expert_bands_are_checked_and_old_bundles_read_plain_cca():
    with pytest.raises(EEGTransferError, match=r"band \(20, 40\) Hz"):
        CCAExpert.for_classes(CLASSES, SFREQ, bands=[(20, 40)])
    y = np.tile(CLASSES, 5)
    X = ssvep_trials(y)
    old = CCAExpert.for_classes(CLASSES, SFREQ, max_freq=30, bands=[None], n_components=1).fit(X, y)
    d = old.to_dict()
    del d["bands"], d["n_components"]  # as written before the filter bank
    np.testing.assert_allclose(CCAExpert.from_dict(d).log_proba(X), old.log_proba(X))
    new = CCAExpert.for_classes(CLASSES, SFREQ, max_freq=30)
    with pytest.raises(EEGTransferError, match="reads other features"):
        new.fit(X, y, prior=old)


def test_interpolated_channels_add_no_correlation():
    """Channels that are combinations of others (interpolated) carry no new direction."""
    y = np.repeat(["13", "17", "21"], 4)
    X = ssvep_trials(y, n_chans=6, snr=0.3).astype(np.float64)
    mix = np.random.default_rng(2).standard_normal((2, 6)) / 6
    X8 = np.concatenate([X, np.einsum("ij,njt->nit", mix, X)], axis=1)  # 8 channels of rank 6
    np.testing.assert_allclose(cca_correlations(X8.astype(np.float32), SFREQ, [13, 17, 21], max_freq=30),
                               cca_correlations(X, SFREQ, [13, 17, 21], max_freq=30), atol=1e-3)


def test_chunked_correlations_and_fit_equal_the_unchunked(monkeypatch):
    import eegtransfer.ssvep as ssvep

    y = np.tile(CLASSES, 3)
    X = ssvep_trials(y)
    whole = filter_bank_correlations(X, SFREQ, [13, 17, 21], subbands([13, 17, 21], SFREQ, max_freq=30),
                                     max_freq=30, n_components=2)
    e_whole = CCAExpert.for_classes(CLASSES, SFREQ, max_freq=30).fit(X, y)
    monkeypatch.setattr(ssvep, "CHUNK", 5)  # 12 trials: three chunks, the last one short
    np.testing.assert_allclose(filter_bank_correlations(X, SFREQ, [13, 17, 21],
                                                        subbands([13, 17, 21], SFREQ, max_freq=30),
                                                        max_freq=30, n_components=2), whole)
    e_chunked = CCAExpert.for_classes(CLASSES, SFREQ, max_freq=30).fit(X, y)
    np.testing.assert_allclose(e_chunked.coef_, e_whole.coef_, atol=1e-8)


def test_an_old_bundle_expert_goes_through_the_cca_step_as_plain_cca(fake_population, tmp_path):
    y = np.tile(CLASSES, 5)
    X = ssvep_trials(y)
    d = CCAExpert.for_classes(CLASSES, SFREQ, max_freq=30, weight=0.0, bands=[None], n_components=1) \
        .fit(X, y, l2=1e-3).to_dict()
    for key in ("bands", "n_components", "fitted_weight", "net_weight", "fitted_net_weight"):
        del d[key]  # as bundles wrote it before the filter bank
    old = CCAExpert.from_dict(d)
    assert old.bands == [None] and old.n_components == 1 and old.fitted_weight_ is None and old.net_weight == 1
    step = CCA()
    e = step.fit(type("B", (), {"classes": CLASSES, "cca": old,
                                "recipe": type("R", (), {"sfreq": SFREQ, "h_freq": 30.0})()})(), X, y).cca
    assert e.bands == [None] and e.n_components == 1 and e.weight == 1.0  # no fitted weight: 1
    assert step.facts_ == {"cca_prior": "population", "cca_weight": 1.0, "cca_net_weight": 1.0}
    old.fitted_weight_ = 2.0  # an expert whose exponent was fitted with the network's held at 1
    assert step.fit(type("B", (), {"classes": CLASSES, "cca": old,
                                   "recipe": type("R", (), {"sfreq": SFREQ, "h_freq": 30.0})()})(), X, y).cca \
        .net_weight == 1.0


def test_the_cca_step_takes_both_exponents_from_its_prior():
    y = np.tile(CLASSES, 5)
    X = ssvep_trials(y)
    prior = CCAExpert.for_classes(CLASSES, SFREQ, max_freq=30, weight=0.0, rest_evidence=REST_EVIDENCE) \
        .fit(X, y, l2=1e-3)
    prior.fitted_weight_, prior.fitted_net_weight_ = 2.0, 0.3

    def fitted(step: CCA, expert: CCAExpert | None) -> CCAExpert:
        return step.fit(type("B", (), {"classes": CLASSES, "cca": expert,
                                       "recipe": type("R", (), {"sfreq": SFREQ, "h_freq": 30.0})()})(), X, y).cca

    def exponents(step: CCA, expert: CCAExpert) -> tuple[float, float]:
        e = fitted(step, expert)
        return e.weight, e.net_weight

    assert exponents(CCA(), prior) == (2.0, 0.3)  # the population's fitted pair
    assert exponents(CCA(weight=1.5), prior) == (1.5, 1.0)  # a number: the network's stays 1
    patient = prior.unfitted(weight=2.0, net_weight=0.3).fit(X, y, prior=prior)
    assert patient.fitted_weight_ is None and exponents(CCA(), patient) == (2.0, 0.3)  # adapted again
    # the say on rest: the prior's (a population's: REST_EVIDENCE; an old bundle's: 1); without one, 1
    assert fitted(CCA(), prior).rest_evidence == REST_EVIDENCE < 1.0
    old = CCAExpert.from_dict({k: v for k, v in prior.to_dict().items() if k != "rest_evidence"})
    assert fitted(CCA(), old).rest_evidence == 1.0
    assert fitted(CCA(), None).rest_evidence == 1.0


def test_fit_weight_warns_when_the_network_adds_nothing(caplog):
    y = np.tile(CLASSES, 10)
    e = CCAExpert.for_classes(CLASSES, SFREQ, max_freq=30).fit(ssvep_trials(y), y, l2=1e-3)
    yv = np.tile(CLASSES, 15)
    guess = np.random.default_rng(1).choice(CLASSES, len(yv))  # confident and right by chance only
    net = np.log(np.where(np.array(CLASSES)[None] == guess[:, None], 0.97, 0.01))
    with caplog.at_level("WARNING", logger="eegtransfer"):
        e.fit_weight(net, ssvep_trials(yv, seed=5), yv)
    assert e.fitted_net_weight_ < 0.05 and "the network adds little to the expert" in caplog.text


def test_bad_expert_arguments_get_one_line_naming_them():
    with pytest.raises(EEGTransferError, match=r"bands=: each band must be \(low, high\) in Hz or None, got \(5,\)"):
        CCAExpert.for_classes(CLASSES, SFREQ, bands=[(5,)])
    y = np.tile(CLASSES, 3)
    X = ssvep_trials(y)
    e = CCAExpert.for_classes(CLASSES, SFREQ, max_freq=30).fit(X, y)
    with pytest.raises(EEGTransferError, match=r"labels \['9'\] are not among"):
        e.fit_weight(np.zeros((12, 4)), X, np.array(["9"] * 12))
    with pytest.raises(EEGTransferError, match=r"net_log_proba must have shape \(12, 4\), got \(12, 3\)"):
        e.fit_weight(np.zeros((12, 3)), X, y)
    with pytest.raises(EEGTransferError, match=r"CCAExpert net_weight= must be a number >= 0, got -0.5"):
        CCAExpert.for_classes(CLASSES, SFREQ).unfitted(weight=1.0, net_weight=-0.5)
    with pytest.raises(EEGTransferError, match=r"CCAExpert weight= must be a number >= 0, got 'x'"):
        CCAExpert(CLASSES, {"13": 13.0}, SFREQ, weight="x")
    with pytest.raises(EEGTransferError, match=r"CCA\(weight=\) \(cca_weight=\) must be a number >= 0"):
        parse_strategy("cca", cca_weight=-1)[0].fit(
            type("B", (), {"classes": CLASSES, "cca": None,
                           "recipe": type("R", (), {"sfreq": SFREQ, "h_freq": 30.0})()})(), X, y)
