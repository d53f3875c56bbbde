"""How much each subject's SSVEP responses change between its first run and its later runs.

Per subject and class: the mean first canonical correlation (plain CCA, the trials at the
network's recipe, as the expert's first band sees them) with the references of the class's own
frequency, on the first run and on the later runs; for ``rest``, the highest over the
frequencies. A stimulated class whose later-run correlation falls to the level of ``rest``
looks like rest to any CCA-based decoder, and nothing in the calibration run shows it. Labels
are used, so this describes the data; it chooses nothing. ::

    python benchmarks/drift_diagnosis.py --out benchmarks/results/dev_rest_fit/drift.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _devset import dev_data, write_markdown  # noqa: E402


def table() -> pd.DataFrame:
    """One row per subject: each class's correlation on the first and the later runs."""
    from eegtransfer.evaluation.protocol import split_target
    from eegtransfer.ssvep import cca_correlations, ssvep_frequencies

    d, meta, X, y = dev_data()
    classes = sorted(set(y.tolist()))
    freqs = ssvep_frequencies(classes)
    rho = cca_correlations(X, d["net"].sfreq, list(freqs.values()), max_freq=d["net"].h_freq)
    rows = []
    for subject in sorted(meta["subject"].astype(int).unique()):
        t = (meta["subject"].astype(int) == subject).to_numpy()
        first, later = split_target(meta[t].reset_index(drop=True))
        row: dict = {"subject": subject}
        for c in classes:
            own = rho[t][:, list(freqs).index(c)] if c in freqs else rho[t].max(axis=1)
            for name, mask in (("first", first), ("later", later)):
                row[f"{c} {name}"] = own[(y[t] == c) & mask].mean()
        rows.append(row)
    return pd.DataFrame(rows).round(3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="markdown file to write")
    a = p.parse_args(argv)
    df = table()
    text = ("# " + __doc__.splitlines()[0] + "\n\nCommand: `python benchmarks/drift_diagnosis.py --out "
            f"{a.out}`. Mean first canonical correlation per class (rest: the highest over the frequencies), "
            f"n = {len(df)} subjects, 32 trials a run.\n\n" + df.to_markdown(index=False) + "\n")
    write_markdown(a.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
