"""Helpers shared by the sub-commands, like ``mne/commands/utils.py``: options, checks, messages.

The library names Python parameters in its messages (``minutes=2``); :func:`to_flags` turns
them into this command line's flags in one place.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import Any

logger = logging.getLogger("eegtransfer")


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, unless the help already says it.

    Off switches (``False``) and options without a value (``None``) show none:
    "(default: None)" tells nothing; such options say what happens without them.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, False, argparse.SUPPRESS, []):
            return text
        return super()._get_help_string(action) or text


def add_common(p: argparse.ArgumentParser, *, device: bool = True, seed: bool = True) -> None:
    """Options that every training command shares."""
    if device:
        p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda or mps")
    if seed:
        p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress or log output")
    p.add_argument("--verbose", action="store_true", help="more log output")


def check_device_arg(args: argparse.Namespace) -> None:
    """Refuse a bad ``--device`` before any data is read."""
    if getattr(args, "device", None) is not None:
        from ..training.engine import resolve_device

        resolve_device(args.device)


# The library names Python parameters (``minutes=2``); the command line names its flags.
_SWITCHES = {"per_class=True": "--per-class", "overwrite=True": "--overwrite",
             "interpolate_missing=True": "--interpolate-missing", "allow_chance=True": "--allow-chance"}
_VALUED = ("minutes", "trials", "device", "strategy", "epochs", "seed", "model", "subjects", "stride",
           "encoding", "event_id", "events", "channels")


def strategy_help() -> str:
    """``--strategy`` help: the whole list, from the library (cheap: imports no torch)."""
    from ..adaptation import STRATEGIES

    return f"adaptation strategy, one of: {', '.join(STRATEGIES)}"


def check_stride(args: argparse.Namespace) -> None:
    """Refuse a ``--stride`` that is not a positive number of seconds, before any file is read."""
    from ..errors import EEGTransferError

    stride = getattr(args, "stride", None)
    if stride is not None and not stride > 0:
        raise EEGTransferError(f"--stride must be > 0 seconds, got {stride:g}")


def check_strategy(name: str) -> None:
    """Refuse an unknown ``--strategy`` before any data is read, suggesting close names."""
    from ..adaptation import STRATEGIES, parse_strategy
    from ..errors import EEGTransferError, close_names

    if name == "auto":
        return
    try:
        parse_strategy(name)
    except EEGTransferError as err:
        close = close_names(name, list(STRATEGIES))
        raise EEGTransferError(f"unknown strategy {name!r}; did you mean {close}? (one of "
                               f"{', '.join(STRATEGIES)})" if close else str(err)) from None


def to_flags(message: str) -> str:
    """A library message in command-line terms: ``minutes=2`` -> ``--minutes 2``."""
    for param, flag in _SWITCHES.items():
        message = message.replace(param, flag)
    return re.sub(r"\b(" + "|".join(_VALUED) + r")=\s?", lambda m: f"--{m.group(1).replace('_', '-')} ", message)


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
    p.add_argument("--stride", type=float, default=None, metavar="SECONDS",
                   help="seconds between the windows of a file labelled as a whole (manifest label) or "
                   "of a file without events; shorter than the window overlaps them (default: the "
                   "window length, no overlap)")
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
