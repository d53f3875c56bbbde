"""What the development-set scripts share: their command line and how parts are merged.

``dev_first_run.py`` and ``fusion_weights.py`` run the targets of ``--subjects`` (a range such as
``1-6``) into ``--out``, reusing the populations of ``--pop-cache``, or merge the CSVs of
finished parts (``--merge``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def dev_arguments(description: str, argv: list[str] | None, *, pop_cache_help: str) -> argparse.Namespace:
    """Parse ``--subjects``, ``--out``, ``--pop-cache`` and ``--merge``; ``targets`` lists the subjects."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--subjects", default="1-11")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pop-cache", type=Path, default=None, help=pop_cache_help)
    p.add_argument("--merge", type=Path, nargs="+", help="folders of parts to merge into --out (nothing is run)")
    a = p.parse_args(argv)
    lo, _, hi = a.subjects.partition("-")
    a.targets = list(range(int(lo), int(hi or lo) + 1))
    return a


def merge_parts(folders: list[Path], csv_name: str, out: Path) -> pd.DataFrame:
    """The parts' ``csv_name`` files as one table, also written to ``out``."""
    df = pd.concat([pd.read_csv(f / csv_name, dtype={"window": str}) for f in folders], ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / csv_name, index=False)
    return df


def subject_list(df: pd.DataFrame) -> str:
    """The subjects of a table, in order, for the command line a result file quotes."""
    return ",".join(sorted(df["subject"].astype(str).unique(), key=int))
