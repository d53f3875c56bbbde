"""Leave-one-subject-out through the one protocol, against strong baselines (default Kalunga2016).

The protocol, the methods and the tables are library code (:mod:`eegtransfer.evaluation.loso`,
also behind ``eegtransfer benchmark``); this script runs targets in parts that can go side by
side on a small machine, and merges them::

    python benchmarks/loso.py --out benchmarks/out/a --subjects 1-6 &
    python benchmarks/loso.py --out benchmarks/out/b --subjects 7-11 &
    wait; python benchmarks/loso.py --merge benchmarks/out/a benchmarks/out/b --out benchmarks/results/loso

Each part writes ``loso.csv`` (one row per subject, window and method) after every target and
``loso_run.json`` at the end; ``--merge`` writes ``loso.csv``, ``loso_moabb.csv`` and ``loso.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", category=FutureWarning)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from eegtransfer.evaluation.loso import PRETRAIN

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="Kalunga2016",
                   help=f"MOABB dataset (default Kalunga2016), or {FAKE_BNCI} for a FakeDataset shaped like "
                   "BNCI2014_001 (no download; noise without class signal: a check that nothing breaks "
                   "or harms on another paradigm)")
    p.add_argument("--subjects", default="1-11", help="targets, e.g. 1-11 or 1,3,7 (default 1-11)")
    p.add_argument("--sfreq", type=float, default=64.0, help="network input rate (default 64 Hz)")
    p.add_argument("--epochs", type=int, default=PRETRAIN["epochs"], help="maximum pretraining epochs")
    p.add_argument("--adapt-epochs", type=int, default=100, help="maximum epochs of last-k and scratch")
    p.add_argument("--no-rpa", action="store_true", help="skip RPA (its rotation takes ~25 s per fit)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1,
                   help="also pretrain the plain population with this many seeds in all and add the ensemble rows")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "loso")
    p.add_argument("--merge", nargs="+", type=Path, metavar="DIR", help="merge part runs into --out")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be at least 1, got {args.seeds}")
    return args


FAKE_BNCI = "FakeBNCI2014_001"
BNCI_CHANNELS = ("Fz", "FC3", "FC1", "FCz", "FC2", "FC4", "C5", "C3", "C1", "Cz", "C2", "C4", "C6", "CP3",
                 "CP1", "CPz", "CP2", "CP4", "P1", "Pz", "P2", "POz")


def fake_bnci() -> object:
    """MOABB's FakeDataset with BNCI2014_001's shape: 22 channels, 250 Hz, 4 motor-imagery
    classes, 9 subjects; 3 runs of 48 trials each (BNCI2014_001 has 2 sessions of 6)."""
    from moabb.datasets.fake import FakeDataset

    return FakeDataset(event_list=("left_hand", "right_hand", "feet", "tongue"), n_subjects=9, n_sessions=1,
                       n_runs=3, n_events=48, duration=48 * 7.5, sfreq=250, channels=BNCI_CHANNELS,
                       paradigm="imagery", seed=0)


def parse_subjects(text: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, (t.strip() for t in text.split(","))):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def main(argv: list[str] | None = None) -> int:
    from eegtransfer.evaluation import loso

    args = parse_args(argv)
    logging.getLogger("eegtransfer").setLevel(logging.ERROR)
    os.environ.setdefault("MOABB_DOWNLOAD_PROVIDER", "upstream")
    command = "python benchmarks/loso.py " + " ".join(map(shlex.quote, sys.argv[1:] if argv is None else argv))
    title = f"{args.dataset} leave-one-subject-out, one protocol"
    if args.merge:
        runs = [json.loads((p / "loso_run.json").read_text()) for p in args.merge]
        df = pd.concat([pd.read_csv(p / "loso.csv") for p in args.merge], ignore_index=True)
        df = df.drop_duplicates(["subject", "window", "method"])
        print(loso.write_results(df, runs, args.out, title=title, merged=command))
        return 0
    t0 = time.perf_counter()
    d = loso.load(fake_bnci() if args.dataset == FAKE_BNCI else args.dataset, args.sfreq)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, infos = [], []
    for target in parse_subjects(args.subjects):
        r, info = loso.run_target(target, d, epochs=args.epochs, adapt_epochs=args.adapt_epochs,
                                  rpa=not args.no_rpa, device=args.device, seed=args.seed, seeds=args.seeds)
        rows += r
        infos.append(info)
        pd.DataFrame(rows).to_csv(args.out / "loso.csv", index=False)  # a partial run keeps its rows
        last = pd.DataFrame(r).query("window == 'run'").set_index("method")["accuracy"]
        print(f"target {target}: " + ", ".join(f"{k}={v:.2f}" for k, v in last.items()), flush=True)
    run = {"command": command, "dataset": args.dataset, "args": {k: str(v) for k, v in vars(args).items()},
           "wall_seconds": round(time.perf_counter() - t0, 1), "pretraining": infos,
           "recipe_network": d["net"].to_dict(), "recipe_baselines": d["base"].to_dict()}
    (args.out / "loso_run.json").write_text(json.dumps(run, indent=2, default=str))
    print(loso.write_results(pd.DataFrame(rows), [run], args.out, title=title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
