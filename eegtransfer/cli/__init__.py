"""The ``eegtransfer`` command line. The only module that knows about it.

Each sub-command lives in its own module with ``add_parser(subparsers)`` and
``run(args) -> int``. Heavy packages (torch, braindecode, MOABB) are imported
inside ``run`` only, so ``--help`` and ``info`` start in well under a second.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

COMMANDS = ("demo", "pretrain", "calibrate", "predict", "info", "report", "benchmark")


class _VersionAction(argparse.Action):
    """``--version``: eegtransfer, torch/CUDA, braindecode, MNE, MOABB and the ``auto`` device."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the versions of eegtransfer and its stack, and the device 'auto' picks")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from ..sysinfo import check_stack, version_text

        problem = check_stack()
        if problem:
            parser.exit(1, f"eegtransfer: {problem}\n")
        print(version_text())
        parser.exit(0)


def _broken_command(sub: argparse._SubParsersAction, name: str, err: Exception) -> None:
    """A sub-command whose module does not import: say so, rather than hide it."""
    reason = f"{type(err).__name__}: {err}".splitlines()[0]
    # No option prefix: whatever options follow are swallowed, and the reason is printed instead.
    p = sub.add_parser(name, help=f"(unavailable: {reason})", add_help=False, prefix_chars="\x00")
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def run(args: argparse.Namespace) -> int:
        print(f"eegtransfer {name}: cannot start: {reason} (check the install: eegtransfer --version)",
              file=sys.stderr)
        return 1

    p.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    from .utils import DefaultsFormatter

    parser = argparse.ArgumentParser(
        prog="eegtransfer",
        description="Pretrain a braindecode EEG decoder on a population and adapt it to one patient.",
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # One place gives every sub-command's help its defaults.
    add = sub.add_parser
    sub.add_parser = lambda *a, **kw: add(*a, **{"formatter_class": DefaultsFormatter, **kw})  # type: ignore[method-assign]
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except Exception as err:  # noqa: BLE001 - shown to the user, never hidden
            _broken_command(sub, name, err)
            continue
        mod.add_parser(sub)
    return parser


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    log = logging.getLogger("eegtransfer")
    log.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    # Library chatter (MNE, braindecode deprecations) is not for the operator.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*n_times.*smaller than the minimum.*")
    logging.getLogger("mne").setLevel(logging.ERROR)
    logging.getLogger("moabb").setLevel(logging.ERROR)
    logging.getLogger("pooch").setLevel(logging.ERROR)  # its "Downloading ..." precedes our offline message


def main(argv: list[str] | None = None) -> int:
    import os

    # Spinning OpenMP threads starve each other on a busy small machine (measured
    # 30x slower per step at load 8 on 2 cores); passive waiting costs nothing idle.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ..errors import EEGTransferError
    from .utils import check_device_arg, to_flags

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    setup_logging(getattr(args, "quiet", False), getattr(args, "verbose", False))
    try:
        check_device_arg(args)
        return int(args.func(args) or 0)
    except EEGTransferError as err:
        print(f"eegtransfer {args.command}: error: {to_flags(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"eegtransfer {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
