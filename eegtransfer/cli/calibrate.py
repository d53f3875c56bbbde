"""``eegtransfer calibrate``: adapt a population bundle to one patient's own recordings."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from .utils import (
    add_common,
    add_recording_options,
    check_recordings,
    check_strategy,
    check_stride,
    quiet_down,
    recording_entries,
    show_progress,
    strategy_help,
)

logger = logging.getLogger("eegtransfer")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate", help="adapt a population bundle to one patient's recordings",
        description=(
            "Read a patient's recordings (any format MNE reads), fit their channels, sampling rate "
            "and events to the population model, adapt the model on the first trials in recording "
            "time (--minutes or --trials), score it on the trials that remain, and write a patient "
            "bundle (and optionally an HTML report). Without --minutes or --trials it calibrates on "
            "every trial and holds none out: no held-out accuracy."
        ),
    )
    p.add_argument("--model", required=True, metavar="POP_BUNDLE", help="population bundle folder")
    add_recording_options(p)
    limit = p.add_mutually_exclusive_group()
    limit.add_argument("--minutes", type=float, metavar="M",
                       help="calibrate on the trials within the first M minutes of recording "
                       "(default: neither --minutes nor --trials: every trial, none held out)")
    limit.add_argument("--trials", type=int, metavar="N",
                       help="calibrate on the first N trials (default: every trial, none held out)")
    p.add_argument("--per-class", action="store_true",
                   help="apply --minutes/--trials to each class (default: to all trials)")
    p.add_argument("--strategy", default="auto", help=strategy_help() + "; auto compares its candidates on the "
                   "calibration trials themselves")
    p.add_argument("--out", required=True, metavar="PATIENT_BUNDLE", help="patient bundle folder to write")
    p.add_argument("--report", metavar="PATH",
                   help="write a self-contained HTML report there (its folder must exist; default: no report)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out / --report")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    quiet_down(args)
    from ..bundle import check_output_path, verify_weights, write_file_atomic
    from ..errors import EEGTransferError
    from ..io import parse_event_id
    from ..report import check_report_path, render_html
    from ..workflows import calibrate_patient

    # Cheap checks first: a bad bundle or output path fails before any file is read.
    model_dir, out = Path(args.model), Path(args.out)
    for flag, value in (("--minutes", args.minutes), ("--trials", args.trials)):
        if value is not None and value <= 0:
            raise EEGTransferError(f"{flag} must be > 0, got {value:g}")
    check_stride(args)
    if args.per_class and args.minutes is None and args.trials is None:
        raise EEGTransferError("--per-class needs --minutes or --trials")
    check_strategy(args.strategy)
    entries = recording_entries(args)
    check_recordings(entries)
    verify_weights(model_dir)
    check_output_path(out, protect=[model_dir], overwrite=args.overwrite, what="--out")
    report = Path(args.report) if args.report else None
    if report is not None:
        check_report_path(report, protect=[model_dir], overwrite=args.overwrite)
        if report.absolute() == out.absolute():
            raise EEGTransferError("--report must differ from --out")
    res = calibrate_patient(model_dir, entries, minutes=args.minutes, trials=args.trials, per_class=args.per_class,
                            strategy=args.strategy, event_id=parse_event_id(args.event_id),
                            interpolate_missing=args.interpolate_missing, encoding=args.encoding,
                            stride=args.stride, device=args.device, seed=args.seed, progress=show_progress(args))
    html = render_html(res.patient.to_meta()) if report is not None else None  # before saving: all or nothing
    res.patient.save(out, overwrite=args.overwrite, protect=[model_dir])
    if html is not None:
        write_file_atomic(report, html, overwrite=True)  # existence was checked before training
    result = summary(res, args, out=out, report=report, seconds=time.perf_counter() - t0)
    if args.json:
        print(json.dumps(result))
    else:
        print_summary(res, result)
    return 0


def summary(res: Any, args: argparse.Namespace, *, out: Path, report: Path | None, seconds: float) -> dict:
    """The ``--json`` object."""
    from .. import __version__

    ad, held = res.patient.adaptation, res.heldout
    return {
        "heldout_accuracy": None if held is None else held["accuracy"],
        "heldout_balanced_accuracy": None if held is None else held["balanced_accuracy"],
        "n_calibration_trials": res.n_calibration, "n_heldout_trials": res.n_heldout,
        "n_bad_dropped": res.n_bad_dropped, "calibration_minutes": res.calibration_minutes,
        "selection": res.selection, "classes": list(res.patient.classes), "strategy": args.strategy,
        "chosen": ad.chosen, "candidates": ad.candidates or None,
        "new_head": ad.new_head, "note": ad.note or ad.guard_skipped,
        "guard": ad.guard.kept if ad.guard else f"not applied: {ad.guard_skipped}",
        "channels": list(res.patient.recipe.channels), "interpolated": res.interpolated, "device": ad.device,
        "model": str(args.model), "out": str(out), "report": str(report) if report else None,
        "recordings": [{"path": r["path"], "sha256": r["sha256"]} for r in res.recordings],
        "warnings": res.warnings, "version": __version__, "seconds": round(seconds, 3),
    }


def print_summary(res: Any, result: dict) -> None:
    """The human-readable summary."""
    p = res.patient
    source = "recording" if len(res.recordings) == 1 else f"{len(res.recordings)} recordings"
    print(f"calibrated   {p.model_name} on {res.n_calibration} trials ({res.selection}, "
          f"{res.calibration_minutes:.2f} min of recording) from {source}, strategy {result['strategy']}, "
          f"device {result['device']}, {result['seconds']:.1f} s")
    print(f"classes      {', '.join(p.classes)}: NEW HEAD ({result['note']})" if result["new_head"]
          else f"classes      {', '.join(p.classes)} (the model's own)")
    if res.n_bad_dropped:
        print(f"dropped      {res.n_bad_dropped} trials overlapping a BAD annotation")
    print(f"channels     {len(result['channels'])} used" + (f"; interpolated {', '.join(res.interpolated)}"
                                                           if res.interpolated else "; none interpolated"))
    held = res.heldout
    print("held-out     unavailable: every trial was used for calibration" if held is None else
          f"held-out     {held['n']} trials: accuracy {held['accuracy']:.3f}, balanced accuracy "
          f"{held['balanced_accuracy']:.3f}")
    if result["chosen"]:  # auto's cross-fitting is its guard
        print(f"auto         chose {result['chosen']} (cross-fitted log-loss on unseen calibration trials: "
              + ", ".join(f"{k} {v:.3f}" for k, v in result["candidates"].items()) + ")")
    else:
        note = result["note"] if result["note"] and not result["new_head"] else ""
        print(f"guard        {result['guard']}" + (f" ({note})" if note else ""))
    print(f"bundle       {result['out']}")
    if result["report"]:
        print(f"report       {result['report']}")
