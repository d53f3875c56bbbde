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
