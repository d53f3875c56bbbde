"""eegtransfer.io: reading users' files, matching channels, finding events."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import KALUNGA_ID, kalunga_annotated

from eegtransfer.errors import DataNotFoundError, EEGTransferError
from eegtransfer.io import (
    conform_channels,
    find_events,
    load_recording,
    match_channels,
    normalize_channel_name,
    parse_event_id,
    read_manifest,
    read_raw,
    recipe_from_recording,
    window_events,
)
from eegtransfer.preprocessing import Recipe

KALUNGA = ["Oz", "O1", "O2", "PO3", "POz", "PO7", "PO8", "PO4"]
CLASSES = ["13", "17", "21", "rest"]
RECIPE = Recipe(channels=KALUNGA, sfreq=128.0, tmin=1.0, tmax=5.0, l_freq=4.0, h_freq=45.0)


def synthetic_raw(ch_names, *, sfreq=256.0, seconds=40.0, seed=0, annotations=None):
    """Random EEG-like signals (volts) with optional (onset, description) annotations."""
    import mne

    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    data = rng.standard_normal((len(ch_names), n)) * 1e-5
    raw = mne.io.RawArray(data, mne.create_info(list(ch_names), sfreq, "eeg"), verbose="error")
    if annotations:
        on, desc = zip(*annotations)
        raw.set_annotations(mne.Annotations(list(on), [0.0] * len(on), list(desc)))
    return raw


def export(raw, path, fmt):
    import mne

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mne.export.export_raw(path, raw, fmt=fmt, overwrite=True, verbose="error")
    return path


# --- channel names -------------------------------------------------------------

@pytest.mark.parametrize("name, key", [
    ("Oz", "OZ"), ("Oz..", "OZ"), ("Fc5.", "FC5"), ("poz", "POZ"), ("EEG Fp1-REF", "FP1"),
    ("EEG C3-LE", "C3"), ("T3", "T7"), ("t4", "T8"), ("T5..", "P7"), ("EEG T6", "P8"),
    ("  Cz ", "CZ"), ("ECG", "ECG"),
])
def test_normalize_channel_name(name, key):
    assert normalize_channel_name(name) == key


def test_display_channel_name_keeps_case():
    clean = [normalize_channel_name(n, alias=False, keep_case=True) for n in ("Fc5.", "EEG Fp1-REF", "Oz..", "POz")]
    assert clean == ["Fc5", "Fp1", "Oz", "POz"]


def test_match_channels_physionet_aliases_and_extras():
    found = ["ECG", "Po8.", "EEG T3-REF", "Oz..", "T7", "o1..", "Status"]
    mapping, missing = match_channels(found, ["O1", "Oz", "PO8", "T7", "P7"])
    # the exact T7 wins over the alias T3; P7 has no match
    assert mapping == {"O1": "o1..", "Oz": "Oz..", "PO8": "Po8.", "T7": "T7"}
    assert missing == ["P7"]


def test_conform_channels_renames_reorders_and_drops():
    names = ["ecg", "PO4.", "Oz..", "EEG O1-REF", "O2", "Po3.", "Poz.", "Po7.", "Po8.", "Fc5."]
    raw = synthetic_raw(names, seconds=5)
    out, rep = conform_channels(raw, KALUNGA)
    assert out.ch_names == KALUNGA
    assert set(rep.dropped) == {"ecg", "Fc5."} and rep.interpolated == []
    assert rep.renamed["Oz.."] == "Oz" and rep.renamed["EEG O1-REF"] == "O1"
    # the samples travel with their names
    np.testing.assert_array_equal(out.get_data(picks=["PO4"]), raw.get_data(picks=["PO4."]))
    np.testing.assert_array_equal(out.get_data(picks=["O1"]), raw.get_data(picks=["EEG O1-REF"]))
    assert raw.ch_names == names  # input untouched


def test_missing_channel_refused_with_names():
    raw = synthetic_raw([c for c in KALUNGA if c not in ("PO7", "Oz")], seconds=5)
    with pytest.raises(EEGTransferError, match=r"\['Oz', 'PO7'\].*interpolate_missing=True"):
        conform_channels(raw, KALUNGA, source="x.edf")


def test_interpolation_fills_missing_from_neighbours():
    # A smooth spatial field: the interpolated channel must follow its neighbours.
    import mne

    montage = mne.channels.make_standard_montage("colin27_1005")
    pos = montage.get_positions()["ch_pos"]
    chans = ["O1", "Oz", "O2", "PO3", "POz", "PO4", "PO7", "PO8", "P3", "Pz", "P4", "CPz"]
    t = np.linspace(0, 4, 1024)
    src = np.sin(2 * np.pi * 7 * t)
    data = np.array([(1 + 5 * pos[c][1]) * src for c in chans]) * 1e-5
    full = mne.io.RawArray(data, mne.create_info(chans, 256.0, "eeg"), verbose="error")
    partial = full.copy().drop_channels(["POz"])
    out, rep = conform_channels(partial, chans, interpolate_missing=True)
    assert rep.interpolated == ["POz"] and out.ch_names == chans
    got, want = out.get_data(picks=["POz"])[0], full.get_data(picks=["POz"])[0]
    assert np.corrcoef(got, want)[0, 1] > 0.99
    assert np.abs(got).max() > 0  # not the zero filler


# --- events --------------------------------------------------------------------

def test_annotations_matched_to_classes_and_others_ignored():
    raw = synthetic_raw(KALUNGA, annotations=[(1, "rest"), (8, "13"), (15, "BAD_x"), (20, "Rest "), (26, "blink")])
    ev, ids, how = find_events(raw, classes=CLASSES)
    assert how == "annotations"
    names = {v: k for k, v in ids.items()}
    assert [names[c] for c in ev[:, 2]] == ["rest", "13", "rest"]
    assert ev[:, 0].tolist() == [256, 8 * 256, 20 * 256]


def test_nothing_matches_lists_what_was_found():
    raw = synthetic_raw(KALUNGA, annotations=[(1, "left"), (8, "left"), (15, "right")])
    with pytest.raises(EEGTransferError, match=r"rec.edf: no event matches.*'left': 2.*'right': 1.*no stim"):
        find_events(raw, classes=CLASSES, source="rec.edf")


def test_event_id_maps_descriptions_to_new_classes():
    raw = synthetic_raw(KALUNGA, annotations=[(1, "T1"), (8, "T2"), (15, "T0")])
    ev, ids, _ = find_events(raw, classes=CLASSES, event_id=parse_event_id(["left=T1", "right=T2"]))
    assert sorted(ids) == ["left", "right"] and len(ev) == 2


def test_events_csv(tmp_path):
    raw = synthetic_raw(KALUNGA, seconds=30)
    csv = tmp_path / "ev.csv"
    pd.DataFrame({"onset": [12.5, 2.0, 20.0], "label": ["17", "rest", "17"]}).to_csv(csv, index=False)
    ev, ids, how = find_events(raw, events=csv, classes=CLASSES)
    names = {v: k for k, v in ids.items()}
    assert [names[c] for c in ev[:, 2]] == ["rest", "17", "17"]  # sorted by onset
    assert ev[:, 0].tolist() == [512, 3200, 5120] and "CSV" in how


def test_events_csv_unknown_and_new_labels(tmp_path):
    raw = synthetic_raw(KALUNGA, seconds=30)
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"onset": [1, 5, 9], "label": ["17", "rset", "13"]}).to_csv(bad, index=False)
    with pytest.raises(EEGTransferError, match=r"bad.csv: unknown label\(s\) \['rset'\]"):
        find_events(raw, events=bad, classes=CLASSES)
    new = tmp_path / "new.csv"
    pd.DataFrame({"onset": [1, 5, 9], "label": ["left", "right", "left"]}).to_csv(new, index=False)
    _, ids, _ = find_events(raw, events=new, classes=CLASSES)
    assert sorted(ids) == ["left", "right"]  # a new task: no label is a model class
    late = tmp_path / "late.csv"
    pd.DataFrame({"onset": [1, 99], "label": ["13", "17"]}).to_csv(late, index=False)
    with pytest.raises(EEGTransferError, match="late.csv: 1 onset"):
        find_events(raw, events=late, classes=CLASSES)


def test_stim_channel_uses_default_event_id_or_asks(tmp_path):
    import mne

    raw = synthetic_raw(KALUNGA, seconds=30)
    stim = np.zeros((1, raw.n_times))
    stim[0, [256, 2560, 5120]] = [2, 1, 2]
    raw.add_channels([mne.io.RawArray(stim, mne.create_info(["STI"], 256.0, "stim"), verbose="error")])
    ev, ids, how = find_events(raw, classes=CLASSES, default_id=KALUNGA_ID)
    assert "stim" in how and ids == {"13": 2, "rest": 1} and len(ev) == 3
    with pytest.raises(EEGTransferError, match=r"codes \[1, 2\].*event_id="):
        find_events(raw, classes=CLASSES)
    # an MNE events file
    eve = tmp_path / "x-eve.txt"
    mne.write_events(eve, ev, overwrite=True, verbose="error")
    ev2, ids2, how2 = find_events(raw, events=eve, classes=CLASSES, event_id={"a": "1", "b": "2"})
    assert ids2 == {"a": 1, "b": 2} and np.array_equal(ev2, ev) and "MNE events" in how2


def test_parse_event_id_rejects_garbage():
    assert parse_event_id(["a=1", " b = T2 "]) == {"a": "1", "b": "T2"}
    with pytest.raises(EEGTransferError, match="NAME=CODE"):
        parse_event_id(["oops"])


def test_window_events_tile_the_recording():
    raw = synthetic_raw(KALUNGA, seconds=30)
    ev = window_events(raw, RECIPE)
    # windows [k*4 + 1, k*4 + 5) s must end inside 30 s: k = 0..6
    assert len(ev) == 7 and np.all(np.diff(ev[:, 0]) == 4 * 256)
    X, meta = load_recording_from_raw(raw, label="a")
    assert len(X) == 7 and set(meta["label"]) == {"a"}


def test_a_stride_overlaps_windows_of_a_whole_file_label():
    raw = synthetic_raw(KALUNGA, seconds=10)  # 10 s of one class, 4-s windows from 1 s on
    assert len(window_events(raw, RECIPE)) == 2
    ev = window_events(raw, RECIPE, stride=1.0)
    # trials [k + 1, k + 5) s for k = 0..4 (the one ending exactly at 10 s leaves no resampling slack)
    assert len(ev) == 5 and np.all(np.diff(ev[:, 0]) == 256)
    X, meta = load_recording_from_raw(raw, label="a", stride=1.0)
    assert len(X) == 5  # they overlap: the same samples, each window z-scored on its own
    assert np.corrcoef(X[1][0, :-128], X[0][0, 128:])[0, 1] > 0.99
    with pytest.raises(EEGTransferError, match="stride= must be > 0"):
        window_events(raw, RECIPE, stride=0)


def load_recording_from_raw(raw, **kw):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x_raw.fif"
        raw.save(path, verbose="error")
        rec = load_recording(path, RECIPE, classes=CLASSES, **kw)
    return rec.X, rec.meta


# --- files ---------------------------------------------------------------------

def test_read_raw_errors_name_the_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="nope.edf: no such recording file"):
        read_raw(tmp_path / "nope.edf")
    text = tmp_path / "notes.edf"
    text.write_text("this is a clinic letter, not EEG\n" * 50)
    with pytest.raises(EEGTransferError, match="notes.edf: cannot read as an EEG recording"):
        read_raw(text)
    odd = tmp_path / "data.xyz"
    odd.write_text("1,2,3")
    with pytest.raises(EEGTransferError, match=r"data.xyz: not an EEG file MNE can read.*\.edf \(EDF/EDF\+\)"):
        read_raw(odd)


def test_truncated_edf_is_refused(tmp_path):
    raw = synthetic_raw(KALUNGA, seconds=60, annotations=[(1, "13"), (30, "rest")])
    edf = export(raw, tmp_path / "full.edf", "edf")
    assert read_raw(edf).n_times >= raw.n_times
    cut = tmp_path / "cut.edf"
    data = edf.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(EEGTransferError, match="cut.edf: the file is truncated"):
        read_raw(cut)


def test_non_utf8_edf_annotations_need_encoding(tmp_path):
    raw = synthetic_raw(KALUNGA, seconds=20, annotations=[(1, "rest"), (8, "13")])
    data = export(raw, tmp_path / "a.edf", "edf").read_bytes()
    assert data.count(b"rest") == 1
    latin = tmp_path / "latin.edf"
    latin.write_bytes(data.replace(b"rest", b"r\xe9st"))  # same length: header stays valid
    with pytest.raises(EEGTransferError, match="latin.edf: .*not valid UTF-8.*encoding=latin1"):
        read_raw(latin)
    assert "r\u00e9st" in set(read_raw(latin, encoding="latin1").annotations.description)


def test_manifest_resolves_relative_paths(tmp_path):
    sub = tmp_path / "m"
    sub.mkdir()
    (sub / "man.csv").write_text("path,subject,session,label\na.edf,p1,s1,left\n/abs/b.edf,p2,,right\n")
    df = read_manifest(sub / "man.csv")
    assert df["path"].tolist() == [str(sub.resolve() / "a.edf"), "/abs/b.edf"]
    assert df["label"].tolist() == ["left", "right"] and df["session"].tolist() == ["s1", "0"]
    (sub / "bad.csv").write_text("file,subject\nx,1\n")
    with pytest.raises(EEGTransferError, match="bad.csv: a manifest needs columns"):
        read_manifest(sub / "bad.csv")


def test_recipe_from_recording(tmp_path):
    raw = synthetic_raw(["Fc5.", "Cz..", "EEG C4-REF"], sfreq=160.0, seconds=10)
    path = tmp_path / "p_raw.fif"
    raw.save(path, verbose="error")
    r = recipe_from_recording(path, tmin=0.0, tmax=2.0)
    assert r.channels == ["Fc5", "Cz", "C4"] and r.sfreq == 128.0 and r.h_freq < 64 and r.tmax == 2.0


# --- real recordings -------------------------------------------------------------

@pytest.mark.real
def test_edf_and_messy_fif_give_the_same_trials_as_the_original(kalunga_path, tmp_path):
    import mne

    fif = kalunga_path / "subject01_run1_raw.fif"
    ref = load_recording(fif, RECIPE, classes=CLASSES, default_id=KALUNGA_ID)
    assert len(ref.X) == 32 and "stim" in ref.events_from
    assert ref.meta["label"].value_counts().to_dict() == {"13": 8, "17": 8, "21": 8, "rest": 8}

    raw, _ = kalunga_annotated(kalunga_path)
    edf = load_recording(export(raw, tmp_path / "s1.edf", "edf"), RECIPE, classes=CLASSES)
    assert edf.events_from == "annotations" and edf.meta["label"].tolist() == ref.meta["label"].tolist()
    np.testing.assert_allclose(edf.meta["onset"], ref.meta["onset"], atol=1 / 256)
    # EDF stores 16-bit integers: trials agree up to quantisation
    assert np.corrcoef(edf.X.ravel(), ref.X.ravel())[0, 1] > 0.999

    messy = raw.copy()
    messy.rename_channels({c: (c[0] + c[1:].lower()).ljust(4, ".") for c in messy.ch_names})
    messy.reorder_channels(messy.ch_names[::-1])
    extra = mne.io.RawArray(np.random.default_rng(0).standard_normal((2, messy.n_times)) * 1e-5,
                            mne.create_info(["Fc5.", "EEG T3-REF"], 256.0, "eeg"), verbose="error")
    messy.add_channels([extra], force_update_info=True)
    path = tmp_path / "messy_raw.fif"
    messy.save(path, verbose="error")
    rec = load_recording(path, RECIPE, classes=CLASSES)
    assert set(rec.channels.dropped) == {"Fc5.", "EEG T3-REF"} and rec.channels.renamed["Poz."] == "POz"
    np.testing.assert_allclose(rec.X, ref.X, atol=1e-4)


# --- silent wrong results, now refused or reported -----------------------------

def test_ambiguous_channels_are_refused_with_both_names():
    with pytest.raises(EEGTransferError, match=r"rec.edf: channels 'EEG OZ-REF', 'EEG OZ-LE' .*'Oz'"):
        match_channels(["EEG OZ-REF", "EEG OZ-LE", "O1"], ["Oz", "O1"], source="rec.edf")
    with pytest.raises(EEGTransferError, match=r"'oz', 'OZ' all match the model's channel 'Oz'"):
        match_channels(["oz", "OZ"], ["Oz"])


def test_exact_name_beats_an_alias():
    # T3 is T7's old name, but a channel called t7 is T7 itself.
    assert match_channels(["T3", "t7"], ["T7"]) == ({"T7": "t7"}, [])
    assert match_channels(["T3", "EEG T7-REF"], ["T7"]) == ({"T7": "EEG T7-REF"}, [])
    assert match_channels(["T3", "Oz"], ["T7", "Oz"]) == ({"T7": "T3", "Oz": "Oz"}, [])
    # the exact one is taken; the normalised twin is then simply extra
    assert match_channels(["Oz", "EEG OZ-REF"], ["Oz"]) == ({"Oz": "Oz"}, [])


def test_unmatched_annotations_are_logged_with_counts(caplog):
    raw = synthetic_raw(KALUNGA, annotations=[(1, "rest"), (8, "rest"), (15, "Impedance check"),
                                              (20, "rset"), (26, "rset"), (30, "BAD_x")])
    with caplog.at_level("WARNING", logger="eegtransfer"):
        ev, ids, _ = find_events(raw, classes=CLASSES, source="rec.edf")
    assert ids == {"rest": 1} and len(ev) == 2
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "rec.edf" in msg and "'Impedance check': 1" in msg and "'rset': 2" in msg
    assert "BAD_x" not in msg  # a data-quality mark is not a label


def test_trials_overlapping_bad_annotations_are_dropped_and_counted(tmp_path):
    ann = [(1, "rest"), (8, "13"), (15, "rest"), (22, "13")]
    raw = synthetic_raw(KALUNGA, annotations=ann)
    raw.annotations.append(17.0, 1.0, "BAD_movement")  # inside the third trial's [16, 20) s window
    path = tmp_path / "bad_raw.fif"
    raw.save(path, verbose="error")
    rec = load_recording(path, RECIPE, classes=CLASSES)
    assert rec.meta["onset"].tolist() == [1.0, 8.0, 22.0]
    assert rec.n_bad_dropped == 1 and rec.summary()["n_bad_dropped"] == 1


def _crlf_copy(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data.replace(b"\n", b"\r\n"))  # what a text-mode copy does
    assert dst.stat().st_size > len(data)
    return dst


@pytest.mark.parametrize("fmt", ["edf", "bdf"])
def test_edf_longer_than_its_header_is_refused(tmp_path, fmt):
    raw = synthetic_raw(KALUNGA, seconds=20, annotations=[(1, "rest"), (8, "13")])
    good = export(raw, tmp_path / f"good.{fmt}", fmt)
    bad = _crlf_copy(good, tmp_path / f"copied.{fmt}")
    size, expected = bad.stat().st_size, good.stat().st_size
    with pytest.raises(EEGTransferError, match=rf"copied.{fmt}: the file is {size} bytes but its header "
                                               rf"says {expected}"):
        read_raw(bad)
    assert read_raw(good).n_times >= raw.n_times  # an intact file is read as before


def test_tables_that_pandas_would_misread_are_refused(tmp_path):
    raw = synthetic_raw(KALUNGA, seconds=30)
    cases = {
        "dup.csv": ("onset,label,Onset\n1,rest,2\n", r"dup.csv: column\(s\) \['onset'\] appear more than once"),
        "long.csv": ("onset,label\n1,rest,extra\n", r"long.csv: some rows have more fields than the header"),
    }
    for name, (text, msg) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(EEGTransferError, match=msg):
            find_events(raw, events=tmp_path / name, classes=CLASSES)
    man = {
        "short.csv": ("path,subject,session,label\na.edf,p1\n", r"short.csv: row\(s\) \[2\] have fewer fields"),
        # pandas made 'a.edf' an index and read the path as '1'
        "long.csv": ("path,subject,session,label\na.edf,1,1,x,y\n", "long.csv: some rows have more fields"),
        "dup.csv": ("path,subject,session,label,Label\na,1,1,x,y\n", r"column\(s\) \['label'\]"),
    }
    for name, (text, msg) in man.items():
        (tmp_path / f"m_{name}").write_text(text)
        with pytest.raises(EEGTransferError, match=msg):
            read_manifest(tmp_path / f"m_{name}")
