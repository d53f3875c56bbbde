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
    with pytest.raises(EEGTransferError, match="already exists.*overwrite=True"):
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


# --- integrity of bundle.json ------------------------------------------------------

def _edit(path, edit):
    meta = json.loads((path / "bundle.json").read_text())
    edit(meta)
    (path / "bundle.json").write_text(json.dumps(meta, indent=2))


def _swap_channels(m):
    m["ch_names"][:2] = m["ch_names"][1::-1]
    m["recipe"]["channels"] = m["ch_names"]


EDITS = {  # each keeps bundle.json self-consistent: only the checksums can catch it
    "classes": lambda m: m["classes"].reverse(),
    "ch_names": _swap_channels,
    "recipe": lambda m: m["recipe"].update(l_freq=8.0),
    "provenance": lambda m: m["provenance"].update(event_id={"feet": 2, "left_hand": 1, "right_hand": 3}),
}


@pytest.mark.parametrize("field", sorted(EDITS))
def test_edited_metadata_is_refused_naming_the_field(field, fake_population, tmp_path, capsys):
    from eegtransfer.cli import main

    path = fake_population.save(tmp_path / "pop")
    _edit(path, EDITS[field])
    first = "recipe" if field == "ch_names" else field  # the first changed field in file order
    with pytest.raises(BundleError, match=f"field '{first}' was changed after the bundle was written"):
        Bundle.load(path)
    assert main(["info", str(path)]) == 2  # info (no torch) refuses it too, on one line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"field '{first}' was changed" in err[0] and "bundle.json" in err[0]


def test_added_removed_and_missing_checksums_are_refused(fake_population, tmp_path):
    path = fake_population.save(tmp_path / "pop")
    _edit(path, lambda m: m.update(note="mine"))
    with pytest.raises(BundleError, match="field 'note' was added"):
        read_meta(path)
    path = fake_population.save(tmp_path / "pop", overwrite=True)
    _edit(path, lambda m: m.pop("history"))
    with pytest.raises(BundleError, match="field 'history' was removed"):
        read_meta(path)
    path = fake_population.save(tmp_path / "pop", overwrite=True)
    _edit(path, lambda m: m.pop("checksums"))
    with pytest.raises(BundleError, match="'checksums' field is missing"):
        read_meta(path)


def test_format_1_bundle_loads_with_a_warning(fake_population, fake_trials, tmp_path, caplog):
    X, _, _ = fake_trials
    path = fake_population.save(tmp_path / "pop")

    def to_v1(m):
        m.pop("checksums")
        m["format_version"] = 1

    _edit(path, to_v1)
    with caplog.at_level("WARNING", logger="eegtransfer"):
        old = Bundle.load(path)
    assert "not protected by checksums" in caplog.text
    np.testing.assert_array_equal(old.predict_proba(X[:5]), fake_population.predict_proba(X[:5]))
    # a format-2 bundle relabelled as format 1 to dodge its checksums is still checked
    path = fake_population.save(tmp_path / "pop2")
    _edit(path, lambda m: (m.update(format_version=1), m["classes"].reverse()))
    with pytest.raises(BundleError, match="field 'classes' was changed"):
        read_meta(path)


# --- durability: permissions and killed writers ------------------------------------

def test_outputs_get_the_users_umask(fake_population, tmp_path):
    import os
    import stat

    from eegtransfer.bundle import write_file_atomic

    before = os.umask(0o022)
    try:
        path = fake_population.save(tmp_path / "pop")
        report = write_file_atomic(tmp_path / "report.html", "<html></html>")
    finally:
        os.umask(before)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    for f in (path / "bundle.json", path / "weights.safetensors", report):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


KILLER = r"""
import os, shutil, signal, sys
from pathlib import Path
import eegtransfer.bundle as b

target, new_src, point = sys.argv[1:4]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
real_rename, real_rmtree = os.rename, shutil.rmtree
renames = []

def rename(src, dst):
    renames.append(src)
    if point == f"rename{len(renames)}":
        die()
    return real_rename(src, dst)

def rmtree(p, *a, **k):
    if point == "rmtree_old" and ".old-" in str(p):
        real_rmtree(Path(p) / "weights.safetensors", ignore_errors=True)  # half removed
        die()
    return real_rmtree(p, *a, **k)

if hasattr(b, "_fsync_tree"):
    real_fsync = b._fsync_tree
    b._fsync_tree = lambda p: (real_fsync(p), point == "fsync" and die())
os.rename, shutil.rmtree = rename, rmtree

def write(tmp):
    for f in sorted(Path(new_src).iterdir()):
        shutil.copyfile(f, tmp / f.name)
        if point == "write":
            die()  # one file of two written

b.write_dir_atomic(Path(target), write, overwrite=True)
"""


def _files(path):
    return {p.name: p.read_bytes() for p in path.iterdir()}


@pytest.mark.parametrize("point", ["write", "fsync", "rename1", "rename2", "rmtree_old", "none"])
def test_killed_writer_leaves_the_old_or_the_new_bundle(point, fake_population, tmp_path):
    import signal
    import subprocess
    import sys

    from eegtransfer.bundle import verify_weights, write_dir_atomic

    (tmp_path / "out").mkdir()  # saving never creates folders
    target = fake_population.save(tmp_path / "out" / "pop")
    newer = fake_population.copy()
    newer.provenance["note"] = "the new version"
    new_src = newer.save(tmp_path / "new")
    old_files, new_files = _files(target), _files(new_src)
    r = subprocess.run([sys.executable, "-c", KILLER, str(target), str(new_src), point],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == (0 if point == "none" else -signal.SIGKILL), r.stderr
    verify_weights(target)  # a later read recovers: the old or the new bundle, whole
    assert _files(target) in (old_files, new_files)
    if point in ("rename2", "none"):
        assert _files(target) == (new_files if point == "none" else old_files)
    write_dir_atomic(target, lambda tmp: [(tmp / n).write_bytes(d) for n, d in new_files.items()],
                     overwrite=True)  # a later write succeeds and cleans up
    assert _files(target) == new_files
    assert [p.name for p in target.parent.iterdir()] == ["pop"]


def test_writers_racing_for_one_folder_leave_one_whole_version(tmp_path):
    import threading

    from eegtransfer.bundle import write_dir_atomic

    target = tmp_path / "out"
    errors: list[str] = []

    def writer(i: int) -> None:
        for j in range(15):
            def write(tmp, i=i, j=j):
                (tmp / "a.txt").write_text(f"{i}-{j}")
                (tmp / "b.txt").write_text(f"{i}-{j}")
            try:
                write_dir_atomic(target, write, overwrite=True)
            except EEGTransferError as err:  # lost the race: said on one line, nothing lost
                errors.append(str(err))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (target / "a.txt").read_text() == (target / "b.txt").read_text()
    assert [e for e in errors if "\n" in e or "another process" not in e] == []
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
