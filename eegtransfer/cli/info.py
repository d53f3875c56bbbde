"""``eegtransfer info BUNDLE``: what a bundle holds, without loading torch."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show a bundle's model, channels, classes, recipe and provenance",
                       description="Show what a bundle holds. Reads bundle.json only (fast).")
    p.add_argument("bundle", help="bundle folder")
    p.add_argument("--json", action="store_true", help="print bundle.json's content as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bundle import read_meta, summarize

    meta = read_meta(args.bundle)
    if args.json:
        print(json.dumps(meta, indent=2))
    else:
        print(summarize(meta))
    return 0
