"""``eegtransfer report``: the trust report of any bundle, from its ``bundle.json``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .utils import add_common


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write the HTML report of a patient or population bundle",
        description=("Write a self-contained HTML report of a bundle: a verdict against chance, warnings "
                     "with their severity, then the evidence (scores, confusion matrix, calibration, "
                     "training curves, channels, recordings, provenance). It is made from what the bundle "
                     "stores; what it does not store is said to be unavailable."),
    )
    p.add_argument("bundle", metavar="BUNDLE", help="a patient or population bundle folder")
    p.add_argument("--out", metavar="PATH", help="report file to write (default: BUNDLE.html beside the folder)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    add_common(p, device=False, seed=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bundle import read_meta
    from ..report import check_report_path, findings, verdict, write_report

    bundle = Path(args.bundle)
    meta = read_meta(bundle)  # no torch: the report needs only bundle.json
    out = Path(args.out) if args.out else bundle.absolute().with_name(bundle.absolute().name + ".html")
    check_report_path(out, overwrite=args.overwrite, protect=[bundle], what="--out")
    write_report(meta, out, overwrite=args.overwrite)
    headline, sentence = verdict(meta)
    items = findings(meta)
    if args.json:
        print(json.dumps({"out": str(out), "verdict": headline, "summary": sentence,
                          "warnings": [{"severity": f.severity, "title": f.title} for f in items]}))
        return 0
    print(f"verdict      {headline}: {sentence}")
    for f in items:
        print(f"{f.severity:<12} {f.title}")
    print(f"report       {out}")
    return 0
