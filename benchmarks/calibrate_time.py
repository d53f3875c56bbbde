"""Wall-clock time of ``eegtransfer calibrate`` on one ~4-minute Kalunga2016 recording.

What is timed is what a clinician waits for: the whole command in a fresh
process (start-up, imports, reading and preprocessing the file, adapting,
scoring the held-out trials, writing the bundle). Target: under 15 s on
2 CPU cores.

Usage::

    MNE_DATA=/path/to/mne_data python benchmarks/calibrate_time.py [--repeats 3] [--bundle POP]

Without ``--bundle`` a small population bundle (EEGNet, Kalunga subjects 2-3,
first runs, a few epochs) is made first; that part is not timed. The result
goes to ``benchmarks/results/calibrate_time.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
KALUNGA = ["Oz", "O1", "O2", "PO3", "POz", "PO7", "PO8", "PO4"]
KALUNGA_ID = {"13": 2, "17": 4, "21": 3, "rest": 1}
TARGET_S = 15.0


def kalunga_folder() -> Path:
    base = Path(os.environ.get("MNE_DATA", HERE.parent.parent / "shared" / "data" / "mne_data"))
    return base / "MNE-ssvepexo-data" / "zenodo" / "2392979"


def make_population(folder: Path, out: Path, epochs: int) -> Path:
    """EEGNet pretrained on Kalunga subjects 2 and 3 (first runs), read as plain files."""
    import numpy as np
    import pandas as pd

    from eegtransfer.io import load_recording
    from eegtransfer.preprocessing import Recipe
    from eegtransfer.training.pretraining import pretrain

    recipe = Recipe(channels=KALUNGA, sfreq=128.0, tmin=1.0, tmax=5.0, l_freq=4.0, h_freq=45.0)
    recs = [load_recording(folder / f"subject{s:02d}_run1_raw.fif", recipe, classes=sorted(KALUNGA_ID),
                           default_id=KALUNGA_ID, subject=str(s)) for s in (2, 3)]
    X = np.concatenate([r.X for r in recs])
    meta = pd.concat([r.meta for r in recs], ignore_index=True)
    pop = pretrain(X, meta["label"].to_numpy(), meta, recipe, model="EEGNet", epochs=epochs,
                   device="cpu", seed=0, provenance={"dataset": "Kalunga2016", "event_id": KALUNGA_ID})
    return pop.save(out, overwrite=True)


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess, float]:
    """Wall seconds, the finished process, and its CPU seconds (user + system).

    CPU time does not grow when other jobs share the cores, so it shows what
    the wall time would be on an idle machine (the command is single-threaded
    for all but short bursts).
    """
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, r, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, help="population bundle (default: make a small one)")
    ap.add_argument("--recording", type=Path, help="recording (default Kalunga subject 1 run 1 FIF)")
    ap.add_argument("--minutes", type=float, default=2.0, help="calibration minutes (default 2)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--pretrain-epochs", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="--device for calibrate: cpu (default), cuda or auto")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "calibrate_time.md")
    args = ap.parse_args()

    folder = kalunga_folder()
    recording = args.recording or folder / "subject01_run1_raw.fif"
    if not recording.is_file():
        print(f"calibrate_time: {recording} not found; set MNE_DATA to the Kalunga2016 cache", file=sys.stderr)
        return 2
    env = {**os.environ}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = args.bundle or make_population(folder, tmp / "population", args.pretrain_epochs)
        exe = [sys.executable, "-m", "eegtransfer.cli"]
        help_s, _, _ = timed([*exe, "--help"], env)
        info_s, _, _ = timed([*exe, "info", str(bundle)], env)
        load_before = os.getloadavg()
        times, cpus, last = [], [], None
        for i in range(args.repeats):
            cmd = [*exe, "calibrate", "--model", str(bundle), "--recording", str(recording),
                   "--minutes", str(args.minutes), "--out", str(tmp / f"patient{i}"),
                   "--report", str(tmp / f"report{i}.html"), "--json", "--quiet", "--device", args.device]
            s, last, cpu = timed(cmd, env)
            if last.returncode != 0:
                print(last.stderr, file=sys.stderr)
                return 1
            times.append(s)
            cpus.append(cpu)
            print(f"run {i + 1}: {s:.2f} s wall, {cpu:.2f} s CPU", file=sys.stderr)
        load_after = os.getloadavg()
    import json

    res = json.loads(last.stdout)
    med = statistics.median(times)
    import torch

    lines = [
        "# `eegtransfer calibrate` wall-clock time",
        "",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- machine: {platform.machine()}, {cores} CPU core(s) available, "
        f"load average {load_before[0]:.1f} before / {load_after[0]:.1f} after "
        "(the machine is shared; a load above the core count slows every number here)",
        f"- python {platform.python_version()}, torch {torch.__version__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        f"- recording: `{recording.name}` ({res['n_calibration_trials'] + res['n_heldout_trials']} trials), "
        f"`--minutes {args.minutes:g}` -> {res['n_calibration_trials']} calibration trials, "
        f"{res['n_heldout_trials']} held out; strategy {res['strategy']}, device {res['device']}",
        f"- command: `eegtransfer calibrate --model POP --recording {recording.name} --minutes {args.minutes:g} "
        f"--out PATIENT --report R.html --json --quiet --device {args.device}`",
        "",
        "| what | wall s | CPU s (user+sys) |",
        "|---|---|---|",
        f"| `eegtransfer --help` | {help_s:.2f} | |",
        f"| `eegtransfer info POP` | {info_s:.2f} | |",
    ]
    lines += [f"| calibrate run {i + 1} (incl. start-up) | {t:.2f} | {c:.2f} |"
              for i, (t, c) in enumerate(zip(times, cpus))]
    cpu_med = statistics.median(cpus)
    lines += [
        f"| **calibrate median** | **{med:.2f}** | **{cpu_med:.2f}** |",
        f"| calibrate, time inside the command (`seconds` in its JSON, last run) | {res['seconds']:.2f} | |",
        "",
        f"Target < {TARGET_S:g} s wall on 2 cores: **{'met' if med < TARGET_S else 'NOT met'}** on this run "
        f"(median {med:.2f} s wall at load {load_before[0]:.1f}); the command needs {cpu_med:.2f} s of CPU, "
        f"which {'fits' if cpu_med < TARGET_S else 'does not fit'} the target on an otherwise idle machine.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
