"""``eegtransfer pretrain``: a population bundle from a MOABB dataset or a manifest of files."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from .utils import add_common

logger = logging.getLogger("eegtransfer")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain", help="pretrain a population model on a MOABB dataset or a manifest of recordings",
        description=(
            "Train one braindecode model on many subjects (validation split by subject) and write a "
            "population bundle. --dataset reads a MOABB dataset (set MNE_DATA to its cache); "
            "--manifest reads a CSV of recordings (columns path, subject, session and events or "
            "label); the recipe then takes the first file's EEG channels unless --channels is given."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", metavar="NAME", help="MOABB dataset class, e.g. Kalunga2016")
    src.add_argument("--manifest", metavar="CSV", help="CSV listing recordings")
    p.add_argument("--paradigm", metavar="P",
                   help="expected paradigm of --dataset (ssvep, imagery, p300 ...); checked and recorded")
    p.add_argument("--subjects", nargs="+", type=int, metavar="N",
                   help="subjects of --dataset (default: all)")
    p.add_argument("--model", default="EEGNet", metavar="NAME", help="braindecode model (default EEGNet)")
    p.add_argument("--epochs", type=int, default=100, help="maximum epochs (default 100)")
    p.add_argument("--out", required=True, metavar="POP_BUNDLE", help="bundle folder to write")
    p.add_argument("--report", metavar="PATH", help="write an HTML report there (validation, learning curves)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out / --report")
    p.add_argument("--allow-chance", action="store_true",
                   help="write the population even when its validation accuracy is not above chance "
                   "(one-sided binomial test, p >= 0.05); it is then flagged chance_level in its "
                   "provenance, and info and calibrate warn (default: refuse it)")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="save the training state there after every epoch; rerunning the same command "
                   "resumes an interrupted pretraining from it")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train data-parallel in N processes (DistributedDataParallel, relaunched under "
                   "torchrun; gloo on the CPU, one GPU each with NCCL); each global batch is shared "
                   "among them")
    p.add_argument("--align", action="store_true",
                   help="Euclidean alignment: whiten each subject's trials by its own mean covariance "
                        "(patients then calibrate with the align strategies; auto picks among them)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="train through torch.compile: on, off, or auto (default): on the CPU only when "
                   "the run is long enough to repay the compile time (tens of seconds); a failed "
                   "compilation warns and trains eager")
    g = p.add_argument_group("recipe overrides")
    g.add_argument("--channels", nargs="+", metavar="CH", help="EEG channels, in model order")
    g.add_argument("--sfreq", type=float, help="model sampling rate in Hz")
    g.add_argument("--tmin", type=float, help="trial start after each event, seconds")
    g.add_argument("--tmax", type=float, help="trial end after each event, seconds")
    g.add_argument("--l-freq", type=float, help="band-pass low edge, Hz")
    g.add_argument("--h-freq", type=float, help="band-pass high edge, Hz")
    m = p.add_argument_group("manifest recordings")
    m.add_argument("--event-id", action="append", default=[], metavar="NAME=CODE",
                   help="class name for an event code or annotation description; repeat per class. "
                   "Required when a manifest row has no label: only the named events become classes")
    m.add_argument("--encoding", default=None, metavar="ENC", help="EDF+ annotation encoding, e.g. latin1")
    m.add_argument("--interpolate-missing", action="store_true",
                   help="interpolate channels a file lacks from a standard montage (default: refuse)")
    m.add_argument("--stride", type=float, default=None, metavar="SECONDS",
                   help="seconds between the windows of a file labelled as a whole; shorter than the "
                   "window overlaps them (default: the window length, no overlap)")
    add_common(p)
    p.set_defaults(func=run, parser=p)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = {"channels": args.channels, "sfreq": args.sfreq, "tmin": args.tmin, "tmax": args.tmax,
            "l_freq": args.l_freq, "h_freq": args.h_freq}
    return {k: v for k, v in keys.items() if v is not None}


def run(args: argparse.Namespace) -> int:
    from ..training import distributed

    try:
        return _run(args)
    finally:
        distributed.teardown()


def _run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    from ..errors import EEGTransferError
    from ..training import distributed
    from .utils import check_stride, quiet_down, show_progress

    check_stride(args)
    if args.nproc < 1:
        raise EEGTransferError(f"--nproc must be >= 1, got {args.nproc}")
    if distributed.launched_by_torchrun():
        world = int(os.environ["WORLD_SIZE"])
        if args.nproc not in (1, world):
            raise EEGTransferError(f"--nproc {args.nproc} but torchrun started {world} processes")
        if int(os.environ.get("RANK", "0")) != 0:  # rank 0 speaks for all
            args.quiet, args.json = True, False
    quiet_down(args)
    from ..bundle import check_output_path
    from ..models import check_model_name

    model = check_model_name(args.model)
    out = Path(args.out)
    if args.epochs < 1:
        raise EEGTransferError(f"--epochs must be >= 1, got {args.epochs}")
    check_output_path(out, overwrite=args.overwrite, what="--out")
    if args.checkpoint and not Path(args.checkpoint).absolute().parent.is_dir():
        raise EEGTransferError(f"--checkpoint {args.checkpoint}: its folder "
                               f"{Path(args.checkpoint).absolute().parent} does not exist; create it first")
    if args.manifest and (args.paradigm or args.subjects):
        raise EEGTransferError("--paradigm and --subjects go with --dataset, not --manifest")
    if args.report:
        from ..report import check_report_path

        check_report_path(args.report, overwrite=args.overwrite, protect=[out])
    if args.nproc > 1 and not distributed.launched_by_torchrun():
        return _relaunch(args)  # the checks above are made once, here, before any process starts

    if args.dataset:
        X, meta, recipe, prov = _from_dataset(args)
    else:
        X, meta, recipe, prov = _from_manifest(args)
    load_s = time.perf_counter() - t0
    labels = meta["label"].astype(str).to_numpy()

    from ..training.engine import resolve_device
    from ..training.pretraining import pretrain

    distributed.setup(args.device)  # before resolving it: under torchrun, cuda is this process's GPU
    device = resolve_device(args.device)
    bundle = pretrain(X, labels, meta, recipe, model=model, epochs=args.epochs, device=str(device),
                      seed=args.seed, progress=show_progress(args), provenance=prov,
                      checkpoint=args.checkpoint, compile=args.compile, align=args.align)
    if not distributed.is_main():
        return 0  # rank 0 writes the bundle and reports
    from ..bundle import write_file_atomic
    from ..report import command_line, render_html, validation_facts

    # Stored in the bundle, so that its report (and its patients') can say how each subject fared.
    bundle.provenance.update(validation=validation_facts(bundle, X, labels, meta), command=command_line())
    html = render_html(bundle.to_meta()) if args.report else None  # before saving: all or nothing
    refuse_chance_level(bundle, allow=args.allow_chance)
    bundle.save(out, overwrite=args.overwrite)
    if html is not None:
        write_file_atomic(args.report, html, overwrite=True)  # checked before training
    result = {
        "out": str(out), "model": model, "classes": bundle.classes, "channels": recipe.channels,
        "sfreq": recipe.sfreq, "n_trials": int(len(X)), "subjects": bundle.provenance["subjects"],
        "validation_subjects": bundle.provenance["validation_subjects"],
        "metrics": bundle.metrics, "device": str(device), "load_seconds": round(load_s, 3),
        "seconds": round(time.perf_counter() - t0, 3), "report": args.report,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"pretrained   {model} on {len(X)} trials from {len(result['subjects'])} subjects "
              f"({prov.get('dataset') or 'manifest'}) on {device} in {result['seconds']:.1f} s")
        print(f"classes      {', '.join(bundle.classes)}")
        print(f"channels     {len(recipe.channels)} @ {recipe.sfreq:g} Hz: {', '.join(recipe.channels)}")
        if "val_acc" in bundle.metrics:
            print(f"validation   accuracy {bundle.metrics['val_acc']:.3f} on subjects "
                  f"{', '.join(result['validation_subjects'])}")
        print(f"bundle       {out}")
        if args.report:
            print(f"report       {args.report}")
    return 0


def _relaunch(args: argparse.Namespace) -> int:
    """Run this command in ``--nproc`` processes on this machine, with torchrun's launcher.

    ``torch.distributed.run`` (what ``torchrun`` runs) is called in this process, as
    ``accelerate launch`` does, so that a process's one-line error and exit status come back
    as they are, not under the launcher's traceback. Each process sees torchrun's
    ``WORLD_SIZE`` and trains its share; rank 0 writes and prints. Without
    ``OMP_NUM_THREADS``, the CPUs are divided among the processes.
    """
    import sys

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from ..training.engine import available_cpus

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, available_cpus() // args.nproc)))
    launch = ["--nproc-per-node", str(args.nproc), "--standalone", "-m", "eegtransfer.cli", *child_argv(args)]
    logger.info("starting %d processes: torchrun %s", args.nproc, " ".join(launch))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its report of a failure
    try:
        torchrun.run(torchrun.parse_args(launch))
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        if failure.exitcode == 2:  # a bad input or setting: the process said why, in one line
            return 2
        print(f"eegtransfer pretrain: error: process {rank} of {args.nproc} failed with exit code "
              f"{failure.exitcode} (its messages are above)", file=sys.stderr)
        return 1
    except SignalException:
        raise KeyboardInterrupt from None
    return 0


def child_argv(args: argparse.Namespace) -> list[str]:
    """The parsed ``pretrain`` command line again, for the processes: full option names, no ``--nproc``.

    torchrun reads the whole command line it launches and stops at an abbreviation of one of its
    own options (``--nproc`` could be ``--nproc-per-node``), so options are spelled out in full,
    with their values as ``--option=value`` (lists excepted).
    """
    argv = ["pretrain"]
    for action in args.parser._actions:
        value = getattr(args, action.dest, None)
        if not action.option_strings or action.dest in ("help", "nproc") or value is None or value is False \
                or value == []:
            continue
        flag = max(action.option_strings, key=len)
        if value is True:
            argv.append(flag)
        elif action.nargs in ("+", "*"):
            argv += [flag, *map(str, value)]
        elif isinstance(value, list):  # an option given once per value (--event-id)
            argv += [f"{flag}={v}" for v in value]
        else:
            argv.append(f"{flag}={value}")
    return argv


def refuse_chance_level(bundle: Any, *, allow: bool) -> None:
    """Refuse a population whose validation accuracy is not above chance; flag it when allowed.

    The test (one-sided binomial, p < 0.05 against the validation chance level)
    is :func:`eegtransfer.training.pretraining.chance_test`, recorded in ``bundle.metrics``.
    """
    from ..errors import EEGTransferError

    m = bundle.metrics
    pval = m.get("val_above_chance_p")
    if pval is None or pval < 0.05:
        return
    if not allow:
        raise EEGTransferError(
            f"validation accuracy {m['val_acc']:.3f} is not above chance ({m['val_chance']:.3f} for "
            f"{len(bundle.classes)} classes; binomial p = {pval:.2g}); nothing written; pass "
            "allow_chance=True to write it anyway, flagged as chance level")
    bundle.provenance["chance_level"] = True
    logger.warning("writing a chance-level population (allow_chance=True): flagged chance_level in its provenance")


def _from_dataset(args: argparse.Namespace) -> tuple[Any, Any, Any, dict[str, Any]]:
    from ..errors import EEGTransferError
    from ..io.moabb import (
        check_subjects,
        dataset_name,
        dataset_provenance,
        default_recipe,
        get_dataset,
        load_dataset,
    )

    dataset = get_dataset(args.dataset)
    name = dataset_name(dataset)
    paradigm = getattr(dataset, "paradigm", None)
    if args.paradigm and str(args.paradigm).lower() != str(paradigm).lower():
        raise EEGTransferError(f"--paradigm {args.paradigm!r} does not match {name}, whose paradigm is {paradigm!r}")
    subjects = check_subjects(dataset, args.subjects or list(dataset.subject_list))
    recipe = default_recipe(dataset, **_overrides(args))
    X, meta, recipe = load_dataset(dataset, subjects, recipe)
    return X, meta, recipe, dataset_provenance(dataset)  # its event codes travel with the model


def _from_manifest(args: argparse.Namespace) -> tuple[Any, Any, Any, dict[str, Any]]:
    from ..io import parse_event_id, read_manifest, recipe_from_recording
    from ..workflows import load_recordings
    from .utils import show_progress

    df = read_manifest(args.manifest)
    entries = [dict(r) for r in df.to_dict("records")]
    user_id = parse_event_id(args.event_id)
    if not user_id:
        _refuse_unnamed_classes(args, entries)
    recipe = recipe_from_recording(entries[0]["path"], encoding=args.encoding, **_overrides(args))
    X, meta, recs = load_recordings(entries, recipe, classes=None, event_id=user_id, default_id=None,
                                    interpolate_missing=args.interpolate_missing, stride=args.stride,
                                    encoding=args.encoding, progress=show_progress(args))
    prov: dict[str, Any] = {"dataset": None, "manifest": str(Path(args.manifest).absolute()),
                            "recordings": [{"path": str(r.path.absolute()), "sha256": r.sha256}
                                           for r in recs]}
    if user_id:
        prov["event_id_user"] = user_id
    return X, meta, recipe, prov


def _refuse_unnamed_classes(args: argparse.Namespace, entries: list[dict[str, Any]]) -> None:
    """Without ``--event-id``, every manifest row must carry a ``label``.

    Otherwise each annotation or event code of a file would become a class
    ("Recording starts", "Impedance check" ...). The error shows what the
    first such file holds, with counts, so the classes can be named.
    """
    from collections import Counter

    from ..errors import EEGTransferError
    from ..io import find_events, read_raw

    unnamed = [e for e in entries if not e.get("label")]
    if not unnamed:
        return
    e = unnamed[0]
    raw = read_raw(e["path"], encoding=args.encoding)
    ev, ids, how = find_events(raw, events=e.get("events"), classes=None, source=str(e["path"]))
    names = {v: k for k, v in ids.items()}
    counts = dict(Counter(names[c] for c in ev[:, 2].tolist() if c in names))
    raise EEGTransferError(
        f"--manifest {args.manifest}: {len(unnamed)} recording(s) have no label, so their events "
        f"would all become classes: {e['path']} has {how} {counts}. Name the classes with "
        "--event-id NAME=CODE (repeat per class), or give each recording a label"
    )
