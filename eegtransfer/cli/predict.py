"""``eegtransfer predict``: per-trial classes and probabilities for one recording."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from .utils import add_common, add_recording_options

logger = logging.getLogger("eegtransfer")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="predict the class of each trial of a recording with a (patient) bundle",
        description=(
            "Cut a recording into trials (at its events, or into consecutive windows when it has "
            "no event at all) and write one CSV row per trial: onset in seconds, the true label when known, the "
            "predicted class and one probability column per class."
        ),
    )
    p.add_argument("--model", required=True, nargs="+", metavar="PATIENT_BUNDLE",
                   help="bundle folder; several (one population pretrained with several --seed values, say) "
                        "predict together, their probabilities averaged")
    add_recording_options(p, several=False, manifest=False)
    p.add_argument("--out", required=True, metavar="CSV", help="predictions file to write")
    p.add_argument("--balance-classes", action="store_true",
                   help="transductive: read the whole recording first, then rescale each class's probabilities "
                        "until their mean over the recording is equal for every class (no labels used); for a "
                        "recording that holds every class equally often, it undoes a drift towards one class")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_common(p, seed=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from ..bundle import check_output_path, verify_weights, write_file_atomic
    from ..errors import EEGTransferError
    from ..io import has_events, load_recording, parse_event_id, read_raw
    from ..io.reading import check_readable
    from ..preprocessing import Recipe
    from .utils import check_stride, quiet_down

    quiet_down(args)
    check_stride(args)

    entries = getattr(args, "recordings", None) or []
    if len(entries) != 1:
        raise EEGTransferError(f"predict takes exactly one --recording, got {len(entries)}")
    entry = entries[0]
    from ..bundle import Bundle
    from ..ensemble import BundleEnsemble

    model_dirs, out = [Path(m) for m in args.model], Path(args.out)
    meta_json = [verify_weights(m) for m in model_dirs][0]  # every bundle checked; the first one's recipe
    check_output_path(out, protect=model_dirs, overwrite=args.overwrite, what="--out")
    # several bundles are checked against each other before the recording is read
    bundle = Bundle.load(model_dirs[0]) if len(model_dirs) == 1 else BundleEnsemble.load(model_dirs)
    model = (bundle.model_name if len(model_dirs) == 1 else
             f"{len(model_dirs)} {bundle.members[0].model_name} bundles averaged")
    check_readable(entry["path"])
    recipe = Recipe.from_dict(meta_json["recipe"])
    classes = list(meta_json["classes"])
    reused = reused_calibration(meta_json, args)
    user_id = parse_event_id(args.event_id) or reused.get("event_id") or {}
    default_id = (meta_json.get("provenance") or {}).get("event_id")
    interpolate = True if args.interpolate_missing else list(reused.get("interpolated") or []) or False

    raw = read_raw(entry["path"], encoding=args.encoding)
    # Consecutive windows only for a recording with no event at all: events that match no
    # class (a typo, a wrong --event-id) are an error, never a silent loss of the accuracy.
    windows = entry["events"] is None and not args.event_id and not has_events(raw)
    fallback = None
    if windows:
        fallback = (f"{entry['path']}: no events (no annotation, no stim channel code); predicting "
                    f"on {recipe.tmax - recipe.tmin:g}-s windows every "
                    f"{args.stride or recipe.tmax - recipe.tmin:g} s, without accuracy")
        logger.warning(fallback)
        if args.balance_classes:  # windows of an unknown design: no proportions to balance towards
            raise EEGTransferError(f"{entry['path']}: --balance-classes needs trials cut at events (a design "
                                   "that holds every class equally often); this recording has no events")
    rec = load_recording(entry["path"], recipe, classes=classes, events=entry["events"],
                         event_id=user_id, default_id=default_id, windows=windows,
                         stride=args.stride if windows else None,
                         interpolate_missing=interpolate, encoding=args.encoding, raw=raw)

    from ..training.engine import resolve_device

    device = resolve_device(args.device)
    proba = bundle.predict_proba(rec.X, device=str(device))
    if args.balance_classes:
        from ..adaptation import balance_classes

        proba = balance_classes(proba)
    pred = np.asarray(bundle.classes, dtype=object)[proba.argmax(1)]
    df = pd.DataFrame({"onset": rec.meta["onset"].round(4).to_numpy()})
    if not windows:
        df["label"] = rec.meta["label"].astype(str).to_numpy()
    df["predicted"] = pred
    for i, c in enumerate(bundle.classes):
        df[f"p_{c}"] = proba[:, i].round(6)
    write_file_atomic(out, df.to_csv(index=False), overwrite=args.overwrite)
    result = {"out": str(out), "n_trials": int(len(df)), "classes": list(bundle.classes),
              "events_from": rec.events_from, "device": str(device),
              "interpolated": rec.channels.interpolated, "windows_fallback": fallback,
              "n_bad_dropped": rec.n_bad_dropped, "balanced_classes": bool(args.balance_classes),
              "reused_from_calibration": {k: v for k, v in reused.items() if v}}
    if not windows:
        known = df["label"].isin(bundle.classes).to_numpy()
        result["accuracy"] = float((df["label"] == df["predicted"])[known].mean()) if known.any() else None
    if args.json:
        print(json.dumps(result))
    else:
        print(f"predicted    {len(df)} trials ({rec.events_from}) with {model} on {device}"
              + (f"; {rec.n_bad_dropped} overlapping a BAD annotation dropped" if rec.n_bad_dropped else "")
              + ("; classes balanced over the recording (--balance-classes)" if args.balance_classes else ""))
        for line in _reuse_lines(reused):
            print(line)
        if result.get("accuracy") is not None:
            print(f"accuracy     {result['accuracy']:.3f} against the recording's labels")
        print(f"wrote        {out}")
    return 0


def reused_calibration(meta_json: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """What ``predict`` takes over from the bundle's calibration, unless given again on the command line.

    The channels interpolated at calibration are interpolated again (exactly
    those: the adapted model saw them so), and the event ids named at
    calibration name this recording's events.
    """
    cal = ((meta_json.get("adaptation") or {}).get("calibration")) or {}
    return {"interpolated": [] if args.interpolate_missing else list(cal.get("interpolated") or []),
            "event_id": {} if args.event_id else dict(cal.get("event_id") or {})}


def _reuse_lines(reused: dict[str, Any]) -> list[str]:
    lines = []
    if reused.get("interpolated"):
        lines.append(f"channels     interpolated {', '.join(reused['interpolated'])}, as at calibration")
    if reused.get("event_id"):
        ids = " ".join(f"{k}={v}" for k, v in reused["event_id"].items())
        lines.append(f"events       event ids from calibration: {ids}")
    return lines
