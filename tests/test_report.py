"""The trust report: numbers against scipy, the verdict and warnings first, ``eegtransfer report``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eegtransfer.report import (
    build_report,
    calibration_facts,
    check_report_path,
    findings,
    render_html,
    score_against_chance,
    validation_facts,
    verdict,
    write_report,
)

EXE = [sys.executable, "-m", "eegtransfer.cli"]
REPRS = ("['", "[&#x27;", "True", "False", "{}", "None", "{'", "{&#x27;")


def run_cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*EXE, *map(str, args)], capture_output=True, text=True, timeout=300, env=env)


def patient_meta(confusion, *, interpolated=(), one_file_per_class=False, guard_skipped=""):
    """A patient bundle.json as `eegtransfer calibrate` stores it, without any model."""
    classes = ["13", "17", "21", "rest"]
    cm = np.asarray(confusion)
    files = ([{"path": f"/d/{c}.edf", "sha256": "0" * 64, "n_trials": 10, "n_bad_dropped": 0, "sfreq": 256.0,
               "events_from": "consecutive windows", "renamed": {}, "dropped": [], "interpolated": [],
               "minutes": 1.0, "classes": {c: 10}} for c in classes] if one_file_per_class else
             [{"path": "/d/run1.fif", "sha256": "0" * 64, "n_trials": 64, "n_bad_dropped": 0, "sfreq": 256.0,
               "events_from": "stim channel", "renamed": {"Oz..": "Oz"}, "dropped": ["ECG"],
               "interpolated": list(interpolated), "minutes": 3.7, "classes": {c: 16 for c in classes}}])
    held = {"n": int(cm.sum()), "correct": int(np.trace(cm)), "classes": classes, "confusion": cm.tolist(),
            "counts": dict(zip(classes, cm.sum(axis=1).tolist())), "accuracy": np.trace(cm) / cm.sum(),
            "balanced_accuracy": float(np.mean(np.diag(cm) / cm.sum(axis=1))),
            "mean_top_probability": 0.27, "mean_normalised_entropy": 0.99}
    calibration = {"recordings": [{"path": f["path"], "sha256": f["sha256"]} for f in files],
                   "calibration_minutes": 1.65, "selection": "first 0.17 min per class",
                   "n_heldout_trials": held["n"], "channels": ["Oz", "O1", "O2", "PO3", "POz", "PO7", "PO8", "PO4"],
                   "interpolated": list(interpolated), "created": "2025-01-31T10:00:00+00:00",
                   "command": "eegtransfer calibrate --model pop --recording run1.fif --out p", "subject": "patient",
                   "calibration_counts": {c: 2 for c in classes}, "calibration_files": [0], "files": files,
                   "population": {"path": "/b/pop", "model": "EEGNet", "metrics": {"val_acc": 0.71}},
                   "heldout": held}
    return {"model": {"name": "EEGNet", "n_times": 512}, "ch_names": calibration["channels"], "sfreq": 128.0,
            "classes": classes, "recipe": {"tmin": 1.0, "tmax": 5.0},
            "provenance": {"dataset": "Kalunga2016", "validation_subjects": ["2", "7"], "seed": 0},
            "metrics": {"heldout_accuracy": held["accuracy"]}, "history": {},
            "adaptation": {"strategy": "head", "steps": ["head"], "n_calibration_trials": 8, "new_head": False,
                           "guard": None, "guard_skipped": guard_skipped, "device": "cpu", "seconds": 0.1,
                           "calibration": calibration}}


CHANCE = [[3, 3, 3, 3]] * 4             # 12 of 48 correct, 4 classes: chance
GOOD = np.eye(4, dtype=int) * 11 + 1    # 44 of 60


@pytest.mark.parametrize("k, n, chance", [(12, 48, 0.25), (44, 60, 0.25), (0, 10, 0.5), (10, 10, 0.5),
                                          (17, 30, 1 / 3)])
def test_interval_and_p_value_match_scipy(k, n, chance):
    from scipy.stats import binomtest

    s = score_against_chance(k, n, chance)
    ref = binomtest(k, n, chance, alternative="greater")
    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert s["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert s["accuracy"] == k / n


def test_chance_level_calibration_shows_the_warning_first():
    meta = patient_meta(CHANCE)
    assert verdict(meta)[0] == "Not above chance"
    page = render_html(meta)
    warning = page.index("The held-out accuracy is not above chance")
    assert page.index("Not above chance") < warning < page.index("95% confidence interval (Wilson)")
    titles = [f.title for f in findings(meta)]
    assert titles[0] == "The held-out accuracy is not above chance"
    assert "Near-uniform probabilities on the held-out trials" in titles
    body = "".join(build_report(meta).html)
    assert "25.0%" in body and "p = " in body and "8 trials × 4 s = 32 s of EEG" in body
    assert "spanning the first 1.65 min of recording" in body and "from run1.fif" in body
    assert "2025-01-31 10:00 UTC" in body and "eegtransfer calibrate --model pop" in body
    assert "Oz.. → Oz" in body and "Interpolated" not in body
    assert not [r for r in REPRS if r in body], [r for r in REPRS if r in body]
    # self-contained: no script, style sheet or image is fetched from elsewhere
    assert not re.search(r"<(img|script)\b[^>]*\bsrc=[\"']?(https?:)?//", page)
    assert not re.search(r"<link\b[^>]*\bhref=[\"']?(https?:)?//", page)


def test_good_calibration_and_warnings_with_severity():
    meta = patient_meta(GOOD, interpolated=["O1", "O2", "PO3", "POz", "PO8"], one_file_per_class=True,
                        guard_skipped="off (guard=False)")
    meta["adaptation"]["calibration"]["heldout"]["mean_normalised_entropy"] = 0.4
    assert verdict(meta)[0] == "Above chance"
    items = {f.title: f.severity for f in findings(meta)}
    assert items["5 of 8 model channels were interpolated"] == "high"
    assert items["One recording per class: a confound"] == "high"
    assert items["The guard was skipped"] == "medium"
    assert "Near-uniform probabilities on the held-out trials" not in items
    body = "".join(build_report(meta).html)
    assert "Above chance, but see the warnings" in body and "guard=False" in body


def test_auto_says_when_its_choice_is_not_ahead_of_the_network_alone():
    from eegtransfer.adaptation.auto import NOT_AHEAD

    meta = patient_meta(GOOD)
    reason = ("auto chose 'cca' by cross-fitted log-loss on unseen calibration trials (cca 0.700, cca+ts 0.710; "
              "margin 0.02); the network without the expert ('none', not a candidate) 0.690")
    meta["adaptation"].update(strategy="auto", guard={"kept": "cca", "reason": reason, "compared": {}})
    assert not [f for f in findings(meta) if "guard" in f.title or "auto" in f.title]  # ahead: nothing to say
    meta["adaptation"]["guard"]["reason"] = reason + f": 'cca' {NOT_AHEAD}, so a single guarded strategy ..."
    found = {f.title: f for f in findings(meta)}
    hit = found["auto's choice, cca, is not ahead of the network without the expert"]
    assert hit.severity == "medium" and "('none', not a candidate) 0.690" in hit.detail
    assert not [t for t in found if t.startswith("The guard kept")]  # not the single strategies' wording


def test_nothing_held_out_says_so():
    meta = patient_meta(CHANCE)
    cal = meta["adaptation"]["calibration"]
    cal["heldout"], cal["n_heldout_trials"] = None, 0
    meta["metrics"] = {}
    assert verdict(meta)[0] == "No held-out score"
    assert findings(meta)[0].title == "No held-out score"
    assert "Unavailable: no trial was held out." in "".join(build_report(meta).html)


def test_report_path_is_checked_and_written_atomically(tmp_path):
    from eegtransfer.errors import EEGTransferError

    with pytest.raises(EEGTransferError, match="does not exist"):
        check_report_path(tmp_path / "missing" / "r.html")
    with pytest.raises(EEGTransferError, match=".html"):
        check_report_path(tmp_path / "r.pdf")
    out = write_report(patient_meta(GOOD), tmp_path / "r.html")
    assert out.read_text().startswith("<!DOCTYPE html>") or "<html" in out.read_text()[:500]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]  # no temporary file left
    with pytest.raises(EEGTransferError, match="already exists"):
        write_report(patient_meta(GOOD), out)
    assert not (tmp_path / "missing").exists()


@pytest.fixture(scope="module")
def bundles(fake_population, fake_trials, tmp_path_factory):
    """A population bundle with per-subject validation scores, and two patients of FakeDataset subject 1:
    one with the facts `calibrate` stores, one adapted from Python (no facts)."""
    from eegtransfer.adaptation import adapt
    from eegtransfer.evaluation import score_bundle

    X, meta, _ = fake_trials
    folder = tmp_path_factory.mktemp("bundles")
    pop = fake_population.copy()
    popm = (meta["subject"] != "1").to_numpy()
    pop.provenance["validation"] = validation_facts(pop, X[popm], meta["label"][popm].to_numpy(), meta[popm])
    pop_path = pop.save(folder / "population")
    mt = meta[~popm].reset_index(drop=True)
    Xt, y = X[~popm], mt["label"].astype(str).to_numpy()
    cal = np.arange(len(y)) < 30
    patient = adapt(pop, Xt[cal], y[cal], strategy="head", device="cpu")
    plain = patient.save(folder / "plain")
    held = score_bundle(patient, Xt[~cal], y[~cal])
    recs = [{"path": "/d/s1.edf", "sha256": "0" * 64, "n_trials": len(y), "n_bad_dropped": 0, "sfreq": 128.0,
             "events_from": "annotations", "renamed": {}, "dropped": [], "interpolated": [], "minutes": 4.0}]
    patient.adaptation.calibration.update(calibration_facts(
        patient, Xt, y, mt.assign(run="0"), cal, held=held, recordings=recs, population=pop.to_meta(),
        population_path=pop_path))
    return pop_path, patient.save(folder / "patient"), plain, held


def test_validation_facts_add_up(bundles):
    from eegtransfer.bundle import read_meta

    meta = read_meta(bundles[0])
    val = meta["provenance"]["validation"]
    n = sum(s["n"] for s in val["subjects"].values())
    k = sum(s["correct"] for s in val["subjects"].values())
    assert set(val["subjects"]) == set(meta["provenance"]["validation_subjects"])
    assert k / n == pytest.approx(meta["metrics"]["val_acc"], abs=1e-6)


def test_cli_report_on_population_and_patients(bundles, tmp_path):
    pop, patient, plain, held = bundles
    r = run_cli("report", pop, "--out", tmp_path / "pop.html", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["verdict"] in ("Above chance", "Not above chance") and (tmp_path / "pop.html").is_file()
    page = (tmp_path / "pop.html").read_text()
    assert "Validation subjects" in page and "the weights of epoch" in page

    r = run_cli("report", patient, "--out", tmp_path / "patient.html")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("verdict") and f"report       {tmp_path / 'patient.html'}" in r.stdout
    page = (tmp_path / "patient.html").read_text()
    assert f"{held['accuracy']:.1%} ({int(round(held['accuracy'] * held['n']))} of {held['n']})" in page
    assert "Confusion matrix (held-out, normalised)" in page and "Recall per class" in page

    r = run_cli("report", plain, "--json")  # default output beside the folder
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["out"] == str(Path(plain).absolute()) + ".html" and res["verdict"] == "No held-out score"
    page = Path(res["out"]).read_text()
    assert "Unavailable: no trial was held out." in page and "files not stored" in page

    again = run_cli("report", plain)
    assert again.returncode == 2 and "already exists" in again.stderr
    inside = run_cli("report", plain, "--out", Path(plain) / "r.html")
    assert inside.returncode == 2 and "inside" in inside.stderr


def test_cli_pretrain_report(tmp_path):
    out, report = tmp_path / "pop", tmp_path / "pop.html"
    args = ("pretrain", "--dataset", "FakeDataset", "--paradigm", "imagery", "--subjects", 1, 2, "--epochs", 2,
            "--tmin", 0, "--tmax", 1, "--sfreq", 64, "--h-freq", 30, "--out", out, "--quiet", "--device", "cpu",
            "--allow-chance")  # FakeDataset is noise: its population is at chance, on purpose here
    missing = run_cli(*args, "--report", tmp_path / "nope" / "r.html")
    assert missing.returncode == 2 and "does not exist" in missing.stderr and not out.exists()
    r = run_cli(*args, "--report", report, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["report"] == str(report)
    page = report.read_text()
    assert "eegtransfer population report" in page and "the weights of epoch" in page
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["provenance"]["command"].startswith("eegtransfer pretrain --dataset FakeDataset")
    subject = meta["provenance"]["validation_subjects"][0]
    assert f"<th>{subject}</th>" in page  # one row per validation subject
