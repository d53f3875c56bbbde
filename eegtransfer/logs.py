"""``verbose=`` for the public functions that talk, with MNE's semantics.

``verbose=None`` leaves the ``eegtransfer`` logger as it is; ``True`` shows
information (``"INFO"``), ``False`` warnings only (``"WARNING"``); a level
name or number sets that level, for the call only.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
logger = logging.getLogger("eegtransfer")


def log_level(verbose: bool | str | int | None) -> int | None:
    """The :mod:`logging` level that ``verbose`` stands for (``None``: leave it)."""
    if verbose is None:
        return None
    if isinstance(verbose, bool):
        return logging.INFO if verbose else logging.WARNING
    if isinstance(verbose, int):
        return verbose
    level = logging.getLevelName(str(verbose).upper())
    if not isinstance(level, int):
        raise ValueError(f"verbose={verbose!r} is not a logging level (DEBUG, INFO, WARNING, ERROR)")
    return level


@contextmanager
def use_log_level(verbose: bool | str | int | None) -> Iterator[None]:
    """Set the ``eegtransfer`` logger's level inside the block, then restore it.

    A logger without a handler of its own (plain Python, not the command
    line) gets a stderr handler for the block: Python's last-resort handler
    would drop the information that ``verbose=True`` asked for.
    """
    level = log_level(verbose)
    if level is None:
        yield
        return
    old_level, handler = logger.level, None
    if not logger.handlers and level < logging.WARNING:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old_level)
        if handler is not None:
            logger.removeHandler(handler)


def verbose(func: F) -> F:
    """Decorator: the function's ``verbose=`` keyword sets the log level for the call."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with use_log_level(kwargs.get("verbose")):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
