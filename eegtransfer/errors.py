"""Errors that eegtransfer raises for bad input.

Every message names the file, channel or parameter at fault and, where it can,
says what to do. The command line prints them on one line.
"""

from __future__ import annotations


class EEGTransferError(ValueError):
    """Bad input: the message says what was expected and what was found."""


class DataNotFoundError(EEGTransferError, FileNotFoundError):
    """A dataset or file is missing and cannot be downloaded."""


class BundleError(EEGTransferError):
    """A bundle on disk is missing, altered, inconsistent or of a newer format."""


def check_number(what: str, value: object, *, positive: bool = False) -> float:
    """``value`` as a float when it is a real number ``>= 0`` (``> 0`` with ``positive``).

    Otherwise one line naming ``what``, the parameter as the user wrote it (``"TS(C=) (ts_C=)"``).
    """
    import numbers

    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and (value > 0 if positive else value >= 0)
    if not ok:
        raise EEGTransferError(f"{what} must be a number {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def one_line(text: object) -> str:
    """The first non-blank line of ``text`` (e.g. a third-party error), stripped.

    Messages quote other libraries' errors through this, so the command line
    still prints them on one line.
    """
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else ""


def close_names(name: str, known: list[str] | tuple[str, ...], n: int = 3) -> str:
    """Known names close to a mistyped ``name``, quoted and joined by "or" ("" when none).

    Case is ignored (``"kalunga2016"`` finds ``"Kalunga2016"``); a known name
    that starts with ``name`` counts as close (``"Kalunga"``).
    """
    import difflib

    lower = {str(k).lower(): str(k) for k in known}
    hits = difflib.get_close_matches(str(name).lower(), list(lower), n=n, cutoff=0.6)
    hits += [k for k in lower if k.startswith(str(name).lower()) and str(name) and k not in hits]
    return " or ".join(repr(lower[h]) for h in hits[:n])
