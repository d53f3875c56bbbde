"""Guardrails of the Python API and the command line: early one-line refusals, defaults shown,
chance-level tests, logging, warnings."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

EXE = [sys.executable, "-m", "eegtransfer.cli"]


def run_cli(*args, timeout=300):
    return subprocess.run([*EXE, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def one_line(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def saved_population(fake_population, tmp_path_factory):
    return fake_population.save(tmp_path_factory.mktemp("pop") / "population")


def test_not_an_eeg_file_is_named_with_the_formats(tmp_path):
    err = one_line(run_cli("calibrate", "--model", tmp_path / "none", "--recording", "/etc/hosts",
                           "--out", tmp_path / "out"))
    assert "/etc/hosts: not an EEG file MNE can read" in err and ".edf (EDF/EDF+)" in err and ".fif" in err
    assert "Unsupported file type" not in err and not (tmp_path / "out").exists()


def test_info_on_a_file_inside_a_bundle_names_the_folder(saved_population):
    err = one_line(run_cli("info", saved_population / "weights.safetensors"))
    assert f"is a file inside the bundle folder {saved_population}; give the folder" in err


@pytest.mark.parametrize("args, words", [
    (("--dataset", "Kalunga"), "unknown dataset 'Kalunga'; did you mean 'Kalunga2016'?"),
    (("--model", "EEGNett"), "unknown model 'EEGNett'; did you mean 'EEGNet'"),
    (("--strategy", "haed"), "unknown strategy 'haed'; did you mean 'head'?"),
])
def test_close_names_are_suggested(args, words, tmp_path):
    err = one_line(run_cli("demo", *args, "--out", tmp_path / "demo"))
    assert words in err and not (tmp_path / "demo").exists()


def test_missing_parent_folders_are_refused_not_created(saved_population, tmp_path):
    rec = tmp_path / "x.edf"
    rec.write_bytes(b"0")  # never read: the output paths are checked first
    missing = tmp_path / "nope" / "deeper"
    err = one_line(run_cli("calibrate", "--model", saved_population, "--recording", rec,
                           "--out", tmp_path / "patient", "--report", missing / "r.html"))
    assert f"--report {missing / 'r.html'}: its folder {missing} does not exist" in err
    err = one_line(run_cli("pretrain", "--dataset", "FakeDataset", "--out", missing / "pop"))
    assert f"--out {missing / 'pop'}: its folder {missing} does not exist" in err
    assert not (tmp_path / "nope").exists() and not (tmp_path / "patient").exists()


def test_library_says_overwrite_true_and_the_cli_says_the_flag(fake_population, saved_population, tmp_path):
    from eegtransfer.cli.utils import to_flags
    from eegtransfer.errors import EEGTransferError

    with pytest.raises(EEGTransferError) as err:
        fake_population.save(saved_population)
    assert "pass overwrite=True" in str(err.value) and "--overwrite" not in str(err.value)
    assert to_flags(str(err.value)).endswith("pass --overwrite to replace it")
    with pytest.raises(EEGTransferError, match="does not exist; create it first"):
        fake_population.save(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()


def test_help_shows_defaults_the_strategies_and_required_options():
    from eegtransfer.adaptation import STRATEGIES

    for cmd in ("demo", "pretrain", "calibrate", "predict", "info", "benchmark"):
        r = run_cli(cmd, "--help")
        assert r.returncode == 0 and (cmd == "info" or "(default" in r.stdout), cmd
    cal = " ".join(run_cli("calibrate", "--help").stdout.split())
    assert "every trial and holds none out" in cal and "default: every trial, none held out" in cal
    assert f"one of: {', '.join(STRATEGIES)}; auto compares its candidates on the calibration trials " \
           "themselves (default: auto)" in cal
    usage = " ".join(run_cli("predict", "--help").stdout.split("\n\n")[0].split())
    assert "--recording FILE" in usage and "[--recording FILE]" not in usage
    r = run_cli("predict", "--model", "m", "--out", "o.csv")  # argparse's own usage + error, exit 2
    assert r.returncode == 2 and "required: --recording" in r.stderr


def test_chance_test_and_pretrain_records_it(fake_trials, caplog):
    from eegtransfer.training.pretraining import chance_test, pretrain

    y = np.repeat(np.arange(4), 10)
    low, high = chance_test(0.25, y, 4), chance_test(0.6, y, 4)
    assert low["val_chance"] == 0.25 and low["val_above_chance_p"] > 0.4
    assert high["val_above_chance_p"] < 1e-4
    assert chance_test(0.7, np.r_[np.zeros(30, int), np.ones(10, int)], 2)["val_chance"] == 0.75
    assert chance_test(None, y[:0], 4)["val_above_chance_p"] is None
    X, meta, recipe = fake_trials  # FakeDataset is noise: chance level
    with caplog.at_level(logging.WARNING, logger="eegtransfer"):
        pop = pretrain(X, meta["label"].to_numpy(), meta, recipe, epochs=1, device="cpu", seed=0)
    assert {"val_chance", "val_above_chance_p"} <= set(pop.metrics)
    assert pop.metrics["val_above_chance_p"] >= 0.05 and "not above chance" in caplog.text


def test_info_warns_on_an_old_chance_level_bundle(fake_population):
    from eegtransfer.bundle import summarize

    meta = fake_population.to_meta()
    meta["metrics"] = {"val_acc": 0.36}  # made before the test was recorded: 3 classes, chance 0.333
    assert summarize(meta).splitlines()[0].startswith("WARNING    chance-level population model")
    meta["metrics"] = {"val_acc": 0.6}
    assert not summarize(meta).startswith("WARNING")


def test_arrays_are_checked_against_the_recipe(fake_population, fake_trials):
    from eegtransfer.errors import EEGTransferError

    X = fake_trials[0][:6]
    assert fake_population.predict(X).shape == (6,)  # the recipe's output passes
    with pytest.raises(EEGTransferError, match=r"does not look preprocessed.*bundle\.recipe \(4 channels"):
        fake_population.predict_proba(X * 3e-5)  # volts
    with pytest.raises(EEGTransferError, match=r"shape \(n_trials, 4, 64\).*bundle\.recipe"):
        fake_population.predict(X[:, :3])


def test_verbose_sets_the_level_for_one_call(saved_population, capsys):
    from eegtransfer.bundle import Bundle
    from eegtransfer.logs import use_log_level

    log = logging.getLogger("eegtransfer")
    before = log.level
    with use_log_level(True):
        assert log.level == logging.INFO
        log.info("shown")
    assert log.level == before and "shown" in capsys.readouterr().err
    assert Bundle.load(saved_population, verbose="error").classes
    assert log.level == before


def test_importing_and_building_prints_no_future_warnings():
    code = ("import eegtransfer, eegtransfer.bundle, eegtransfer.training, eegtransfer.io\n"
            "from eegtransfer.models import build_model\nbuild_model('EEGNet', 4, 2, 64, 64.0)\n")
    r = subprocess.run([sys.executable, "-W", "default::FutureWarning", "-c", code], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "FutureWarning" not in r.stderr, r.stderr
