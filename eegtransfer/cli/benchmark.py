"""``eegtransfer benchmark``: the leave-one-subject-out protocol, or MOABB's cross-subject evaluation."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .utils import add_common

logger = logging.getLogger("eegtransfer")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark", help="leave-one-subject-out benchmark of adapted models against baselines",
        description=(
            "--protocol loso (default): the one evaluation protocol (eegtransfer.evaluation.loso): for "
            "every target subject, calibration on the first 1 and 2 minutes and the whole first run "
            "(grown until every class has 2 trials), test on its later runs, the same trials for every "
            "method; ours against zero-shot, TS+LR/MDM within subject, RCT/RPA with the population, CCA "
            "(SSVEP) and the network from scratch; writes loso.csv, loso_moabb.csv and loso.md (n, "
            "paired Wilcoxon tests) into --out. --protocol moabb: "
            "MOABB's CrossSubjectEvaluation once per calibration size: each held-out subject's "
            "first CALIBRATION_SIZE of every session is given, labelled, to the pipelines; the rest "
            "is the test. Pipelines: our population model adapted with each --strategies (and "
            "zero-shot), and pyRiemann baselines (--baselines) both population-only and with the "
            "calibration trials pooled in (+cal). Writes results.csv (MOABB format plus "
            "calibration_size), calibration_curve.csv/.md and plots into --out. Population models "
            "are cached (--cache-dir, $EEGTRANSFER_CACHE, ~/.cache/eegtransfer)."
        ),
    )
    p.add_argument("--protocol", choices=["loso", "moabb"], default="loso",
                   help="loso: the one protocol; moabb: MOABB's CrossSubjectEvaluation (default loso)")
    p.add_argument("--datasets", nargs="+", default=["Kalunga2016"], help="MOABB dataset classes")
    p.add_argument("--sfreq", type=float, default=None,
                   help="loso: network input rate in Hz (default: the dataset recipe's)")
    p.add_argument("--no-rpa", action="store_true", help="loso: skip RPA (its rotation is slow)")
    p.add_argument("--subjects", nargs="+", type=int, default=None, help="subjects (default: all)")
    p.add_argument("--calibration-sizes", nargs="+", type=float, default=[0.2, 0.5],
                   help="fractions of each target session given as labelled calibration (<= 0.5)")
    p.add_argument("--strategies", nargs="+", default=["head", "last-k"], help="adaptation strategies")
    p.add_argument("--baselines", nargs="*", default=["TS+LR", "MDM"], help="TS+LR and/or MDM")
    p.add_argument("--no-zero-shot", action="store_true", help="leave out the zero-shot pipeline")
    p.add_argument("--model", default="EEGNet", help="braindecode model (default EEGNet)")
    p.add_argument("--epochs", type=int, default=100, help="maximum pretraining epochs (default 100)")
    p.add_argument("--adapt-epochs", type=int, default=200, help="maximum adaptation epochs (default 200)")
    p.add_argument("--resample", type=float, default=128.0, help="paradigm sampling rate in Hz (default 128)")
    p.add_argument("--out", default="eegtransfer-benchmark", help="output folder")
    p.add_argument("--cache-dir", default=None, help="pretrain cache folder")
    p.add_argument("--n-jobs", type=int, default=1, help="held-out subjects fitted in parallel (joblib)")
    p.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                   help="send the folds to this Dask scheduler (e.g. tcp://host:8786)")
    p.add_argument("--no-plots", action="store_true", help="do not draw the plots")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import EEGTransferError
    from ..evaluation.moabb import curve_markdown, run_benchmark
    from ..models import check_model_name

    model = check_model_name(args.model)
    if args.epochs < 1 or args.adapt_epochs < 1:
        raise EEGTransferError("--epochs and --adapt-epochs must be >= 1")
    if args.protocol == "loso":
        return run_loso(args, model)
    if args.n_jobs == 0:
        raise EEGTransferError("--n-jobs must not be 0 (use -1 for every core)")
    res = run_benchmark(
        args.datasets, subjects=args.subjects, calibration_sizes=args.calibration_sizes,
        strategies=args.strategies, baselines=args.baselines, zero_shot=not args.no_zero_shot,
        model=model, epochs=args.epochs, adapt_epochs=args.adapt_epochs, seed=args.seed,
        device=args.device, resample=args.resample, cache_dir=args.cache_dir, out_dir=args.out,
        n_jobs=args.n_jobs, dask_scheduler=args.dask_scheduler, plots=not args.no_plots,
    )
    md = Path(args.out) / "calibration_curve.md"
    md.write_text(curve_markdown(res.curve) + "\n")
    res.files["curve_md"] = md
    if args.json:
        print(json.dumps({"seconds": round(res.seconds, 1), "files": {k: str(v) for k, v in res.files.items()},
                          "curve": res.curve.to_dict(orient="records")}))
    else:
        print(curve_markdown(res.curve))
        print("files  " + "  ".join(str(v) for v in res.files.values()))
    return 0


def run_loso(args: argparse.Namespace, model: str) -> int:
    """The one protocol on each dataset: one folder of results per dataset under --out."""
    import time

    import pandas as pd

    from ..evaluation import loso

    for name in args.datasets:
        t0 = time.perf_counter()
        d = loso.load(name, args.sfreq)
        targets = args.subjects or sorted({int(s) for s in d["meta"]["subject"]})
        rows, infos = [], []
        for target in targets:
            r, info = loso.run_target(target, d, model=model, epochs=args.epochs, adapt_epochs=args.adapt_epochs,
                                      rpa=not args.no_rpa, device=args.device, seed=args.seed)
            rows += r
            infos.append(info)
            logger.info("%s subject %s done", d["name"], target)
        run = {"command": "eegtransfer " + " ".join(sys.argv[1:]), "dataset": d["name"],
               "args": {"seed": args.seed, "device": args.device}, "pretraining": infos,
               "wall_seconds": round(time.perf_counter() - t0, 1), "recipe_network": d["net"].to_dict(),
               "recipe_baselines": d["base"].to_dict()}
        md = loso.write_results(pd.DataFrame(rows), [run], Path(args.out) / d["name"],
                                title=f"{d['name']} leave-one-subject-out, one protocol")
        print(json.dumps({"dataset": d["name"], "report": str(md)}) if args.json else md)
    return 0
