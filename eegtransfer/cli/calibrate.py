"""``eegtransfer calibrate``: adapt a population bundle to one patient's own recordings."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import add_common, check_strategy, strategy_help

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd

    from ..io import Recording
    from ..preprocessing import Recipe

logger = logging.getLogger("eegtransfer")


# --- shared by calibrate, predict and pretrain ------------------------------------

class RecordingAction(argparse.Action):
    """``--recording A [--events EA] --recording B ...``: each --events belongs to the
    --recording before it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        if option_string == "--recording":
            items.append({"path": values, "events": None})
        else:
            if not items:
                parser.error("--events must follow the --recording it belongs to")
            if items[-1]["events"] is not None:
                parser.error(f"--events given twice for --recording {items[-1]['path']}")
            items[-1]["events"] = values
        setattr(namespace, self.dest, items)


def add_recording_options(p: argparse.ArgumentParser, *, several: bool = True,
                          manifest: bool = True) -> None:
    """--recording/--events (and --manifest), --event-id, --encoding, --interpolate-missing.

    Without ``--manifest`` to choose instead, ``--recording`` is required (and shown so).
    """
    p.add_argument("--recording", dest="recordings", action=RecordingAction, metavar="FILE",
                   required=not manifest,
                   help="an EEG file MNE reads (EDF/EDF+, BDF, GDF, FIF, BrainVision .vhdr, EEGLAB .set)"
                   + ("; repeat for several, in recording-time order" if several else ""))
    p.add_argument("--events", dest="recordings", action=RecordingAction, metavar="EVENTS",
                   help="events of the --recording before it: a CSV with columns onset (s) and label, "
                   "or an MNE events file; default: the file's stim channel if its codes name the classes, "
                   "else its annotations")
    if manifest:
        p.add_argument("--manifest", metavar="CSV",
                       help="CSV with columns path, subject, session and events (a file) or label "
                       "(the whole file is one class); relative paths are read from the CSV's folder")
    p.add_argument("--event-id", action="append", default=[], metavar="NAME=CODE",
                   help="class name for an event code or annotation description; repeat per class")
    p.add_argument("--encoding", default=None, metavar="ENC",
                   help="text encoding of EDF+/BDF+ annotations (default utf8), e.g. latin1")
    p.add_argument("--interpolate-missing", action="store_true",
                   help="interpolate model channels the recording lacks from a standard montage "
                   "(default: refuse)")


def check_recordings(entries: list[dict[str, Any]]) -> None:
    """Every recording exists and has a format MNE reads: checked before any is read."""
    from ..io.reading import check_readable

    for e in entries:
        check_readable(e["path"])


def recording_entries(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The recordings named on the command line or in ``--manifest``, as dicts with
    ``path, events, label, subject, session``."""
    from ..errors import EEGTransferError
    from ..io import read_manifest

    given = getattr(args, "recordings", None) or []
    manifest = getattr(args, "manifest", None)
    if bool(given) == bool(manifest):
        raise EEGTransferError("give either --recording FILE (repeatable) or --manifest CSV, not both"
                               if given else "give --recording FILE (repeatable) or --manifest CSV")
    if manifest:
        df = read_manifest(manifest)
        return [dict(r) for r in df.to_dict("records")]
    return [{"path": r["path"], "events": r["events"], "label": None, "subject": "patient",
             "session": "0"} for r in given]


def load_recordings(entries: list[dict[str, Any]], recipe: Recipe, *, classes: list[str] | None,
                    event_id: dict[str, str], default_id: dict[str, int] | None,
                    interpolate_missing: bool, encoding: str | None,
                    progress: bool) -> tuple[np.ndarray, pd.DataFrame, list[Recording]]:
    """Trials of every recording, in the order given (one ``run`` per file).

    Returns
    -------
    X : ndarray of float32, shape (n_trials, n_chans, n_times)
    meta : pandas.DataFrame
        Trial metadata; ``run`` is the recording's position in ``entries``.
    recordings : list of Recording
    """
    import numpy as np
    import pandas as pd
    from tqdm.auto import tqdm

    from ..io import load_recording

    recs = []
    for i, e in enumerate(tqdm(entries, desc="read recordings", disable=not progress, leave=False,
                               file=sys.stderr, delay=1.0)):
        recs.append(load_recording(e["path"], recipe, classes=classes, events=e.get("events"),
                                   event_id=event_id, default_id=default_id, label=e.get("label"),
                                   interpolate_missing=interpolate_missing, encoding=encoding,
                                   subject=str(e.get("subject") or "patient"),
                                   session=str(e.get("session") or "0"), run=str(i)))
    X = np.concatenate([r.X for r in recs])
    meta = pd.concat([r.meta for r in recs], ignore_index=True)
    return X, meta, recs


# --- the command ---------------------------------------------------------------

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
    p.add_argument("--strategy", default="head", help=strategy_help())
    p.add_argument("--out", required=True, metavar="PATIENT_BUNDLE", help="patient bundle folder to write")
    p.add_argument("--report", metavar="PATH",
                   help="write a self-contained HTML report there (its folder must exist; default: no report)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out / --report")
    add_common(p)
    p.set_defaults(func=run)


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars on an interactive terminal only, never with ``--quiet``: piped
    stderr (logs, CI, tests) gets the one-line messages and nothing else."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def quiet_down(args: argparse.Namespace) -> None:
    """``--quiet`` means silence: no warnings either (notes still reach the output/report)."""
    if getattr(args, "quiet", False):
        import warnings

        logging.getLogger("eegtransfer").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    quiet_down(args)
    import numpy as np

    from .. import __version__
    from ..adaptation import check_class_counts, select_calibration, timeline
    from ..bundle import chance_level_warning, check_output_path, verify_weights
    from ..errors import EEGTransferError
    from ..io import parse_event_id
    from ..preprocessing import Recipe

    # Cheap checks first: a bad bundle or output path fails before any file is read.
    model_dir, out = Path(args.model), Path(args.out)
    if args.minutes is not None and args.minutes <= 0:
        raise EEGTransferError(f"--minutes must be > 0, got {args.minutes:g}")
    if args.trials is not None and args.trials <= 0:
        raise EEGTransferError(f"--trials must be > 0, got {args.trials}")
    if args.per_class and args.minutes is None and args.trials is None:
        raise EEGTransferError("--per-class needs --minutes or --trials")
    check_strategy(args.strategy)
    entries = recording_entries(args)
    check_recordings(entries)
    meta_json = verify_weights(model_dir)
    check_output_path(out, protect=[model_dir], overwrite=args.overwrite, what="--out")
    report = Path(args.report) if args.report else None
    if report is not None:
        from ..report import check_report_path

        check_report_path(report, protect=[model_dir], overwrite=args.overwrite)
        if report.absolute() == out.absolute():
            raise EEGTransferError("--report must differ from --out")
    recipe = Recipe.from_dict(meta_json["recipe"])
    classes = list(meta_json["classes"])
    user_id = parse_event_id(args.event_id)
    prov = meta_json.get("provenance") or {}
    default_id = prov.get("event_id")

    X, meta, recs = load_recordings(entries, recipe, classes=classes, event_id=user_id,
                                    default_id=default_id, interpolate_missing=args.interpolate_missing,
                                    encoding=args.encoding, progress=show_progress(args))
    labels = meta["label"].astype(str).to_numpy()
    source = "recording" if len(recs) == 1 else f"{len(recs)} recordings"
    if args.minutes is None and args.trials is None:
        cal = np.ones(len(meta), bool)
        selection = "all trials"
    else:
        cal = select_calibration(meta, minutes=args.minutes, trials=args.trials, per_class=args.per_class,
                                 trial_seconds=recipe.tmax, source=source)
        selection = (f"first {args.minutes:g} min" if args.minutes is not None else f"first {args.trials} trials") \
            + (" per class" if args.per_class else "")
    found_classes = sorted(set(labels.tolist()))
    # The model's head is kept unless a label is new to it: then it needs every model class.
    need = found_classes if set(found_classes) - set(classes) else classes
    check_class_counts(labels[cal], classes=need, what=f"calibration set ({selection})")
    t = timeline(meta)
    order = np.where(cal)[0][np.argsort(t[cal], kind="stable")]  # adapt wants time order
    cal_minutes = float((t[cal] + recipe.tmax).max() / 60)
    interpolated = sorted({c for r in recs for c in r.channels.interpolated})
    new_classes = sorted(set(found_classes) - set(classes))
    logger.info("%d trials from %s (%s); calibrating on %d (%s), %d held out", len(meta), source,
                ", ".join(sorted({r.events_from for r in recs})), int(cal.sum()), selection,
                int((~cal).sum()))

    # Heavy imports only now that the input is known to be usable.
    from ..adaptation import adapt
    from ..bundle import Bundle
    from ..evaluation import score_bundle

    pop = Bundle.load(model_dir)
    # Said once the input is known to be usable, so a refusal stays one line.
    chance = chance_level_warning(meta_json)
    if chance:
        logger.warning("warning: %s: %s", model_dir, chance)
    if args.minutes is None and args.trials is None:
        logger.info("no --minutes or --trials: calibrating on all %d trials, none held out (no held-out "
                    "accuracy)", len(meta))
    calibration = {
        "recordings": [{"path": str(r.path.absolute()), "sha256": r.sha256} for r in recs],
        "calibration_minutes": round(cal_minutes, 3),
        "selection": selection,
        "n_heldout_trials": int((~cal).sum()),
        "channels": list(recipe.channels),
        "interpolated": interpolated,
    }
    if user_id:
        calibration["event_id"] = user_id
    patient = adapt(pop, X[order], labels[order], strategy=args.strategy, device=args.device,
                    seed=args.seed, progress=show_progress(args), calibration=calibration)
    # info shows the population's own scores under "population", apart from the patient's.
    patient.provenance["population_metrics"] = dict(pop.metrics)
    held = None
    if (~cal).any():
        held = score_bundle(patient, X[~cal], labels[~cal])
        patient.metrics.update(heldout_accuracy=held["accuracy"],
                               heldout_balanced_accuracy=held["balanced_accuracy"])
    ad = patient.adaptation
    note = ad.note or ad.guard_skipped
    result = {
        "heldout_accuracy": None if held is None else held["accuracy"],
        "heldout_balanced_accuracy": None if held is None else held["balanced_accuracy"],
        "n_calibration_trials": int(cal.sum()),
        "n_heldout_trials": int((~cal).sum()),
        "n_bad_dropped": sum(r.n_bad_dropped for r in recs),
        "calibration_minutes": round(cal_minutes, 3),
        "selection": selection,
        "classes": list(patient.classes),
        "strategy": args.strategy,
        "new_head": ad.new_head,
        "note": note,
        "guard": ad.guard.kept if ad.guard else f"not applied: {ad.guard_skipped}",
        "channels": list(recipe.channels),
        "interpolated": interpolated,
        "device": ad.device,
        "model": str(model_dir),
        "out": str(out),
        "report": str(report) if report else None,
        "recordings": [r.summary() for r in recs],
        "version": __version__,
    }
    from ..report import calibration_facts, render_html

    # Stored in the bundle, so that `eegtransfer report` can remake this report later.
    ad.calibration.update(calibration_facts(patient, X, labels, meta, cal, held=held, recordings=result["recordings"],
                                            population=meta_json, population_path=model_dir))
    result["seconds"] = round(time.perf_counter() - t0, 3)
    html = render_html(patient.to_meta()) if report is not None else None
    patient.save(out, overwrite=args.overwrite, protect=[model_dir])
    if html is not None:
        from ..bundle import write_file_atomic

        write_file_atomic(report, html, overwrite=True)  # existence was checked before training
    result["seconds"] = round(time.perf_counter() - t0, 3)
    if new_classes:
        logger.info("classes %s are not the model's %s: a new head was trained", new_classes, classes)

    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "recordings"}
                         | {"recordings": [{"path": r["path"], "sha256": r["sha256"]} for r in result["recordings"]]}))
        return 0
    print(f"calibrated   {pop.model_name} on {result['n_calibration_trials']} trials "
          f"({selection}, {cal_minutes:.2f} min of recording) from {source}, strategy {args.strategy}, "
          f"device {result['device']}, {result['seconds']:.1f} s")
    if result["new_head"]:
        print(f"classes      {', '.join(patient.classes)}: NEW HEAD ({note})")
    else:
        print(f"classes      {', '.join(patient.classes)} (the model's own: existing head fine-tuned)")
    if result["n_bad_dropped"]:
        print(f"dropped      {result['n_bad_dropped']} trials overlapping a BAD annotation")
    print(f"channels     {len(recipe.channels)} used" + (f"; interpolated {', '.join(interpolated)}"
                                                         if interpolated else "; none interpolated"))
    if held is None:
        print("held-out     unavailable: every trial was used for calibration")
    else:
        print(f"held-out     {held['n']} trials: accuracy {held['accuracy']:.3f}, balanced accuracy "
              f"{held['balanced_accuracy']:.3f}")
    if result["guard"]:
        print(f"guard        {result['guard']}" + (f" ({note})" if note and not result["new_head"] else ""))
    print(f"bundle       {out}")
    if report is not None:
        print(f"report       {report}")
    return 0
