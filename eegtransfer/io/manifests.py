"""Manifests: a CSV that lists recordings, for pretraining or calibrating on many files.

Columns ``path, subject, session`` and either ``events`` (an events file per
recording, read by :func:`eegtransfer.io.events.find_events`) or ``label``
(the whole file is one class). Each row then goes through
:func:`eegtransfer.io.recordings.load_recording`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataNotFoundError, EEGTransferError
from .reading import read_table

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a CSV that lists recordings.

    Columns ``path, subject, session`` and either ``events`` (an events file
    per recording, see :func:`find_events`; may be empty to use the file's
    own annotations or stim channel) or ``label`` (the whole file is one
    class). Relative paths resolve against the manifest's folder.

    Returns
    -------
    manifest : pandas.DataFrame
        Columns ``path`` (absolute), ``subject``, ``session``, ``events``
        (path or None) and ``label`` (str or None), one row per recording.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: no such manifest file")
    df = read_table(path, "manifest")
    need = {"path", "subject", "session"}
    if not need <= set(df.columns) or not ({"events", "label"} & set(df.columns)):
        raise EEGTransferError(
            f"{path}: a manifest needs columns path, subject, session and events or label; "
            f"found {list(df.columns)}"
        )
    if len(df) == 0:
        raise EEGTransferError(f"{path}: the manifest lists no recordings")
    short = np.where(df.isna().any(axis=1).to_numpy())[0]
    if len(short):  # a missing field would read as the text 'nan'
        raise EEGTransferError(f"{path}: row(s) {(short + 2).tolist()[:10]} have fewer fields than "
                               f"the header {list(df.columns)}")
    base = path.resolve().parent

    def resolve(p: str) -> str | None:
        p = str(p).strip()
        if not p:
            return None
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else base / q)

    rows = []
    for i, r in df.iterrows():
        file = resolve(r["path"])
        if file is None:
            raise EEGTransferError(f"{path}: row {i + 2} has an empty path")
        ev = resolve(r["events"]) if "events" in df.columns else None
        lab = str(r["label"]).strip() if "label" in df.columns else ""
        if ev and lab:
            raise EEGTransferError(f"{path}: row {i + 2} has both events and label; give one")
        rows.append({"path": file, "subject": str(r["subject"]).strip() or "patient",
                     "session": str(r["session"]).strip() or "0", "events": ev, "label": lab or None})
    return pd.DataFrame(rows)
