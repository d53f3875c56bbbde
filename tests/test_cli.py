"""The command line, run as a user runs it (subprocess)."""

import json
import os
import subprocess
import sys
import time

import pytest

EXE = [sys.executable, "-m", "eegtransfer.cli"]


def run_cli(*args, env=None, timeout=600):
    return subprocess.run([*EXE, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_help_is_fast_and_lists_commands():
    t0 = time.perf_counter()
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("demo", "info"):
        assert cmd in r.stdout
    # no torch/braindecode/MOABB at start-up: well under the 1 s target even on a busy CI box
    assert time.perf_counter() - t0 < 5
    r = subprocess.run([sys.executable, "-c", "import sys, eegtransfer.cli as c; c.build_parser(); "
                        "print(sorted(m for m in ('torch','braindecode','moabb','mne') if m in sys.modules))"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


@pytest.mark.real
def test_demo_json_and_bundles(mne_data, tmp_path):
    out = tmp_path / "demo"
    r = run_cli("demo", "--epochs", "2", "--device", "cpu", "--json", "--quiet", "--out", out)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    for key in ("zero_shot_accuracy", "adapted_accuracy", "n_calibration_trials", "calibration_minutes",
                "device", "pretrain_seconds", "adapt_seconds", "population_bundle", "subject_bundle"):
        assert key in res, key
    assert res["n_calibration_trials"] == 32 and res["n_test_trials"] == 32
    assert 3.6 < res["calibration_minutes"] < 3.8
    assert res["device"] == "cpu"
    assert 0 <= res["adapted_accuracy"] <= 1
    # the duplicated run (subject 7 run 1 == subject 3 run 2) is not the target's here: 10 subjects
    assert res["n_population_subjects"] == 10
    info = run_cli("info", res["subject_bundle"], "--json")
    assert info.returncode == 0, info.stderr
    meta = json.loads(info.stdout)
    assert meta["adaptation"]["strategy"] == "auto" and meta["classes"] == ["13", "17", "21", "rest"]
    text = run_cli("info", res["population_bundle"]).stdout
    assert "EEGNet" in text and "Oz" in text
    # an existing --out is refused and left as it was
    before = sorted(p.name for p in out.rglob("*"))
    again = run_cli("demo", "--epochs", "1", "--out", out)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in out.rglob("*")) == before


@pytest.mark.parametrize("args, words", [
    (("demo", "--model", "Nope"), "unknown model 'Nope'; known models: EEGNet"),
    (("demo", "--dataset", "NoSuchSet"), "unknown dataset 'NoSuchSet'"),
    (("demo", "--subject", "99"), "subject(s) [99] not in Kalunga2016"),
    (("demo", "--strategy", "magic"), "unknown strategy 'magic'"),
    (("info", "/nonexistent/bundle"), "no such bundle folder"),
])
def test_bad_input_one_line_nothing_written(args, words, tmp_path):
    out = tmp_path / "out"
    extra = ("--out", out) if args[0] == "demo" else ()
    r = run_cli(*args, *extra)
    assert r.returncode == 2
    assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def test_offline_without_cache_names_the_path(tmp_path):
    empty = tmp_path / "mne_data"
    empty.mkdir()
    env = {"MNE_DATA": str(empty), "MNE_DATASETS_SSVEPEXO_PATH": str(empty)}
    r = run_cli("demo", "--out", tmp_path / "out", env=env, timeout=300)
    assert r.returncode == 2, r.stderr
    assert str(empty) in r.stderr and "not in the MOABB cache" in r.stderr
    assert not (tmp_path / "out").exists()


def test_version_names_the_stack_and_the_auto_device():
    r = run_cli("--version")
    assert r.returncode == 0, r.stderr
    for name in ("eegtransfer 0.", "torch ", "CUDA", "braindecode ", "mne ", "moabb ", "device (auto) "):
        assert name in r.stdout, r.stdout
    assert "Warning" not in r.stderr


def test_install_check_names_a_mismatched_torch_pair(monkeypatch, capsys):
    from eegtransfer import sysinfo

    assert sysinfo.check_stack() is None  # this environment is the locked one
    versions = {"torch": "2.11.0", "torchaudio": "2.11.1"}
    monkeypatch.setattr(sysinfo, "installed_version", lambda d: versions.get(d, "1.0"))
    assert sysinfo.main(["--check"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "torch 2.11.0 and torchaudio 2.11.1 do not match" in err


def test_a_sub_command_that_does_not_import_is_shown_not_hidden(monkeypatch, capsys):
    import importlib

    from eegtransfer import cli

    real = importlib.import_module

    def broken(name, *a, **k):
        if name == "eegtransfer.cli.benchmark":
            raise ImportError("No module named 'pyriemann'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", broken)
    parser = cli.build_parser()
    assert "unavailable: ImportError: No module named 'pyriemann'" in parser.format_help()
    assert cli.main(["benchmark", "--datasets", "Kalunga2016"]) == 1
    assert "eegtransfer benchmark: cannot start: ImportError" in capsys.readouterr().err


@pytest.mark.parametrize("device, words", [
    ("gpu", "--device 'gpu' is not a device; choose from auto, cpu, cuda, mps"),
    ("cuda:x", "--device 'cuda:x' is not a device"),
])
def test_bad_device_is_refused_before_any_data_is_read(device, words, tmp_path):
    # the recording does not exist: a device error that comes first proves nothing was read
    r = run_cli("calibrate", "--model", tmp_path / "pop", "--recording", tmp_path / "none.edf",
                "--device", device, "--out", tmp_path / "out")
    assert r.returncode == 2 and words in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_before_any_data_is_read(tmp_path):
    r = run_cli("calibrate", "--model", tmp_path / "pop", "--recording", tmp_path / "none.edf",
                "--device", "cuda", "--out", tmp_path / "out")
    assert r.returncode == 2 and "--device 'cuda' requested but no CUDA GPU" in r.stderr, r.stderr


def test_pretrain_nproc_below_one_is_refused_in_one_line(tmp_path):
    r = run_cli("pretrain", "--dataset", "FakeDataset", "--nproc", 0, "--out", tmp_path / "pop")
    assert r.returncode == 2 and "eegtransfer pretrain: error: --nproc must be >= 1, got 0" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "pop").exists()
