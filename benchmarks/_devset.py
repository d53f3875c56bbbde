"""What the development-set scripts share: their command line and how parts are merged.

``dev_first_run.py`` and ``fusion_weights.py`` run the targets of ``--subjects`` (a range such as
``1-6``) into ``--out``, reusing the populations of ``--pop-cache``, or merge the CSVs of
finished parts (``--merge``); :func:`population` pretrains (or reloads) a target's population.
The nested scripts (``dev_nested.py`` and those built on its pairs) take ``--pairs``
(:func:`add_pair_arguments`, :func:`pair_indices`) and run them with :func:`run_pairs`;
:func:`rest_evidence` sets every CCA expert's say on ``rest`` for a block (``--rest-evidence``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from eegtransfer.bundle import Bundle


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """``--epochs`` and ``--patience`` of the pretraining: the protocol's ``PRETRAIN`` by default.

    Results made before ``PRETRAIN`` became 50 / 20 used 25 / 10.
    """
    from eegtransfer.evaluation.loso import PRETRAIN

    p.add_argument("--epochs", type=int, default=PRETRAIN["epochs"], help="maximum pretraining epochs")
    p.add_argument("--patience", type=int, default=PRETRAIN["patience"], help="pretraining patience")


def parsed_recipe(p: argparse.ArgumentParser, a: argparse.Namespace) -> dict[str, int]:
    """``{"epochs", "patience"}`` from :func:`add_recipe_arguments`' options; one-line error if under 1."""
    if a.epochs < 1 or a.patience < 1:
        p.error(f"--epochs and --patience must be at least 1, got {a.epochs} and {a.patience}")
    return {"epochs": a.epochs, "patience": a.patience}


def dev_arguments(description: str, argv: list[str] | None, *, pop_cache_help: str) -> argparse.Namespace:
    """Parse ``--subjects``, ``--out``, ``--pop-cache``, ``--merge``, ``--epochs`` and ``--patience``.

    ``targets`` lists the subjects; ``recipe`` holds the pretraining's epochs and patience
    (:func:`add_recipe_arguments`).
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--subjects", default="1-11")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pop-cache", type=Path, default=None, help=pop_cache_help + " (one folder per recipe)")
    p.add_argument("--merge", type=Path, nargs="+", help="folders of parts to merge into --out (nothing is run)")
    add_recipe_arguments(p)
    a = p.parse_args(argv)
    a.recipe = parsed_recipe(p, a)
    lo, _, hi = a.subjects.partition("-")
    a.targets = list(range(int(lo), int(hi or lo) + 1))
    return a


def merge_parts(folders: list[Path], csv_name: str, out: Path) -> pd.DataFrame:
    """The parts' ``csv_name`` files as one table, also written to ``out``."""
    df = pd.concat([pd.read_csv(f / csv_name, dtype={"window": str}) for f in folders], ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / csv_name, index=False)
    return df


def write_markdown(path: Path, text: str) -> None:
    """``text`` written to ``path`` atomically (its folder made) and printed."""
    from eegtransfer.bundle import write_file_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, text)
    print(text)


def subject_list(df: pd.DataFrame) -> str:
    """The subjects of a table, in order, for the command line a result file quotes."""
    return ",".join(sorted(df["subject"].astype(str).unique(), key=int))


def dev_data() -> tuple[dict[str, Any], pd.DataFrame, np.ndarray, np.ndarray]:
    """Kalunga2016 at the network's recipe (64 Hz), as the protocol loads it: ``(d, meta, X, labels)``."""
    from eegtransfer.evaluation.loso import load

    d = load("Kalunga2016", sfreq=64.0)
    return d, d["meta"], d["Xn"], d["meta"]["label"].astype(str).to_numpy()


def population(d: dict[str, Any], pop: np.ndarray, aligned: bool, target: int | str, cache: Path | None,
               seed: int = 0, recipe: dict[str, Any] | None = None) -> Bundle:
    """The population of the trials ``pop`` (every subject but ``target``), plain or aligned.

    Pretrained with ``seed`` and the protocol's recipe (``PRETRAIN``, updated with ``recipe``), or
    reloaded from ``cache`` (as ``{target}-plain``, ``{target}-aligned``, ``-seed{seed}`` added for
    another seed) with its CCA expert refitted by the current code; kept in ``cache`` when given.
    The names do not say the recipe: give each recipe its own cache folder.
    """
    from eegtransfer.adaptation.alignment import align_per_group
    from eegtransfer.bundle import Bundle
    from eegtransfer.evaluation.loso import PRETRAIN
    from eegtransfer.training.pretraining import population_cca, pretrain

    t0 = time.perf_counter()
    meta, X = d["meta"], d["Xn"]
    y = meta["label"].astype(str).to_numpy()
    name = f"{target}-{'aligned' if aligned else 'plain'}" + (f"-seed{seed}" if seed else "")
    cached = cache / name if cache else None
    if cached is not None and cached.exists():
        b = Bundle.load(cached)
        subjects = meta["subject"].astype(str).to_numpy()[pop]
        Xp = align_per_group(X[pop], subjects) if aligned else X[pop]
        b.cca = population_cca(Xp, y[pop], b.classes, d["net"], net=b.model, device="cpu",
                               val=np.isin(subjects, b.provenance["validation_subjects"]))
    else:
        b = pretrain(X[pop], y[pop], meta[pop], d["net"], align=aligned, device="cpu", seed=seed,
                     **{**PRETRAIN, **(recipe or {})})
        if cached is not None:
            b.save(cached)
    print(target, "aligned" if aligned else "plain", round(time.perf_counter() - t0), b.metrics.get("val_acc"),
          "expert weight", b.cca.fitted_weight_, "network weight", b.cca.fitted_net_weight_, flush=True)
    return b


def add_pair_arguments(p: argparse.ArgumentParser, *, pop_cache_help: str) -> None:
    """``--pairs``, ``--out``, ``--pop-cache`` and ``--merge`` of the nested scripts (pairs of subjects)."""
    p.add_argument("--pairs", default="0-54", help="range of pair indices (55 pairs of 11 subjects), such as 0-27")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pop-cache", type=Path, default=None, help=pop_cache_help)
    p.add_argument("--merge", type=Path, nargs="+", help="folders of parts to merge into --out (nothing is run)")


def pair_indices(p: argparse.ArgumentParser, spec: str, n_pairs: int) -> range:
    """The indices ``--pairs`` names (``"3"`` or ``"0-27"``); a one-line error outside 0 to ``n_pairs - 1``."""
    lo, _, hi = spec.partition("-")
    try:
        first, last = int(lo), int(hi or lo)
    except ValueError:
        p.error(f"--pairs {spec}: give a pair index or a range such as 0-27")
    if not 0 <= first <= last < n_pairs:
        p.error(f"--pairs {spec}: pairs are numbered 0 to {n_pairs - 1}")
    return range(first, last + 1)


def run_pairs(indices: range, pairs: list[tuple[int, int]], rows_of: Callable[[int, tuple[int, int]], list[dict]],
              out: Path, csv_name: str) -> pd.DataFrame:
    """``rows_of(i, pairs[i])`` for every index, timed; ``out / csv_name`` rewritten after each pair,
    so that a stopped run keeps the pairs it finished."""
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for i in indices:
        t0 = time.perf_counter()
        rows += rows_of(i, pairs[i])
        print(i, pairs[i], round(time.perf_counter() - t0), "s", flush=True)
        pd.DataFrame(rows).to_csv(out / csv_name, index=False)
    return pd.DataFrame(rows)


def both_ways(i: int, pair: tuple[int, int], pretraining: str, rows_for: Callable[[int], list[dict]]) -> list[dict]:
    """The rows of a pair's two validation subjects, each with the other as ``partner`` (the target
    whose development set it is), from ``rows_for(subject)``."""
    return [{"pair": i, "subject": subject, "partner": partner, **r, "pretraining": pretraining}
            for subject, partner in (pair, pair[::-1]) for r in rows_for(subject)]


def share(value: str) -> float:
    """An argparse type: a share between 0 and 1 (``--rest-evidence``)."""
    x = float(value)
    if not 0 <= x <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return x


@contextmanager
def rest_evidence(value: float | None) -> Iterator[None]:
    """Inside the block every CCA expert keeps ``value`` of its say on ``rest`` (``None``: its own).

    ``CCAExpert.log_proba`` runs with the expert's ``rest_evidence`` set to ``value``; it is
    restored afterwards, whatever happens.
    """
    from eegtransfer import ssvep

    if value is None:
        yield
        return
    own = ssvep.CCAExpert.log_proba

    def log_proba(self: ssvep.CCAExpert, X: np.ndarray) -> np.ndarray:
        kept, self.rest_evidence = self.rest_evidence, value
        try:
            return own(self, X)
        finally:
            self.rest_evidence = kept

    ssvep.CCAExpert.log_proba = log_proba
    try:
        yield
    finally:
        ssvep.CCAExpert.log_proba = own
