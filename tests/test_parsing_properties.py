"""Property-based: arbitrary text in an events CSV, a manifest or channel names gives a
result or a one-line EEGTransferError, never a traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eegtransfer.errors import EEGTransferError
from eegtransfer.io import (
    find_events,
    match_channels,
    normalize_channel_name,
    parse_event_id,
    read_manifest,
)

CLASSES = ["13", "17", "21", "rest"]
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# CSV-ish text: the tokens that matter to the parsers, separators, quotes and noise.
TOKENS = st.sampled_from(["onset", "label", "Onset", " LABEL", "path", "subject", "session", "events",
                          "rest", "13", "17", "1.5", "-2", "nan", "inf", "1e9", "", "a.edf", "/x/y.fif",
                          "T3", "Oz"])
SEPS = st.sampled_from([",", ";", "\t", "\n", "\r\n", '"', " ", "|", "\x00"])
CELL = st.one_of(TOKENS, st.text(max_size=5))


@st.composite
def tables(draw: st.DrawFn) -> str:
    """A header and rows of uneven length, joined by one delimiter: near-valid tables."""
    sep = draw(st.sampled_from([",", ";", "\t"]))
    header = draw(st.lists(TOKENS, min_size=1, max_size=6))
    rows = draw(st.lists(st.lists(CELL, max_size=7), max_size=5))
    return "\n".join(sep.join(r) for r in [header, *rows]) + draw(st.sampled_from(["", "\n"]))


CSV_TEXT = st.one_of(tables(), st.text(max_size=200),
                     st.lists(st.one_of(TOKENS, SEPS, st.text(max_size=4)), max_size=40).map("".join))


@pytest.fixture(scope="module")
def raw():
    import mne

    data = np.random.default_rng(0).standard_normal((2, 256 * 20)) * 1e-5
    return mne.io.RawArray(data, mne.create_info(["Oz", "O1"], 256.0, "eeg"), verbose="error")


def _one_line(err: Exception) -> None:
    assert str(err) and "\n" not in str(err), repr(err)


def _write(text: str, name: str) -> Path:
    folder = Path(tempfile.mkdtemp())
    path = folder / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


@SETTINGS
@given(text=CSV_TEXT, classes=st.sampled_from([CLASSES, None]),
       event_id=st.sampled_from([{}, {"left": "13", "right": "rest"}]))
@example(text="onset,label,Onset\n1,rest,2\n", classes=CLASSES, event_id={})  # used to crash
@example(text="onset,label,LABEL\n1,rest,13\n", classes=None, event_id={})  # used to crash
def test_events_csv_never_crashes(raw, text, classes, event_id):
    path = _write(text, "events.csv")
    try:
        ev, ids, _ = find_events(raw, events=path, classes=classes, event_id=event_id)
    except EEGTransferError as err:
        _one_line(err)
    else:
        assert ev.shape[1] == 3 and set(ev[:, 2].tolist()) <= set(ids.values())


@SETTINGS
@given(text=CSV_TEXT)
@example(text="path,subject,session,label\na.edf,1\n")  # used to read the missing label as 'nan'
def test_manifest_never_crashes(text):
    path = _write(text, "manifest.csv")
    try:
        df = read_manifest(path)
    except EEGTransferError as err:
        _one_line(err)
    else:
        assert len(df) and list(df.columns) == ["path", "subject", "session", "events", "label"]
        assert not df[["path", "subject", "session"]].isna().any(axis=None)
        assert "nan" not in set(df["label"].dropna())


@SETTINGS
@given(found=st.lists(st.one_of(TOKENS, st.text(max_size=12)), max_size=8),
       wanted=st.lists(st.one_of(TOKENS, st.text(max_size=12)), max_size=6, unique=True),
       items=st.lists(st.text(max_size=10), max_size=4))
def test_channel_names_and_event_ids_never_crash(found, wanted, items):
    for name in found:
        assert isinstance(normalize_channel_name(name), str)
        assert isinstance(normalize_channel_name(name, alias=False, keep_case=True), str)
    try:
        mapping, missing = match_channels(found, wanted)
    except EEGTransferError as err:
        _one_line(err)
    else:
        assert set(mapping) | set(missing) == set(wanted) and len(set(mapping.values())) == len(mapping)
    try:
        parse_event_id(items)
    except EEGTransferError as err:
        _one_line(err)
