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
    p.add_argument("--strategy", default="auto", help=strategy_help())
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
    data = load(args)
    pop, patient, result = pretrain_and_adapt(args, model, data)
    pop_dir, subj_dir = "population", f"subject-{args.subject:02d}"

    def write(tmp: Path) -> None:
        pop.save(tmp / pop_dir)
        patient.provenance["parent"] = str(out / pop_dir)
        patient.save(tmp / subj_dir)

    write_dir_atomic(out, write, overwrite=args.overwrite)
    result.update(population_bundle=str(out / pop_dir), subject_bundle=str(out / subj_dir))
    print(json.dumps(result) if args.json else text(result, patient.adaptation.note))
    return 0


def load(args: argparse.Namespace) -> dict:
    """The target subject (checked to have a later run, before any pretraining) and its population."""
    from ..evaluation import population_for
    from ..evaluation.protocol import split_target
    from ..io.moabb import check_subjects, dataset_name, get_dataset, load_dataset

    t0 = time.perf_counter()
    dataset = get_dataset(args.dataset)
    check_subjects(dataset, [args.subject])
    Xt, mt, recipe = load_dataset(dataset, [args.subject])  # known duplicated runs removed
    first, test = split_target(mt)  # the protocol's split: first run calibrates, later runs test
    Xp, mp, _ = load_dataset(dataset, population_for(args.subject, dataset.subject_list), recipe,
                             on_missing="skip")
    return {"name": dataset_name(dataset), "paradigm": dataset.paradigm, "Xt": Xt, "mt": mt, "Xp": Xp, "mp": mp,
            "recipe": recipe, "cal": first, "test": test, "load_seconds": time.perf_counter() - t0}


def pretrain_and_adapt(args: argparse.Namespace, model: str, d: dict) -> tuple:
    """Pretrain on the population, adapt on the first run, score both on the later runs."""
    from ..adaptation import adapt
    from ..evaluation import score_bundle
    from ..training import pretrain, resolve_device

    device = resolve_device(args.device)
    Xt, mt, cal, test = d["Xt"], d["mt"], d["cal"], d["test"]
    t0 = time.perf_counter()
    pop = pretrain(d["Xp"], d["mp"]["label"].to_numpy(), d["mp"], d["recipe"], model=model, epochs=args.epochs,
                   device=str(device), seed=args.seed, progress=not args.quiet,
                   provenance={"dataset": d["name"], "paradigm": d["paradigm"]})
    pretrain_s = time.perf_counter() - t0
    y = mt["label"].astype(str).to_numpy()
    cal_minutes = float(mt.loc[cal, "recording_seconds"].iloc[0]) / 60
    zero = score_bundle(pop, Xt[test], y[test])
    t0 = time.perf_counter()
    patient = adapt(pop, Xt[cal], y[cal], strategy=args.strategy, device=str(device), seed=args.seed,
                    calibration={"dataset": d["name"], "subject": args.subject, "calibration": "first run",
                                 "calibration_minutes": round(cal_minutes, 3)})
    adapt_s = time.perf_counter() - t0
    adapted = score_bundle(patient, Xt[test], y[test])
    patient.metrics.update(test_accuracy=adapted["accuracy"], zero_shot_test_accuracy=zero["accuracy"],
                           test_balanced_accuracy=adapted["balanced_accuracy"])
    patient.provenance.update(subjects=[str(args.subject)])
    pop.metrics.update({f"subject_{args.subject}_zero_shot_accuracy": zero["accuracy"]})
    a = patient.adaptation
    return pop, patient, {
        "dataset": d["name"], "subject": args.subject, "model": model, "strategy": args.strategy,
        "zero_shot_accuracy": zero["accuracy"], "adapted_accuracy": adapted["accuracy"],
        "adapted_balanced_accuracy": adapted["balanced_accuracy"],
        "n_population_subjects": len(pop.provenance["subjects"]), "n_calibration_trials": int(cal.sum()),
        "n_test_trials": int(test.sum()), "calibration_minutes": round(cal_minutes, 3), "device": str(device),
        "load_seconds": round(d["load_seconds"], 3), "pretrain_seconds": round(pretrain_s, 3),
        "adapt_seconds": round(adapt_s, 3),
        "guard": a.guard.kept if a.guard else f"not applied: {a.guard_skipped}",
    }


def text(r: dict, note: str) -> str:
    """The human-readable summary."""
    return "\n".join([
        f"dataset      {r['dataset']}, target subject {r['subject']}, model {r['model']}, device {r['device']}",
        f"population   {r['n_population_subjects']} subjects, pretrained in {r['pretrain_seconds']:.1f} s",
        f"calibration  first run: {r['n_calibration_trials']} trials, {r['calibration_minutes']:.2f} min, "
        f"strategy {r['strategy']}, adapted in {r['adapt_seconds']:.2f} s",
        f"test         {r['n_test_trials']} trials from later runs",
        f"zero-shot accuracy  {r['zero_shot_accuracy']:.3f}",
        f"adapted accuracy    {r['adapted_accuracy']:.3f}" + (f"  ({note})" if note else ""),
        f"bundles      {r['population_bundle']}  {r['subject_bundle']}",
    ])
