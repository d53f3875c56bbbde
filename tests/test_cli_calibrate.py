"""``eegtransfer calibrate / predict / pretrain`` run as a user runs them, on real recordings.

Kalunga2016 FIF files are read as if they were a patient's own files (no
MOABB), and turned into EDF+/BDF, PhysioNet-style channel names and
whole-file-label manifests. One tiny population bundle serves the session.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import KALUNGA_ID, kalunga_annotated

EXE = [sys.executable, "-m", "eegtransfer.cli"]
KALUNGA = ["Oz", "O1", "O2", "PO3", "POz", "PO7", "PO8", "PO4"]
CLASSES = ["13", "17", "21", "rest"]


def run_cli(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run([*EXE, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def one_line_error(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def annotated(kalunga_path, subject=1, run=1):
    """A Kalunga FIF read as a user's file: EEG channels only, events as annotations."""
    return kalunga_annotated(kalunga_path, subject, run)[0]


def export(raw, path, fmt):
    import mne

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mne.export.export_raw(path, raw, fmt=fmt, overwrite=True, verbose="error")
    return Path(path)


def no_leftovers(folder: Path, allowed: set[str]) -> None:
    """Nothing but the inputs in ``folder``: no output, no hidden temporary folder."""
    assert {p.name for p in folder.iterdir()} <= allowed, sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="session")
def population(tmp_path_factory, kalunga_path) -> Path:
    """EEGNet pretrained 2 epochs on Kalunga subjects 2 and 3 (first runs), read as files."""
    import pandas as pd

    from eegtransfer.io import load_recording
    from eegtransfer.preprocessing import Recipe
    from eegtransfer.training.pretraining import pretrain

    recipe = Recipe(channels=KALUNGA, sfreq=128.0, tmin=1.0, tmax=5.0, l_freq=4.0, h_freq=45.0)
    recs = [load_recording(kalunga_path / f"subject{s:02d}_run1_raw.fif", recipe, classes=CLASSES,
                           default_id=KALUNGA_ID, subject=str(s)) for s in (2, 3)]
    X = np.concatenate([r.X for r in recs])
    meta = pd.concat([r.meta for r in recs], ignore_index=True)
    pop = pretrain(X, meta["label"].to_numpy(), meta, recipe, model="EEGNet", epochs=2, device="cpu",
                   seed=0, provenance={"dataset": "Kalunga2016", "event_id": KALUNGA_ID})
    return pop.save(tmp_path_factory.mktemp("pop") / "population")


@pytest.fixture(scope="session")
def s1_raw(kalunga_path):
    return annotated(kalunga_path)


# --- what users do ---------------------------------------------------------------

@pytest.mark.real
def test_calibrate_fif_recordings_then_predict(population, kalunga_path, tmp_path):
    import mne

    run1, run2 = (kalunga_path / f"subject01_run{r}_raw.fif" for r in (1, 2))
    out, report = tmp_path / "patient", tmp_path / "report.html"
    r = run_cli("calibrate", "--model", population, "--recording", run1, "--recording", run2,
                "--minutes", 2, "--out", out, "--report", report, "--json", "--quiet", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    for key in ("heldout_accuracy", "heldout_balanced_accuracy", "n_calibration_trials", "calibration_minutes",
                "classes", "strategy", "device", "seconds", "out", "new_head", "interpolated", "guard"):
        assert key in res, key
    # expected calibration trials: those of run 1 that end (onset + tmax = 5 s) within 2 minutes
    raw1 = mne.io.read_raw_fif(run1, verbose="error")
    ev = mne.find_events(raw1, shortest_event=0, verbose="error")
    onsets = (ev[:, 0] - raw1.first_samp) / raw1.info["sfreq"]
    n_cal = int((onsets + 5.0 <= 120).sum())
    assert res["n_calibration_trials"] == n_cal and res["n_heldout_trials"] == 64 - n_cal
    assert res["calibration_minutes"] <= 2.0 and res["classes"] == CLASSES and not res["new_head"]
    assert res["strategy"] == "auto" and res["device"] == "cpu" and res["interpolated"] == []
    assert 0 <= res["heldout_accuracy"] <= 1 and 0 <= res["heldout_balanced_accuracy"] <= 1
    assert not r.stderr.strip()  # --quiet

    meta = json.loads((out / "bundle.json").read_text())
    assert meta["adaptation"]["calibration"]["recordings"] == [{"path": str(p.absolute()), "sha256": sha256(p)}
                                                for p in (run1, run2)]
    assert meta["adaptation"]["n_calibration_trials"] == n_cal
    assert meta["metrics"]["heldout_accuracy"] == pytest.approx(res["heldout_accuracy"])
    html = report.read_text()
    # verdict first, the confusion matrix, the sensors, plus the training curve when training had epochs
    assert html.index("Verdict and warnings") < html.index("Confusion matrix (held-out, normalised)")
    if not meta["history"].get("epochs"):
        assert f"in {meta['history']['iterations']} iterations" in html
    assert f"{res['heldout_accuracy']:.1%}" in html and "PO7" in html and sha256(run1) in html
    assert meta["adaptation"]["calibration"]["heldout"]["n"] == res["n_heldout_trials"]  # for `eegtransfer report`

    # an existing patient bundle is not replaced
    again = run_cli("calibrate", "--model", population, "--recording", run1, "--out", out)
    assert "already exists" in one_line_error(again)
    assert json.loads((out / "bundle.json").read_text()) == meta

    preds = tmp_path / "pred.csv"
    p = run_cli("predict", "--model", out, "--recording", run2, "--out", preds, "--json", "--quiet")
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(preds, dtype={"label": str, "predicted": str})
    assert len(df) == 32 and list(df.columns) == ["onset", "label", "predicted"] + [f"p_{c}" for c in CLASSES]
    np.testing.assert_allclose(df[[f"p_{c}" for c in CLASSES]].sum(axis=1), 1, atol=1e-4)
    assert (df["predicted"] == df[[f"p_{c}" for c in CLASSES]].idxmax(axis=1).str[2:]).all()
    assert json.loads(p.stdout)["accuracy"] == pytest.approx((df["label"] == df["predicted"]).mean())
    assert df["onset"].is_monotonic_increasing
    assert "already exists" in one_line_error(run_cli("predict", "--model", out, "--recording", run2,
                                                      "--out", preds))

    # transductive: the recording's classes balanced without labels (run 2 holds 8 trials of each)
    balanced = tmp_path / "balanced.csv"
    b = run_cli("predict", "--model", out, "--recording", run2, "--out", balanced, "--balance-classes", "--json",
                "--quiet")
    assert b.returncode == 0, b.stderr
    assert json.loads(b.stdout)["balanced_classes"] and not json.loads(p.stdout)["balanced_classes"]
    cols = [f"p_{c}" for c in CLASSES]
    q = pd.read_csv(balanced, dtype={"label": str, "predicted": str})
    np.testing.assert_allclose(q[cols].mean(), 0.25, atol=1e-5)
    # the predicted classes move towards the design's 8 trials each (plain here: 11, 10, 6 and 5)
    off = [(f["predicted"].value_counts().reindex(CLASSES, fill_value=0) - 8).abs().max() for f in (df, q)]
    assert off[1] <= min(off[0], 2), off
    assert (q["predicted"] == q[cols].idxmax(axis=1).str[2:]).all()


@pytest.mark.real
def test_calibrate_edf_and_bdf_with_annotations(population, s1_raw, tmp_path):
    """One EDF+ and one BDF+ (written from a real recording) calibrate together."""
    edf = export(s1_raw, tmp_path / "s1.edf", "edf")
    bdf = export(s1_raw, tmp_path / "s1.bdf", "bdf")
    out = tmp_path / "patient"
    r = run_cli("calibrate", "--model", population, "--recording", edf, "--recording", bdf, "--trials", 3,
                "--per-class", "--out", out, "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    # the first 3 trials of each class come from the first file; the rest is held out
    assert res["n_calibration_trials"] == 12 and res["n_heldout_trials"] == 64 - 12
    assert res["recordings"] == [{"path": str(p), "sha256": sha256(p)} for p in (edf, bdf)]
    assert res["calibration_minutes"] < 3.8
    meta = json.loads((out / "bundle.json").read_text())
    assert [d["sha256"] for d in meta["adaptation"]["calibration"]["recordings"]] == [sha256(edf), sha256(bdf)]
    assert meta["sfreq"] == 128.0  # 256 Hz files resampled to the model's rate


@pytest.mark.real
def test_calibrate_physionet_names_reordered_extra_and_missing(population, s1_raw, tmp_path):
    import mne

    raw = s1_raw.copy().drop_channels(["PO7"])
    raw.rename_channels({c: (c[0] + c[1:].lower()).ljust(4, ".") for c in raw.ch_names})  # Oz.. Po3.
    raw.reorder_channels(raw.ch_names[::-1])
    extra = mne.io.RawArray(np.random.default_rng(0).standard_normal((2, raw.n_times)) * 1e-5,
                            mne.create_info(["Fc5.", "ECG"], 256.0, ["eeg", "ecg"]), verbose="error")
    raw.add_channels([extra], force_update_info=True)
    rec = tmp_path / "physionet.edf"
    export(raw, rec, "edf")

    refused = run_cli("calibrate", "--model", population, "--recording", rec, "--out", tmp_path / "p0")
    assert "['PO7']" in one_line_error(refused) and "--interpolate-missing" in refused.stderr
    out, report = tmp_path / "patient", tmp_path / "r.html"
    r = run_cli("calibrate", "--model", population, "--recording", rec, "--trials", 16, "--out", out,
                "--interpolate-missing", "--report", report, "--quiet")
    assert r.returncode == 0, r.stderr
    assert "rest (the model's own)" in r.stdout and "interpolated PO7" in r.stdout
    assert "held-out     16 trials" in r.stdout
    html = report.read_text()
    assert "Oz.." in html and "Fc5." in html and "ECG" in html  # renamed and dropped are reported
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["adaptation"]["calibration"]["interpolated"] == ["PO7"] and meta["ch_names"] == KALUNGA


@pytest.mark.real
def test_manifest_whole_file_labels_new_head_and_pretrain(population, kalunga_path, tmp_path):
    """Files that each hold one class (cut from real trials); labels new to the model."""
    import mne

    folder = tmp_path / "data"
    folder.mkdir()
    rows = []
    for subject in (1, 2):
        raw = mne.io.read_raw_fif(kalunga_path / f"subject{subject:02d}_run1_raw.fif", preload=True,
                                  verbose="error")
        ev = mne.find_events(raw, shortest_event=0, verbose="error")
        for name, code in (("rest", 1), ("13Hz", 2)):
            segs = [raw.copy().crop(s / 256, s / 256 + 6.4).pick("eeg") for s in ev[ev[:, 2] == code, 0]
                    if s / 256 + 6.4 <= raw.times[-1]]
            seg = mne.concatenate_raws(segs, verbose="error")
            seg.set_annotations(None)
            path = folder / f"s{subject}_{name}_raw.fif"
            seg.save(path, verbose="error")
            rows.append({"path": path.name, "subject": f"p{subject}", "session": "1", "label": name,
                         "seconds": seg.n_times / 256})
    man = folder / "manifest.csv"
    cols = ["path", "subject", "session", "label"]
    pd.DataFrame(rows[:2])[cols].to_csv(man, index=False)  # subject 1 only: the patient

    def n_windows(seconds, tmin, tmax):  # windows [kL + tmin, kL + tmax) that end inside the file
        return int(np.floor((seconds - tmax - 2 / 128) / (tmax - tmin))) + 1

    out, report = tmp_path / "patient", tmp_path / "r.html"
    r = run_cli("calibrate", "--model", population, "--manifest", man, "--trials", 6, "--per-class",
                "--out", out, "--report", report, "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["classes"] == ["13Hz", "rest"] and res["new_head"] is True and "new head" in res["note"]
    total = sum(n_windows(r["seconds"], 1.0, 5.0) for r in rows[:2])
    assert total > 12 and res["n_calibration_trials"] == 12 and res["n_heldout_trials"] == total - 12
    assert "new head" in report.read_text()
    assert json.loads((out / "bundle.json").read_text())["classes"] == ["13Hz", "rest"]

    # overlapping windows: --stride 1 cuts a window every second; auto says what it chose and why
    out_s, report_s = tmp_path / "patient-stride", tmp_path / "rs.html"
    r = run_cli("calibrate", "--model", population, "--manifest", man, "--trials", 6, "--per-class",
                "--stride", 1, "--strategy", "auto", "--out", out_s, "--report", report_s, "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    strided = sum(int(np.floor(r["seconds"] - 5.0 - 2 / 128)) + 1 for r in rows[:2])
    assert strided > 3 * total and res["n_heldout_trials"] == strided - 12
    # a new class set: a head is trained; SSVEP classes: every candidate is fused with the CCA expert,
    # and each also with the patient's tangent-space classifier (here two classes)
    assert set(res["candidates"]) == {"head+cca", "bn+head+cca", "head+cca+ts", "bn+head+cca+ts"}
    assert res["chosen"] in res["candidates"] and "auto chose" in report_s.read_text()
    bad = run_cli("calibrate", "--model", population, "--manifest", man, "--stride", 0, "--out", tmp_path / "x")
    assert "--stride must be > 0" in one_line_error(bad)
    for args in (("predict", "--model", out_s, "--recording", folder / rows[0]["path"], "--out", tmp_path / "y.csv"),
                 ("pretrain", "--manifest", man, "--out", tmp_path / "y")):
        assert "--stride must be > 0" in one_line_error(run_cli(*args, "--stride", -1))
        assert not (tmp_path / "y.csv").exists() and not (tmp_path / "y").exists()

    pd.DataFrame(rows)[cols].to_csv(man, index=False)
    pop2 = tmp_path / "pop2"
    p = run_cli("pretrain", "--manifest", man, "--model", "EEGNet", "--epochs", 1, "--tmin", 0, "--tmax", 2,
                "--out", pop2, "--json", "--quiet", "--device", "cpu", "--allow-chance")  # 1 epoch: chance
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert res["classes"] == ["13Hz", "rest"] and res["channels"] == KALUNGA and res["sfreq"] == 128.0
    assert res["subjects"] == ["p1", "p2"] and res["n_trials"] == sum(n_windows(r["seconds"], 0, 2) for r in rows)
    info = run_cli("info", pop2, "--json")
    assert json.loads(info.stdout)["recipe"]["tmax"] == 2.0

    # --align: each subject whitened by its own trials; the per-subject validation facts agree
    pop3 = tmp_path / "pop3"
    p = run_cli("pretrain", "--manifest", man, "--epochs", 1, "--tmin", 0, "--tmax", 2, "--align",
                "--out", pop3, "--json", "--quiet", "--device", "cpu", "--allow-chance")
    assert p.returncode == 0, p.stderr
    prov = json.loads((pop3 / "bundle.json").read_text())["provenance"]
    assert prov["euclidean_alignment"] is True
    facts = prov["validation"]["subjects"].values()
    val_acc = json.loads(p.stdout)["metrics"]["val_acc"]
    assert sum(f["correct"] for f in facts) / sum(f["n"] for f in facts) == pytest.approx(val_acc)


# --- bad input: one line on stderr, exit 2, nothing written -----------------------

def _fif(s1_raw, path, edit):
    raw = s1_raw.copy()
    edit(raw)
    raw.save(path, verbose="error", overwrite=True)
    return path


def _set(ch, value):
    def edit(raw):
        i = raw.ch_names.index(ch)
        raw._data[i, 1000:1010] = value
        if value == 0:
            raw._data[i] = 0.0
    return edit


def _bundle_copy(population, tmp_path, edit):
    dst = tmp_path / "pop_copy"
    shutil.copytree(population, dst)
    edit(dst)
    return dst


def _flip_byte(d):
    w = d / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))


def _newer(d):
    meta = json.loads((d / "bundle.json").read_text())
    meta["format_version"] = 99
    (d / "bundle.json").write_text(json.dumps(meta))


def _truncated(s1_raw, tmp_path):
    data = export(s1_raw, tmp_path / "full.edf", "edf").read_bytes()
    (tmp_path / "full.edf").unlink()
    (tmp_path / "cut.edf").write_bytes(data[: len(data) // 2])
    return tmp_path / "cut.edf"


def _latin(s1_raw, tmp_path):
    data = export(s1_raw, tmp_path / "full.edf", "edf").read_bytes()
    (tmp_path / "full.edf").unlink()
    (tmp_path / "latin.edf").write_bytes(data.replace(b"rest", b"r\xe9st"))
    return tmp_path / "latin.edf"


def _crlf(s1_raw, tmp_path):
    data = export(s1_raw, tmp_path / "full.edf", "edf").read_bytes()
    (tmp_path / "full.edf").unlink()
    (tmp_path / "crlf.edf").write_bytes(data.replace(b"\n", b"\r\n"))  # a text-mode copy
    return tmp_path / "crlf.edf"


def _low_rate(s1_raw, tmp_path):
    return export(s1_raw.copy().resample(100.0, verbose="error"), tmp_path / "slow.edf", "edf")


def _letter(tmp_path):
    p = tmp_path / "letter.edf"
    p.write_text("Dear colleague, please find the EEG attached.\n" * 40)
    return p


def _unknown_labels_csv(tmp_path):
    p = tmp_path / "events.csv"
    pd.DataFrame({"onset": [10.0, 16.5, 23.0], "label": ["13", "blink", "17"]}).to_csv(p, index=False)
    return p


def _only_rest(raw):
    """Keep the 'rest' trials only; the other trials' annotations become non-class marks."""
    import mne

    a = raw.annotations
    desc = [d if d == "rest" else "Impedance check" for d in a.description]
    raw.set_annotations(mne.Annotations(a.onset, a.duration, desc, orig_time=a.orig_time))


CASES = {
    "truncated_edf": lambda s, t, pop: (["--recording", _truncated(s, t)], ["cut.edf", "truncated"]),
    "not_eeg": lambda s, t, pop: (["--recording", _letter(t)], ["letter.edf", "cannot read"]),
    "csv_unknown_labels": lambda s, t, pop: (["--recording", _fif(s, t / "a_raw.fif", lambda r: None),
                                             "--events", _unknown_labels_csv(t)],
                                            ["events.csv", "unknown label(s) ['blink']"]),
    "nan_signal": lambda s, t, pop: (["--recording", _fif(s, t / "nan_raw.fif", _set("O1", np.nan))],
                                    ["nan_raw.fif", "NaN", "O1"]),
    "flat_channel": lambda s, t, pop: (["--recording", _fif(s, t / "flat_raw.fif", _set("PO4", 0.0))],
                                      ["flat_raw.fif", "flat channel(s) ['PO4']"]),
    "low_sampling_rate": lambda s, t, pop: (["--recording", _low_rate(s, t)],
                                           ["slow.edf", "100 Hz is below the model's 128 Hz"]),
    "unmappable_channels": lambda s, t, pop: (
        ["--recording", _fif(s, t / "ch_raw.fif", lambda r: r.rename_channels({"Oz": "X1", "O2": "X2"}))],
        ["ch_raw.fif", "['Oz', 'O2']", "--interpolate-missing"]),
    "altered_weights": lambda s, t, pop: (["--model", _bundle_copy(pop, t, _flip_byte), "--recording",
                                          _fif(s, t / "a_raw.fif", lambda r: None)],
                                         ["weights.safetensors", "SHA-256", "altered"]),
    "newer_bundle_format": lambda s, t, pop: (["--model", _bundle_copy(pop, t, _newer), "--recording",
                                              _fif(s, t / "a_raw.fif", lambda r: None)],
                                             ["bundle.json", "format version 99 is newer"]),
    "minutes_too_long": lambda s, t, pop: (["--recording", _fif(s, t / "a_raw.fif", lambda r: None),
                                           "--minutes", 9], ["--minutes 9", "3.7"]),
    "too_few_trials_per_class": lambda s, t, pop: (["--recording", _fif(s, t / "a_raw.fif", lambda r: None),
                                                   "--trials", 5], ["counts per class", "'rest': 5"]),
    "non_utf8_annotations": lambda s, t, pop: (["--recording", _latin(s, t)], ["latin.edf", "--encoding"]),
    "calibration_lacks_model_classes": lambda s, t, pop: (
        ["--recording", _fif(s, t / "rest_raw.fif", _only_rest)],
        ["counts per class", "'13': 0", "'rest': 8", "the model's head needs every one of its classes"]),
    "edf_longer_than_header": lambda s, t, pop: (["--recording", _crlf(s, t)],
                                                ["crlf.edf", "but its header says"]),
}


@pytest.mark.real
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_one_line_nothing_written(case, population, s1_raw, tmp_path):
    args, words = CASES[case](s1_raw, tmp_path, population)
    if "--model" not in args:
        args = ["--model", population, *args]
    before = {p.name for p in tmp_path.iterdir()}
    out = tmp_path / "patient"
    r = run_cli("calibrate", *args, "--out", out, "--report", tmp_path / "r.html", "--quiet")
    line = one_line_error(r)
    assert line.startswith("eegtransfer calibrate: error: ")
    for w in words:
        assert w in line, (w, line)
    no_leftovers(tmp_path, before)


@pytest.mark.real
def test_output_inside_input_bundle_is_refused(population, kalunga_path):
    before = sorted(p.name for p in population.rglob("*"))
    r = run_cli("calibrate", "--model", population, "--recording", kalunga_path / "subject01_run1_raw.fif",
                "--out", population / "patient")
    line = one_line_error(r)
    assert "--out" in line and "inside or contains the input bundle" in line
    assert sorted(p.name for p in population.rglob("*")) == before


def test_help_is_fast_without_heavy_imports():
    code = ("import sys, eegtransfer.cli as c; p = c.build_parser(); "
            "print(sorted(m for m in ('torch', 'braindecode', 'moabb', 'mne', 'matplotlib') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
    for cmd in ("calibrate", "predict", "pretrain"):
        h = run_cli(cmd, "--help")
        assert h.returncode == 0 and "--out" in h.stdout


@pytest.mark.real
def test_predict_unlabelled_recording_in_windows(population, s1_raw, tmp_path, capsys):
    """No events at all: predictions on consecutive windows, no label column (in-process)."""
    from eegtransfer.cli import main

    raw = s1_raw.copy().set_annotations(None)
    rec = export(raw, tmp_path / "plain.edf", "edf")
    out = tmp_path / "pred.csv"
    assert main(["predict", "--model", str(population), "--recording", str(rec), "--out", str(out),
                 "--json", "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out)
    df = pd.read_csv(out)
    seconds = raw.n_times / 256
    assert res["events_from"] == "consecutive windows" and "label" not in df.columns
    assert len(df) == res["n_trials"] == int(np.floor((seconds - 5 - 2 / 128) / 4)) + 1
    np.testing.assert_allclose(np.diff(df["onset"]), 4.0, atol=1 / 128)


def test_pretrain_dataset_records_event_id(tmp_path):
    """--dataset stores the dataset's event codes, so calibrate can read stim channels."""
    from moabb.datasets.fake import FakeDataset

    out = tmp_path / "pop"
    ckpt = tmp_path / "state.pt"
    args = ("pretrain", "--dataset", "FakeDataset", "--paradigm", "imagery", "--subjects", 1, 2,
            "--epochs", 1, "--tmin", 0, "--tmax", 1, "--sfreq", 64, "--h-freq", 30, "--out", out,
            "--json", "--quiet", "--device", "cpu")
    # FakeDataset is noise: its population is at chance, refused unless --allow-chance
    refused = one_line_error(run_cli(*args))
    assert "is not above chance" in refused and "--allow-chance" in refused and "allow_chance" not in refused
    assert not out.exists()
    r = run_cli(*args, "--allow-chance", "--checkpoint", ckpt)
    assert r.returncode == 0, r.stderr
    assert ckpt.is_file()  # the training state that an interrupted run resumes from
    res = json.loads(r.stdout)
    prov = json.loads((out / "bundle.json").read_text())["provenance"]
    assert prov["event_id"] == {k: int(v) for k, v in FakeDataset().event_id.items()}
    assert prov["dataset"] == "FakeDataset" and prov["paradigm"] == "imagery"
    assert res["subjects"] == ["1", "2"] and sorted(res["classes"]) == sorted(prov["event_id"])
    assert prov["chance_level"] is True and res["metrics"]["val_above_chance_p"] >= 0.05
    info = run_cli("info", out).stdout.splitlines()
    assert info[0].startswith("WARNING    chance-level population model"), info
    wrong = run_cli("pretrain", "--dataset", "FakeDataset", "--paradigm", "ssvep", "--out", tmp_path / "x")
    assert "--paradigm 'ssvep'" in one_line_error(wrong) and not (tmp_path / "x").exists()


# --- silent wrong results, now refused or reported -----------------------------------

def _annotated_copy(raw, path, rename=None, bad=None):
    import mne

    raw = raw.copy()
    a = raw.annotations
    desc = [rename.get(d, d) for d in a.description] if rename else list(a.description)
    ann = mne.Annotations(a.onset, a.duration, desc, orig_time=a.orig_time)
    if bad is not None:
        ann.append(bad[0], bad[1], "BAD_movement")
    raw.set_annotations(ann)
    raw.save(path, verbose="error", overwrite=True)
    return path


@pytest.mark.real
def test_predict_falls_back_to_windows_only_without_events(population, s1_raw, tmp_path, capsys):
    """Misspelt labels used to give window predictions and no accuracy, silently."""
    from eegtransfer.cli import main

    typo = _annotated_copy(s1_raw, tmp_path / "typo_raw.fif", rename={"rest": "rset", "13": "13 Hz",
                                                                      "17": "17 Hz", "21": "21 Hz"})
    out = tmp_path / "pred.csv"
    assert main(["predict", "--model", str(population), "--recording", str(typo), "--out", str(out),
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "typo_raw.fif: no event matches" in err and "'rset': 8" in err
    assert not out.exists()

    plain = tmp_path / "plain_raw.fif"
    s1_raw.copy().set_annotations(None).save(plain, verbose="error")
    assert main(["predict", "--model", str(population), "--recording", str(plain), "--out", str(out),
                 "--json"]) == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out)
    assert res["events_from"] == "consecutive windows" and "accuracy" not in res
    assert "no events" in res["windows_fallback"] and "no events" in cap.err
    windows = tmp_path / "balanced.csv"  # windows have no design to balance towards: refused, nothing written
    assert main(["predict", "--model", str(population), "--recording", str(plain), "--out", str(windows),
                 "--balance-classes", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "plain_raw.fif: --balance-classes needs trials cut at events" in err
    assert not windows.exists()
    labelled = tmp_path / "pred2.csv"
    assert main(["predict", "--model", str(population), "--recording", str(_annotated_copy(
        s1_raw, tmp_path / "ok_raw.fif")), "--out", str(labelled), "--json", "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["windows_fallback"] is None and res["accuracy"] is not None


@pytest.mark.real
def test_trials_over_bad_annotations_are_dropped_and_reported(population, s1_raw, tmp_path, capsys):
    from eegtransfer.cli import main

    first = float(s1_raw.annotations.onset[0])
    rec = _annotated_copy(s1_raw, tmp_path / "bad_raw.fif", bad=(first + 2.0, 0.5))  # inside trial 1
    out, report = tmp_path / "patient", tmp_path / "r.html"
    assert main(["calibrate", "--model", str(population), "--recording", str(rec), "--trials", "3",
                 "--per-class", "--out", str(out), "--report", str(report), "--json", "--quiet",
                 "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_bad_dropped"] == 1 and res["n_calibration_trials"] + res["n_heldout_trials"] == 31
    assert "trials dropped (overlap a BAD annotation)</th><td>1<" in report.read_text()
    preds = tmp_path / "pred.csv"
    assert main(["predict", "--model", str(out), "--recording", str(rec), "--out", str(preds), "--json",
                 "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_bad_dropped"] == 1 and res["n_trials"] == 31


def _labelled_file(path, seed):
    import mne

    rng = np.random.default_rng(seed)
    raw = mne.io.RawArray(rng.standard_normal((4, 128 * 60)) * 1e-5,
                          mne.create_info(["C3", "Cz", "C4", "Pz"], 128.0, "eeg"), verbose="error")
    onsets = np.arange(2.0, 56.0, 3.0)
    desc = ["left" if i % 2 else "right" for i in range(len(onsets))]
    raw.set_annotations(mne.Annotations([0.1, 0.5, *onsets], 0.0,
                                        ["Recording starts", "Impedance check", *desc]))
    raw.save(path, verbose="error")
    return path


def test_pretrain_manifest_needs_named_classes(tmp_path, capsys):
    """Every annotation ('Recording starts', 'Impedance check') used to become a class."""
    from eegtransfer.cli import main

    for s in (1, 2, 3):
        _labelled_file(tmp_path / f"s{s}_raw.fif", s)
    man = tmp_path / "man.csv"
    man.write_text("path,subject,session,events\n" + "".join(f"s{s}_raw.fif,p{s},1,\n" for s in (1, 2, 3)))
    out = tmp_path / "pop"
    common = ["pretrain", "--manifest", str(man), "--epochs", "1", "--tmin", "0", "--tmax", "1",
              "--sfreq", "64", "--h-freq", "30", "--out", str(out), "--device", "cpu", "--quiet"]
    assert main(common) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--event-id" in err and "s1_raw.fif" in err
    assert "'Impedance check': 1" in err and "'left': 9" in err and not out.exists()
    assert main([*common, "--event-id", "left=left", "--event-id", "right=right", "--json",
                 "--allow-chance"]) == 0  # one epoch on noise: chance level
    assert json.loads(capsys.readouterr().out)["classes"] == ["left", "right"]


@pytest.mark.real
def test_predict_reuses_calibration_and_info_shows_the_patient(population, s1_raw, kalunga_path, tmp_path):
    """A patient calibrated with --interpolate-missing predicts the next file without the flag;
    a chance-level population is warned about; info tells the patient from the population."""
    from eegtransfer.bundle import Bundle

    flagged = Bundle.load(population)
    flagged.provenance["chance_level"] = True
    flagged.save(tmp_path / "chance-pop")
    run1 = export(s1_raw.copy().drop_channels(["PO7"]), tmp_path / "run1.edf", "edf")
    run2 = export(annotated(kalunga_path, 1, 2).drop_channels(["PO7"]), tmp_path / "run2.edf", "edf")
    out = tmp_path / "patient"
    r = run_cli("calibrate", "--model", tmp_path / "chance-pop", "--recording", run1, "--trials", 16,
                "--strategy", "head", "--out", out, "--interpolate-missing")
    assert r.returncode == 0, r.stderr
    assert "warning:" in r.stderr and "chance-level population model" in r.stderr

    info = run_cli("info", out).stdout
    assert info.startswith("WARNING    chance-level")
    assert "calibration (this patient)" in info and str(run1.absolute()) in info
    assert "interpolated PO7" in info and "adaptation head: steps " in info and "guard      kept" in info
    assert "population (the model it was adapted from" in info
    assert info.index("calibration (this patient)") < info.index("population (") < info.index("  subjects")

    p = run_cli("predict", "--model", out, "--recording", run2, "--out", tmp_path / "p.csv")
    assert p.returncode == 0, p.stderr
    assert "interpolated PO7, as at calibration" in p.stdout
    assert len(pd.read_csv(tmp_path / "p.csv")) == 32
    # a channel that calibration did not interpolate is still refused, naming the flag
    run3 = export(annotated(kalunga_path, 1, 2).drop_channels(["PO7", "O1"]), tmp_path / "run3.edf", "edf")
    err = one_line_error(run_cli("predict", "--model", out, "--recording", run3, "--out", tmp_path / "q.csv"))
    assert "['O1']" in err and "only ['PO7']" in err and "--interpolate-missing" in err
    assert not (tmp_path / "q.csv").exists()


@pytest.mark.real
def test_python_api_raw_calibration_then_epochs(population, s1_raw, kalunga_path):
    """Calibrate from an mne.io.Raw in Python, predict on mne.Epochs; raw arrays are refused."""
    import mne

    from eegtransfer.adaptation import adapt
    from eegtransfer.bundle import Bundle
    from eegtransfer.errors import EEGTransferError

    pop = Bundle.load(population)
    raw = s1_raw.copy().drop_channels(["PO7"])
    with pytest.raises(EEGTransferError, match=r"\['PO7'\].*interpolate_missing=True"):
        pop.trials(raw)  # a population bundle interpolates nothing unless told
    rec = pop.trials(s1_raw)
    assert rec.X.shape == (32, 8, 512) and set(rec.meta["label"]) == set(CLASSES)
    labels = rec.meta["label"].to_numpy()
    patient = adapt(pop, rec.X, labels, strategy="head", calibration={"interpolated": ["PO7"]})

    raw2 = annotated(kalunga_path, 1, 2)
    events, event_id = mne.events_from_annotations(raw2, verbose="error")
    epochs = mne.Epochs(raw2.copy().drop_channels(["PO7"]), events, event_id, tmin=0.0, tmax=5.5,
                        baseline=None, preload=True, verbose="error")
    frame = patient.predict_frame(epochs)
    assert list(frame.columns) == ["onset", "label", "predicted"] + [f"p_{c}" for c in CLASSES]
    assert len(frame) == 32 and set(frame["label"]) == set(CLASSES)
    np.testing.assert_allclose(frame[[f"p_{c}" for c in CLASSES]].sum(axis=1), 1, atol=1e-5)
    assert list(patient.predict(epochs)) == list(frame["predicted"])
    # the same trials cut from the continuous recording: near-identical input (filters' edges differ)
    from_raw = patient.predict_frame(raw2.copy().drop_channels(["PO7"]))
    assert len(from_raw) == 32
    np.testing.assert_allclose(from_raw["onset"], frame["onset"], atol=1e-3)
    x_raw, x_ep = patient.trials(raw2).X, patient.trials(epochs).X
    # Epochs are cut on the event's own time grid; the continuous recording rounds an event between
    # two samples of the resampled grid: the trials match within one sample.
    best = max(np.median([np.corrcoef(a[:, 4:-4].ravel(), np.roll(b, k, -1)[:, 4:-4].ravel())[0, 1]
                          for a, b in zip(x_raw, x_ep)]) for k in (-1, 0, 1))
    assert best > 0.99
    ann = patient.predict_annotations(raw2)
    assert len(ann) == 32 and ann.description[0].startswith("pred/")
    np.testing.assert_allclose(ann.onset, from_raw["onset"] + 1.0, atol=1e-3)

    volts = rec.X * 1e-5  # what the trials were before the recipe's z-scoring, roughly
    with pytest.raises(EEGTransferError, match=r"does not look preprocessed.*bundle\.recipe"):
        patient.predict(volts)
    assert patient.predict(rec.X).shape == (32,)  # the recipe's own output is never refused
