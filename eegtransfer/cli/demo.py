"""``eegtransfer demo``: the whole idea on real EEG (Kalunga2016 by default)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from .utils import add_common, check_strategy, strategy_help

logger = logging.getLogger("eegtransfer")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="pretrain on a population, adapt to one subject, score both",
        description=(
            "Load a MOABB dataset (Kalunga2016 SSVEP by default), pretrain a braindecode model on "
            "every subject but --subject, adapt its final layers to that subject's first run, and "
            "score zero-shot and adapted accuracy on the subject's later runs. Set MNE_DATA to a "
            "MOABB cache to run offline."
        ),
    )
    p.add_argument("--dataset", default="Kalunga2016", help="MOABB dataset class")
    p.add_argument("--subject", type=int, default=1, help="target subject")
    p.add_argument("--model", default="EEGNet", help="braindecode model")
    p.add_argument("--strategy", default="head", help=strategy_help())
    p.add_argument("--epochs", type=int, default=150, help="maximum pretraining epochs")
    p.add_argument("--out", default="eegtransfer-demo", help="output folder (its parent must exist)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bundle import check_output_path, write_dir_atomic
    from ..errors import EEGTransferError
    from ..models import check_model_name

    model = check_model_name(args.model)
    out = Path(args.out)
    check_output_path(out, overwrite=args.overwrite, what="--out")
    if args.epochs < 1:
        raise EEGTransferError(f"--epochs must be >= 1, got {args.epochs}")
    check_strategy(args.strategy)
    from ..adaptation import adapt
    from ..evaluation import population_for, score_bundle
    from ..io.moabb import check_subjects, dataset_name, get_dataset, load_dataset
    from ..training.engine import resolve_device
    from ..training.pretraining import pretrain

    device = resolve_device(args.device)
    dataset = get_dataset(args.dataset)
    name = dataset_name(dataset)
    check_subjects(dataset, [args.subject])
    population = population_for(args.subject, dataset.subject_list)
    t0 = time.perf_counter()
    Xt, mt, recipe = load_dataset(dataset, [args.subject])  # known duplicated runs removed
    runs = list(dict.fromkeys(zip(mt["session"], mt["run"])))
    if len(runs) < 2:  # checked before the minutes of pretraining, not after
        raise EEGTransferError(f"subject {args.subject} of {name} has one run; the demo needs a later run to test on")
    Xp, mp, _ = load_dataset(dataset, population, recipe, on_missing="skip")
    load_s = time.perf_counter() - t0
    logger.info("loaded %s: %d trials from %d subjects in %.1f s", name, len(Xt) + len(Xp),
                mp["subject"].nunique() + 1, load_s)

    t0 = time.perf_counter()
    pop = pretrain(Xp, mp["label"].to_numpy(), mp, recipe,
                   model=model, epochs=args.epochs, device=str(device), seed=args.seed,
                   progress=not args.quiet, provenance={"dataset": name, "paradigm": dataset.paradigm})
    pretrain_s = time.perf_counter() - t0

    cal = ((mt["session"] == runs[0][0]) & (mt["run"] == runs[0][1])).to_numpy()
    cal_minutes = float(mt.loc[cal, "recording_seconds"].iloc[0]) / 60
    zero = score_bundle(pop, Xt[~cal], mt["label"][~cal].to_numpy())
    t0 = time.perf_counter()
    patient = adapt(pop, Xt[cal], mt["label"][cal].to_numpy(), strategy=args.strategy,
                    device=str(device), seed=args.seed,
                    calibration={"dataset": name, "subject": args.subject,
                                 "calibration_runs": [f"session {runs[0][0]} run {runs[0][1]}"],
                                 "calibration_minutes": round(cal_minutes, 3)})
    adapt_s = time.perf_counter() - t0
    adapted = score_bundle(patient, Xt[~cal], mt["label"][~cal].to_numpy())
    patient.metrics.update(test_accuracy=adapted["accuracy"], zero_shot_test_accuracy=zero["accuracy"],
                           test_balanced_accuracy=adapted["balanced_accuracy"])
    patient.provenance.update(subjects=[str(args.subject)])
    pop.metrics.update({f"subject_{args.subject}_zero_shot_accuracy": zero["accuracy"]})

    pop_dir, subj_dir = "population", f"subject-{args.subject:02d}"

    def write(tmp: Path) -> None:
        pop.save(tmp / pop_dir)
        patient.provenance["parent"] = str(out / pop_dir)
        patient.save(tmp / subj_dir)

    write_dir_atomic(out, write, overwrite=args.overwrite)
    result = {
        "dataset": name,
        "subject": args.subject,
        "model": model,
        "strategy": args.strategy,
        "zero_shot_accuracy": zero["accuracy"],
        "adapted_accuracy": adapted["accuracy"],
        "adapted_balanced_accuracy": adapted["balanced_accuracy"],
        "n_population_subjects": len(pop.provenance["subjects"]),
        "n_calibration_trials": int(cal.sum()),
        "n_test_trials": int((~cal).sum()),
        "calibration_minutes": round(cal_minutes, 3),
        "device": str(device),
        "load_seconds": round(load_s, 3),
        "pretrain_seconds": round(pretrain_s, 3),
        "adapt_seconds": round(adapt_s, 3),
        "guard": (patient.adaptation.guard.kept if patient.adaptation.guard
                  else f"not applied: {patient.adaptation.guard_skipped}"),
        "population_bundle": str(out / pop_dir),
        "subject_bundle": str(out / subj_dir),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"dataset      {name}, target subject {args.subject}, model {model}, device {device}")
        print(f"population   {result['n_population_subjects']} subjects, pretrained in {pretrain_s:.1f} s")
        print(f"calibration  first run: {result['n_calibration_trials']} trials, {cal_minutes:.2f} min, "
              f"strategy {args.strategy}, adapted in {adapt_s:.2f} s")
        print(f"test         {result['n_test_trials']} trials from later runs")
        print(f"zero-shot accuracy  {zero['accuracy']:.3f}")
        print(f"adapted accuracy    {adapted['accuracy']:.3f}"
              + (f"  ({patient.adaptation.note})" if patient.adaptation.note else ""))
        print(f"bundles      {result['population_bundle']}  {result['subject_bundle']}")
    return 0
