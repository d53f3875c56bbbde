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


def one_line(text: object) -> str:
    """The first non-blank line of ``text`` (e.g. a third-party error), stripped.

    Messages quote other libraries' errors through this, so the command line
    still prints them on one line.
    """
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[0] if lines else ""
