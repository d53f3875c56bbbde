"""A self-contained HTML report of one calibration.

One file, no external resources: plots are PNGs (matplotlib, Agg backend)
embedded as base64, so the report can be mailed or archived with the
patient's record and opens anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from typing import Any

logger = logging.getLogger("eegtransfer")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:60em;margin:2em auto;
color:#222;padding:0 1em}h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}.big{font-size:1.3em;font-weight:600}.note{background:#fff6d6;padding:.5em;border-left:4px solid #e0b000}
code{font-size:.9em;word-break:break-all}img{max-width:100%}
"""


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def confusion_png(confusion: list[list[int]], classes: list[str]) -> str:
    """Confusion matrix (rows true, columns predicted) as a base64 PNG data URI."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.asarray(confusion, dtype=int)
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(classes), 1.0 + 0.8 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("held-out confusion matrix")
    return _png(fig)


def curve_png(epochs: list[dict[str, float]], best_epoch: int | None = None) -> str:
    """Training curve (loss and accuracy per epoch) as a base64 PNG data URI."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.2))
    x = [e["epoch"] for e in epochs]
    for key, ax in (("loss", a1), ("acc", a2)):
        for split in ("train", "val"):
            ys = [e.get(f"{split}_{key}") for e in epochs]
            if any(y is not None for y in ys):
                ax.plot(x, [math.nan if y is None else y for y in ys], label=split)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", ls=":", label="kept")
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy" if key == "loss" else "accuracy")
        ax.legend()
    fig.suptitle("adaptation training curve")
    return _png(fig)


def _fmt(v: Any) -> str:
    if v is None:
        return "unavailable"
    if isinstance(v, float):
        return "unavailable" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def _table(rows: list[tuple[str, Any]]) -> str:
    return "<table>" + "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows
    ) + "</table>"


def render_calibration_report(result: dict[str, Any], *, heldout: dict[str, Any] | None,
                              history: dict[str, Any] | None,
                              calibration_counts: dict[str, int],
                              recordings: list[dict[str, Any]]) -> str:
    """The calibration report as one HTML document.

    Parameters
    ----------
    result : dict
        What ``eegtransfer calibrate --json`` prints (accuracies, trials,
        minutes, classes, strategy, device, seconds, out, channels ...).
    heldout : dict | None
        :func:`eegtransfer.evaluation.scores` on the held-out trials
        (``confusion`` n_classes x n_classes, ``classes``, ``counts``), or
        ``None`` when nothing was left to test.
    history : dict | None
        The patient bundle's training history: ``epochs``, a list of dicts
        with ``epoch, train_loss, train_acc[, val_loss, val_acc]``, or, for a
        full-batch head fit, ``solver, iterations, loss``.
    calibration_counts : dict of str to int
        Calibration trials per class.
    recordings : list of dict
        Per file: path, sha256, n_trials, n_bad_dropped, sfreq, events_from,
        renamed, dropped, interpolated.

    Returns
    -------
    html : str
    """
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>eegtransfer calibration "
             f"report</title><style>{_CSS}</style></head><body>",
             "<h1>eegtransfer calibration report</h1>"]
    acc, bacc = result.get("heldout_accuracy"), result.get("heldout_balanced_accuracy")
    if heldout is None:
        parts.append("<p class='big'>Held-out accuracy: unavailable (every trial was used for "
                     "calibration)</p>")
    else:
        parts.append(f"<p class='big'>Held-out accuracy {_fmt(acc)} &middot; balanced accuracy "
                     f"{_fmt(bacc)} &middot; {heldout['n']} held-out trials</p>")
    if result.get("note"):
        parts.append(f"<p class='note'>{esc(str(result['note']))}</p>")
    parts.append("<h2>Summary</h2>")
    parts.append(_table([
        ("population bundle", result.get("model")),
        ("patient bundle", result.get("out")),
        ("strategy", result.get("strategy")),
        ("new head", result.get("new_head")),
        ("guard", result.get("guard")),
        ("classes", ", ".join(result.get("classes", []))),
        ("calibration trials", result.get("n_calibration_trials")),
        ("calibration minutes", result.get("calibration_minutes")),
        ("calibration selection", result.get("selection")),
        ("held-out trials", result.get("n_heldout_trials")),
        ("trials dropped (overlap a BAD annotation)", result.get("n_bad_dropped", 0)),
        ("device", result.get("device")),
        ("time taken (s)", result.get("seconds")),
    ]))
    classes = list(result.get("classes", []))
    held_counts = (heldout or {}).get("counts", {})
    names = classes + [c for c in held_counts if c not in classes]
    parts.append("<h2>Trials per class</h2><table><tr><th>class</th><th>calibration</th>"
                 "<th>held-out</th></tr>" + "".join(
                     f"<tr><td>{esc(c)}</td><td>{calibration_counts.get(c, 0)}</td>"
                     f"<td>{held_counts.get(c, 0) if heldout else '-'}</td></tr>" for c in names)
                 + "</table>")
    if heldout is not None and heldout.get("n"):
        parts.append("<h2>Confusion matrix (held-out)</h2>")
        parts.append(f"<img alt='confusion matrix' src='{confusion_png(heldout['confusion'], heldout['classes'])}'>")
    epochs = (history or {}).get("epochs") or []
    parts.append("<h2>Training curve</h2>")
    if epochs:
        parts.append(f"<img alt='training curve' src='{curve_png(epochs, (history or {}).get('best_epoch'))}'>")
        parts.append(f"<p>{len(epochs)} epochs, kept epoch {esc(str((history or {}).get('best_epoch')))}"
                     + (", stopped early" if (history or {}).get("stopped_early") else "") + ".</p>")
    elif history and history.get("iterations") is not None:
        # A closed-form-like solver (e.g. L-BFGS on the head) has no epochs to plot.
        parts.append(f"<p>No epoch-by-epoch curve: the head was fitted with "
                     f"{esc(str(history.get('solver', 'a full-batch solver')).upper())} in "
                     f"{esc(str(history.get('iterations')))} iterations, final objective "
                     f"{_fmt(history.get('loss'))}.</p>")
    else:
        parts.append("<p>No training curve (nothing was trained for this strategy).</p>")
    parts.append("<h2>Channels</h2>")
    parts.append(_table([
        ("used (model order)", ", ".join(result.get("channels", []))),
        ("interpolated", ", ".join(result.get("interpolated", [])) or "none"),
    ]))
    parts.append("<h2>Recordings</h2><table><tr><th>file</th><th>trials</th><th>BAD dropped</th>"
                 "<th>Hz</th><th>events from</th><th>renamed</th><th>dropped</th><th>interpolated</th>"
                 "<th>SHA-256</th></tr>")
    for r in recordings:
        parts.append(
            f"<tr><td><code>{esc(str(r.get('path')))}</code></td><td>{r.get('n_trials')}</td>"
            f"<td>{r.get('n_bad_dropped', 0)}</td>"
            f"<td>{_fmt(r.get('sfreq'))}</td><td>{esc(str(r.get('events_from')))}</td>"
            f"<td>{esc(json.dumps(r.get('renamed') or {}))}</td>"
            f"<td>{esc(', '.join(r.get('dropped') or []) or '-')}</td>"
            f"<td>{esc(', '.join(r.get('interpolated') or []) or '-')}</td>"
            f"<td><code>{esc(str(r.get('sha256')))}</code></td></tr>")
    parts.append("</table>")
    parts.append(f"<p style='color:#888'>eegtransfer {esc(str(result.get('version', '')))}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
