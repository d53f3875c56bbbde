"""A report that says whether to trust a bundle: verdict first, then warnings, then evidence.

The report is an :class:`mne.Report` (table of contents, sections, embedded
figures) rendered from a bundle's ``bundle.json`` alone, so
``eegtransfer calibrate --report``, ``eegtransfer pretrain --report`` and
``eegtransfer report BUNDLE`` show the same thing. What the bundle does not
store is said to be unavailable rather than guessed.

``eegtransfer calibrate`` stores the facts a report needs (held-out counts,
confusion matrix, probabilities summary, files, command line) in the patient
bundle's ``adaptation.calibration`` with :func:`calibration_facts`;
``eegtransfer pretrain`` stores each validation subject's score with
:func:`validation_facts`.

Examples
--------
>>> from eegtransfer.report import score_against_chance
>>> s = score_against_chance(30, 40, 0.25)
>>> round(s["ci_low"], 3), s["p_value"] < 1e-6
(0.598, True)
"""

from __future__ import annotations

import html
import math
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EEGTransferError

if TYPE_CHECKING:  # pragma: no cover
    import mne
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure

    from .bundle import Bundle

SEVERITIES = ("high", "medium", "low", "info")
_SOLVERS = {"lbfgs": "L-BFGS", "newton": "Newton's method (exact, on the span of the trunk features)"}
_BOOTSTRAP = {"high": "danger", "medium": "warning", "low": "info", "info": "secondary"}
#: Below this p-value a score counts as above chance (one-sided binomial test).
ALPHA = 0.05
#: Mean normalised entropy of the held-out probabilities above which they count as near-uniform.
UNIFORM_ENTROPY = 0.9


@dataclass(frozen=True)
class Finding:
    """One warning of the report.

    Attributes
    ----------
    severity : {"high", "medium", "low", "info"}
        ``high``: the result should not be trusted as it stands.
    title : str
        One short sentence.
    detail : str
        Why it matters and what to do.
    """

    severity: str
    title: str
    detail: str


# --- numbers ------------------------------------------------------------------------

def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n``.

    Parameters
    ----------
    k, n : int
        Successes and trials (``n > 0``).
    level : float
        Confidence level.

    Returns
    -------
    low, high : float
    """
    from scipy.stats import norm

    if n <= 0:
        raise ValueError("n must be > 0")
    z = float(norm.ppf(0.5 + level / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_p_value(k: int, n: int, chance: float) -> float:
    """One-sided binomial test: the probability of ``k`` or more correct out of ``n`` at ``chance``."""
    from scipy.stats import binom

    return float(binom.sf(k - 1, n, chance))


def score_against_chance(k: int, n: int, chance: float, level: float = 0.95) -> dict[str, float]:
    """Accuracy ``k / n``, its Wilson interval and the one-sided binomial p-value against ``chance``.

    Returns
    -------
    dict with ``accuracy``, ``ci_low``, ``ci_high``, ``chance``, ``p_value``, ``k``, ``n``, ``level``.
    """
    low, high = wilson_interval(k, n, level)
    return {"accuracy": k / n, "ci_low": low, "ci_high": high, "chance": float(chance),
            "p_value": binomial_p_value(k, n, chance), "k": int(k), "n": int(n), "level": level}


# --- human formatting -----------------------------------------------------------------

def fmt_p(p: float) -> str:
    """A p-value as people write it."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def fmt_seconds(s: float) -> str:
    """``32 s``, ``1.7 min``."""
    if s < 10:
        return f"{s:.2f} s"
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def fmt_list(items: Any, empty: str = "none") -> str:
    """Comma-separated, never a Python list."""
    items = [str(i) for i in (items or [])]
    return ", ".join(items) if items else empty


def fmt_value(v: Any) -> str:
    """Any stored value in words: no ``True``, ``{}`` or ``['a', 'b']``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "unavailable"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}" if abs(v) >= 1 else f"{v:.3f}"
    if isinstance(v, dict):
        return fmt_list([f"{k}: {fmt_value(x)}" for k, x in v.items()])
    if isinstance(v, list | tuple):
        return fmt_list([fmt_value(x) for x in v])
    return str(v)


def _table(rows: list[tuple[str, Any]], header: tuple[str, ...] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header) if header else ""
    body = "".join("<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(fmt_value(c))}"
                                     f"</{'th' if i == 0 else 'td'}>" for i, c in enumerate(row)) + "</tr>"
                   for row in rows)
    return (f"<div class='table-responsive'><table class='table table-sm w-auto'>"
            f"{'<tr>' + head + '</tr>' if head else ''}{body}</table></div>")


def command_line() -> str | None:
    """The ``eegtransfer ...`` command this process runs, or ``None`` when called from Python."""
    prog = Path(sys.argv[0]).name if sys.argv else ""
    if prog in ("eegtransfer", "__main__.py"):
        return shlex.join(["eegtransfer", *sys.argv[1:]])
    return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def fmt_date(iso: str | None) -> str | None:
    """``2025-01-31T10:00:00+00:00`` as ``2025-01-31 10:00 UTC``."""
    if not iso:
        return None
    try:
        when = datetime.fromisoformat(str(iso)).astimezone(UTC)
    except ValueError:
        return str(iso)
    return when.strftime("%Y-%m-%d %H:%M UTC")


# --- facts stored in bundles, so that a report can be made later from bundle.json alone ----

def probability_facts(proba: np.ndarray) -> dict[str, float]:
    """How sure the model is: mean top probability and mean entropy / log(n_classes) (1 = uniform)."""
    import numpy as np

    p = np.clip(np.asarray(proba, dtype=float), 1e-12, 1.0)
    ent = -(p * np.log(p)).sum(axis=1) / math.log(p.shape[1])
    return {"mean_top_probability": float(p.max(axis=1).mean()), "mean_normalised_entropy": float(ent.mean())}


def calibration_facts(patient: Bundle, X: np.ndarray, labels: np.ndarray, meta: pd.DataFrame,
                      cal: np.ndarray, *, held: dict[str, Any] | None, recordings: list[dict[str, Any]],
                      population: dict[str, Any], population_path: str | Path) -> dict[str, Any]:
    """What a calibration report needs, as JSON data for ``patient.adaptation.calibration``.

    Parameters
    ----------
    patient : Bundle
        The adapted bundle (its probabilities on the held-out trials are summarised).
    X, labels, meta : ndarray, ndarray, pandas.DataFrame
        Every trial read, their labels and metadata (``run`` is the file's position).
    cal : ndarray of bool
        The calibration trials; the others are held out.
    held : dict | None
        :func:`eegtransfer.evaluation.scores` on the held-out trials.
    recordings : list of dict
        :meth:`eegtransfer.io.Recording.summary` of each file, in order.
    population : dict
        The population's ``bundle.json``; population_path its folder.

    Returns
    -------
    dict
    """
    import numpy as np

    runs = meta["run"].astype(str).to_numpy()
    facts: dict[str, Any] = {
        "created": _now(), "command": command_line(),
        "subject": fmt_list(sorted(set(meta["subject"].astype(str)))),
        "calibration_counts": {c: int((labels[cal] == c).sum()) for c in sorted(set(labels[cal].tolist()))},
        "calibration_files": sorted({int(r) for r in runs[cal]}),
        "files": [{**r, "classes": {c: int((labels[runs == str(i)] == c).sum())
                                    for c in sorted(set(labels[runs == str(i)].tolist()))}}
                  for i, r in enumerate(recordings)],
        "population": {"path": str(Path(population_path).absolute()), "model": population["model"]["name"],
                       "metrics": population.get("metrics") or {}},
        "heldout": None,
    }
    if held is not None and held.get("n"):
        facts["heldout"] = {k: held[k] for k in ("n", "classes", "confusion", "counts", "accuracy",
                                                 "balanced_accuracy")}
        facts["heldout"]["correct"] = int(np.trace(np.asarray(held["confusion"])))
        facts["heldout"].update(probability_facts(patient.predict_proba(X[~cal])))
    return facts


def validation_facts(bundle: Bundle, X: np.ndarray, labels: np.ndarray, meta: pd.DataFrame) -> dict[str, Any]:
    """Each validation subject's accuracy with the population's kept weights.

    One forward pass over the validation trials (those of ``provenance["validation_subjects"]``),
    stored as ``provenance["validation"]``: ``{"subjects": {s: {"n", "correct", "accuracy"}},
    "counts": {class: n}}``. Empty when no subject was held out.
    """
    import numpy as np

    subjects = meta["subject"].astype(str).to_numpy()
    val = np.isin(subjects, [str(s) for s in bundle.provenance.get("validation_subjects", [])])
    if not val.any():
        return {}
    labels = np.asarray(labels).astype(str)
    if bundle.provenance.get("euclidean_alignment"):
        # Each subject whitened by its own trials, as in training; the network then reads them
        # directly (bundle.predict checks for the recipe's z-scoring, which whitening changes).
        from .adaptation.alignment import align_per_group
        from .training.engine import predict_logits

        logits = predict_logits(bundle.model, align_per_group(np.asarray(X[val]), subjects[val]))
        pred = np.asarray(bundle.classes)[logits.argmax(1)]
    else:
        pred = bundle.predict(X[val])
    out: dict[str, Any] = {"subjects": {}, "counts": {c: int((labels[val] == c).sum()) for c in bundle.classes}}
    for s in sorted(set(subjects[val].tolist())):
        m = subjects[val] == s
        k = int((pred[m] == labels[val][m]).sum())
        out["subjects"][s] = {"n": int(m.sum()), "correct": k, "accuracy": k / int(m.sum())}
    return out


# --- what the stored facts say ----------------------------------------------------------

def _calibration(meta: dict[str, Any]) -> dict[str, Any]:
    return dict((meta.get("adaptation") or {}).get("calibration") or {})


def heldout_score(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The patient's held-out accuracy against chance, or ``None`` when nothing was held out.

    Chance is the share of the most frequent held-out class (what always answering that class
    scores); a bundle made without the stored counts falls back to 1 / n_classes.
    """
    held = _calibration(meta).get("heldout")
    if held:
        n, k = int(held["n"]), int(held["correct"])
        chance = max(held["counts"].values()) / n
        return {**score_against_chance(k, n, chance), "balanced_accuracy": held.get("balanced_accuracy"),
                "balanced_chance": 1 / sum(1 for v in held["counts"].values() if v), "stored": True}
    acc, n = (meta.get("metrics") or {}).get("heldout_accuracy"), _calibration(meta).get("n_heldout_trials")
    if acc is None or not n:
        return None
    score = score_against_chance(round(acc * n), int(n), 1 / len(meta["classes"]))
    return {**score, "balanced_accuracy": (meta.get("metrics") or {}).get("heldout_balanced_accuracy"),
            "balanced_chance": 1 / len(meta["classes"]), "stored": False}


def validation_score(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The population's score on its validation subjects, against chance when counts are stored."""
    prov = meta.get("provenance") or {}
    val = prov.get("validation") or {}
    if val.get("subjects"):
        k = sum(s["correct"] for s in val["subjects"].values())
        n = sum(s["n"] for s in val["subjects"].values())
        return {**score_against_chance(k, n, max(val["counts"].values()) / n), "stored": True}
    metrics = (_calibration(meta).get("population") or {}).get("metrics") if meta.get("adaptation") \
        else meta.get("metrics")
    acc = (metrics or {}).get("val_acc")
    if acc is None:
        return None
    return {"accuracy": float(acc), "chance": 1 / len(meta["classes"]), "stored": False}


def _few_trials(score: dict[str, Any], what: str) -> Finding:
    return Finding("medium", f"Few {what} trials ({score['n']})",
                   f"The 95% confidence interval, {score['ci_low']:.1%} to {score['ci_high']:.1%}, is wide: "
                   "score more trials before relying on the number.")


def _verdict_findings(score: dict[str, Any] | None, what: str) -> list[Finding]:
    if score is None:
        return [Finding("high", f"No {what} score",
                        "Nothing in this bundle was scored on data it was not fitted on, so nothing here "
                        "shows that it works. Hold trials out (--minutes or --trials) and score them.")]
    if "p_value" in score and score["p_value"] >= ALPHA:
        return [Finding("high", f"The {what} accuracy is not above chance",
                        f"{score['accuracy']:.1%} on {score['n']} trials against a chance level of "
                        f"{score['chance']:.1%} ({fmt_p(score['p_value'])}, one-sided binomial test). "
                        "Do not use this model for this person as it stands.")]
    out = []
    if "p_value" in score and score["n"] < 30:
        out.append(_few_trials(score, what))
    if "p_value" not in score and score["accuracy"] - score["chance"] < 0.05:
        out.append(Finding("high", f"The {what} accuracy is at chance",
                           f"{score['accuracy']:.1%} against {score['chance']:.1%} for {what} data."))
    return out


def _population_findings(meta: dict[str, Any]) -> list[Finding]:
    score = validation_score(meta)
    if score is None:
        return [Finding("medium", "The population's validation score is unavailable",
                        "The bundle stores no validation accuracy, so its quality is unknown.")]
    gap = score["accuracy"] - score["chance"]
    weak = score.get("p_value", 0.0) >= ALPHA or gap < 0.05
    if weak or gap < 0.15:
        return [Finding("high" if weak else "medium",
                        f"The population model is {'at' if weak else 'near'} chance on its validation subjects",
                        f"{score['accuracy']:.1%} against a chance level of {score['chance']:.1%}"
                        + (f" ({fmt_p(score['p_value'])})" if "p_value" in score else "")
                        + ". Adaptation starts from a model that barely learnt the task; pretrain longer "
                        "or on more subjects.")]
    return []


def _guard_finding(adaptation: dict[str, Any]) -> Finding | None:
    guard, skipped = adaptation.get("guard"), adaptation.get("guard_skipped") or ""
    if guard and adaptation.get("strategy") == "auto":
        # auto's winner is kept whatever; the report says when the network alone was as good
        from .adaptation.auto import NOT_AHEAD

        reason = str(guard.get("reason", ""))
        if NOT_AHEAD not in reason:
            return None
        return Finding("medium", f"auto's choice, {guard['kept']}, is not ahead of the network without the expert",
                       "Cross-fitted log-loss on unseen calibration trials: the network without the expert"
                       + reason.split("; the network without the expert", 1)[-1])
    if guard:
        # `kept` names a model (the adapted chain, "zero-shot", a label-free step); the reason says which won
        if " did not beat " not in str(guard.get("reason", "")):
            return None
        return Finding("info", f"The guard kept the {guard['kept']} model, not the adapted one",
                       "On calibration trials that no compared model was fitted on, adapting did not beat "
                       "it by the margin: " + str(guard.get("reason", "")).split(": ", 1)[-1])
    if not skipped:
        return None
    why = ("The negative-transfer guard compares the adapted model with the zero-shot model on "
           "calibration trials neither was fitted on, and keeps the adapted one only when it is better. "
           f"It did not run here ({skipped}), so the adapted model is used without that check.")
    return Finding("info" if skipped.startswith("no supervised") else "medium", "The guard was skipped", why)


def _patient_findings(meta: dict[str, Any]) -> list[Finding]:
    cal, ad = _calibration(meta), meta.get("adaptation") or {}
    out = _verdict_findings(heldout_score(meta), "held-out")
    held = cal.get("heldout") or {}
    if held.get("mean_normalised_entropy", 0.0) >= UNIFORM_ENTROPY:
        out.append(Finding("medium", "Near-uniform probabilities on the held-out trials",
                           f"The mean top probability is {held['mean_top_probability']:.0%} "
                           f"({len(meta['classes'])} classes): the model is unsure on nearly every trial, "
                           "so its answers rest on small differences."))
    files = cal.get("files") or []
    if files and all(len(f.get("classes") or {}) == 1 for f in files):
        out.append(Finding("high", "One recording per class: a confound",
                           "Each class comes from its own file (whole-file labels, events from consecutive "
                           "windows), so the model can tell the files apart (electrode contact, session, "
                           "drift) rather than the brain states. Record classes interleaved in one session."))
    n_int, n_ch = len(cal.get("interpolated") or []), len(meta["ch_names"])
    if n_int:
        sev = "high" if n_int / n_ch >= 0.5 else "medium" if n_int / n_ch >= 0.25 else "low"
        out.append(Finding(sev, f"{n_int} of {n_ch} model channels were interpolated",
                           f"Missing from the recording: {fmt_list(cal['interpolated'])}. They were "
                           "estimated from their neighbours, so the model sees less real signal than it was "
                           "trained on."))
    if ad.get("new_head"):
        out.append(Finding("medium", "A new head was trained",
                           f"The classes ({fmt_list(meta['classes'])}) differ from the population's, so the "
                           "final layer was learnt from the calibration trials alone, with no zero-shot "
                           "model to compare with."))
    guard = _guard_finding(ad)
    return out + ([guard] if guard else [])


def findings(meta: dict[str, Any]) -> list[Finding]:
    """Every warning for a bundle's ``bundle.json``, the most severe first."""
    if meta.get("adaptation"):
        out = _patient_findings(meta) + _population_findings(meta)
    else:
        score = validation_score(meta)
        out = _population_findings(meta)
        if score and "p_value" in score and score["n"] < 30:
            out.append(_few_trials(score, "validation"))
    return sorted(out, key=lambda f: SEVERITIES.index(f.severity))


# --- sections ---------------------------------------------------------------------------

def _score_sentence(score: dict[str, Any], what: str) -> str:
    if "p_value" not in score:
        return (f"{what} {score['accuracy']:.1%}, chance {score['chance']:.1%} (the number of trials is not "
                "stored: no confidence interval or test)")
    return (f"{what} {score['accuracy']:.1%} ({score['k']} of {score['n']} trials; 95% CI "
            f"{score['ci_low']:.1%} to {score['ci_high']:.1%}) against a chance level of {score['chance']:.1%}, "
            f"{fmt_p(score['p_value'])}")


def verdict(meta: dict[str, Any]) -> tuple[str, str]:
    """A headline and one sentence: is the bundle's score above chance?"""
    patient = bool(meta.get("adaptation"))
    score = heldout_score(meta) if patient else validation_score(meta)
    what = "Held-out accuracy" if patient else "Validation accuracy"
    if score is None:
        n = (meta.get("adaptation") or {}).get("n_calibration_trials")
        return ("No held-out score" if patient else "No validation score",
                f"All {n} trials were used for calibration; nothing was scored on unseen trials."
                if patient else "This population bundle stores no validation accuracy.")
    sentence = _score_sentence(score, what)
    if patient and score.get("balanced_accuracy") is not None:
        sentence += (f". Balanced accuracy {score['balanced_accuracy']:.1%} "
                     f"(chance {score['balanced_chance']:.1%})")
    if "p_value" not in score:
        return ("At chance" if score["accuracy"] - score["chance"] < 0.05 else "Score without a test"), sentence
    return ("Above chance" if score["p_value"] < ALPHA else "Not above chance"), sentence + "."


def _verdict_html(meta: dict[str, Any], items: list[Finding]) -> str:
    headline, sentence = verdict(meta)
    worst = items[0].severity if items else "none"
    colour = {"high": "danger", "medium": "warning"}.get(worst, "success")
    if headline == "Above chance" and worst == "high":
        headline = "Above chance, but see the warnings"
    rows = "".join(f"<li class='list-group-item'><span class='badge bg-{_BOOTSTRAP[f.severity]} me-2'>"
                   f"{f.severity}</span><strong>{html.escape(f.title)}</strong><br>"
                   f"<small>{html.escape(f.detail)}</small></li>" for f in items)
    warnings = (f"<h5 class='mt-3'>Warnings ({len(items)})</h5><ul class='list-group'>{rows}</ul>"
                if items else "<p class='mt-3'>No warnings.</p>")
    return (f"<div class='alert alert-{colour}' role='alert'><h4 class='alert-heading'>{html.escape(headline)}"
            f"</h4><p class='mb-0'>{html.escape(sentence)}</p></div>{warnings}")


def _heldout_html(meta: dict[str, Any]) -> str:
    score, held = heldout_score(meta), _calibration(meta).get("heldout") or {}
    if score is None:
        return "<p>Unavailable: no trial was held out.</p>"
    rows = [("accuracy", f"{score['accuracy']:.1%} ({score['k']} of {score['n']})"),
            ("95% confidence interval (Wilson)", f"{score['ci_low']:.1%} to {score['ci_high']:.1%}"),
            ("chance level", f"{score['chance']:.1%}" + (" (most frequent held-out class)" if score["stored"]
                                                        else " (1 / number of classes)")),
            ("test against chance (one-sided binomial)", fmt_p(score["p_value"])),
            ("balanced accuracy", f"{score['balanced_accuracy']:.1%} (chance {score['balanced_chance']:.1%})"
             if score.get("balanced_accuracy") is not None else None)]
    if held:
        rows.append(("mean top probability", f"{held['mean_top_probability']:.0%}"))
    out = _table(rows)
    if held:
        cm = held["confusion"]
        recall = [(c, f"{cm[i][i] / sum(cm[i]):.0%}" if sum(cm[i]) else "no held-out trials",
                   f"{cm[i][i]} of {sum(cm[i])}") for i, c in enumerate(held["classes"])]
        out += "<h5>Recall per class</h5>" + _table(recall, ("class", "recall", "correct"))
    else:
        out += "<p>The confusion matrix is not stored in this bundle.</p>"
    return out


def calibration_statement(meta: dict[str, Any]) -> str:
    """The calibration used, said once: trials x length = seconds, over M minutes, from which files."""
    cal, ad, recipe = _calibration(meta), meta.get("adaptation") or {}, meta["recipe"]
    n = int(ad.get("n_calibration_trials") or 0)
    length = float(recipe["tmax"]) - float(recipe["tmin"])
    files = cal.get("files") or cal.get("recordings") or []
    used = [files[i] for i in cal.get("calibration_files", range(len(files))) if i < len(files)]
    names = fmt_list([Path(str(f.get("path"))).name for f in used], empty="files not stored")
    minutes = cal.get("calibration_minutes")
    span = f", spanning the first {minutes:.2f} min of recording" if minutes is not None else ""
    rule = f" (rule: {cal['selection']})" if cal.get("selection") else ""
    return f"{n} trials × {length:g} s = {fmt_seconds(n * length)} of EEG{span}{rule}, from {names}."


def _calibration_html(meta: dict[str, Any]) -> str:
    from .bundle import expert_lines

    cal, ad = _calibration(meta), meta.get("adaptation") or {}
    counts = cal.get("calibration_counts")
    guard = ad.get("guard")
    cands = ad.get("candidates") or {}
    rows = [("strategy", ad.get("strategy")),
            *([("auto chose", f"{ad.get('chosen')}, the lowest cross-fitted log-loss on unseen calibration "
                "trials of " + ", ".join(f"{k} {float(v):.3f}" for k, v in cands.items()))] if cands else []),
            ("steps that ran", fmt_list(ad.get("steps"), "none (zero-shot)")),
            *[("expert in the product", line.removeprefix("expert").strip()) for line in expert_lines(meta)],
            ("new head", bool(ad.get("new_head"))),
            ("guard", f"kept the {guard['kept']} model" if guard else f"skipped: {ad.get('guard_skipped')}"
             if ad.get("guard_skipped") else "not run"),
            ("trials per class", counts if counts else "not stored"),
            ("held-out trials", cal.get("n_heldout_trials")),
            ("trials dropped (overlap a BAD annotation)",
             sum(int(f.get("n_bad_dropped") or 0) for f in cal["files"]) if cal.get("files") else None),
            ("device", ad.get("device")), ("adaptation time", fmt_seconds(float(ad.get("seconds") or 0)))]
    return f"<p class='lead'>{html.escape(calibration_statement(meta))}</p>" + _table(rows)


def confusion_figure(held: dict[str, Any]) -> Figure:
    """The held-out confusion matrix normalised by row (each true class's recall on the diagonal)."""
    import numpy as np
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    cm = np.asarray(held["confusion"], dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(held["classes"])
    side = min(2.0 + 0.6 * k, 7.0)
    fig = Figure(figsize=(side + 0.6, side), layout="constrained")
    ax = fig.subplots()
    ConfusionMatrixDisplay(norm, display_labels=held["classes"]).plot(
        ax=ax, cmap="Blues", values_format=".0%", colorbar=False, im_kw={"vmin": 0, "vmax": 1})
    ax.set(xlabel="predicted class", ylabel="true class", title="share of each true class")
    return fig


def curve_figure(history: dict[str, Any], title: str) -> Figure | None:
    """Loss and accuracy per epoch (train and validation), or ``None`` without epochs."""
    from matplotlib.figure import Figure

    epochs = history.get("epochs") or []
    if not epochs:
        return None
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    x = [e["epoch"] for e in epochs]
    for ax, key in zip(fig.subplots(1, 2), ("loss", "acc")):
        for split in ("train", "val"):
            ys = [e.get(f"{split}_{key}") for e in epochs]
            if any(y is not None for y in ys):
                ax.plot(x, [math.nan if y is None else y for y in ys],
                        label="training" if split == "train" else "validation")
        if history.get("best_epoch") is not None:
            ax.axvline(history["best_epoch"], color="grey", ls=":", label="kept")
        ax.set(xlabel="epoch", ylabel="cross-entropy" if key == "loss" else "accuracy")
        ax.legend()
    fig.suptitle(title)
    return fig


def _training_text(history: dict[str, Any]) -> str:
    epochs = history.get("epochs") or []
    if epochs:
        return (f"{len(epochs)} epochs; the weights of epoch {history.get('best_epoch')} were kept"
                + (" (stopped early)." if history.get("stopped_early") else "."))
    if history.get("iterations") is not None:
        # A full-batch solver (Newton or L-BFGS on the head) has no epochs to plot.
        return (f"No epoch-by-epoch curve: the head was fitted with "
                f"{_SOLVERS.get(str(history.get('solver')), 'a full-batch solver')} in {history['iterations']} "
                f"iterations, final objective {fmt_value(history.get('loss'))}.")
    return "Nothing was trained for this strategy."


def sensor_figure(ch_names: list[str], interpolated: list[str]) -> tuple[Figure | None, str]:
    """The model's channels on a standard 10-05 montage, interpolated ones in red.

    Returns
    -------
    fig : Figure | None
        ``None`` when no channel has a standard position.
    note : str
        Which channels could not be placed.
    """
    import mne
    from matplotlib.figure import Figure

    montage = mne.channels.make_standard_montage("standard_1005")
    known = {c.lower(): c for c in montage.ch_names}
    placed = [c for c in ch_names if c.lower() in known]
    missing = [c for c in ch_names if c.lower() not in known]
    note = f"No standard position for {fmt_list(missing)}." if missing else ""
    if not placed:
        return None, note or "No channel to place."
    info = mne.create_info(placed, 100.0, "eeg")
    info.set_montage(montage, match_case=False, on_missing="ignore", verbose="error")
    info["bads"] = [c for c in placed if c in set(interpolated)]  # plot_sensors draws bads in red
    fig = Figure(figsize=(3.2, 3.2), layout="constrained")
    ax = fig.subplots()
    mne.viz.plot_sensors(info, kind="topomap", show_names=True, axes=ax, show=False)
    ax.set_title("red: interpolated" if info["bads"] else "no channel interpolated")
    return fig, note


def _recordings_html(meta: dict[str, Any]) -> str:
    cal = _calibration(meta)
    files = cal.get("files")
    if not files:
        plain = cal.get("recordings") or []
        return _table([(Path(str(r.get("path"))).name, r.get("sha256")) for r in plain], ("file", "SHA-256")) \
            if plain else "<p>No recording is stored in this bundle.</p>"
    rows = [(Path(str(f["path"])).name, f.get("n_trials"), f.get("classes"), f.get("n_bad_dropped", 0),
             f"{f['sfreq']:g} Hz" if f.get("sfreq") else None, f.get("events_from"),
             fmt_list([f"{a} → {b}" for a, b in (f.get("renamed") or {}).items()]),
             fmt_list(f.get("dropped")), fmt_list(f.get("interpolated")), f"{f['minutes']:.1f} min"
             if f.get("minutes") is not None else None)
            for f in files]
    head = ("file", "trials", "trials per class", "dropped (BAD annotation)", "sampling rate", "events from",
            "channels renamed", "channels dropped", "channels interpolated", "length")
    full = "".join(f"<li><code>{html.escape(str(f['path']))}</code> SHA-256 <code>{html.escape(str(f.get('sha256')))}"
                   "</code></li>" for f in files)
    return _table(rows, head) + f"<ul class='small text-break'>{full}</ul>"


def _validation_html(meta: dict[str, Any]) -> str:
    val = (meta.get("provenance") or {}).get("validation") or {}
    if not val.get("subjects"):
        subjects = fmt_list((meta.get("provenance") or {}).get("validation_subjects"), "none")
        return f"<p>Validation subjects: {html.escape(subjects)}. Their separate scores are not stored.</p>"
    chance = max(val["counts"].values()) / sum(val["counts"].values())
    rows = []
    for s, v in val["subjects"].items():
        sc = score_against_chance(v["correct"], v["n"], chance)
        rows.append((s, f"{sc['accuracy']:.1%}", v["n"], f"{sc['ci_low']:.1%} to {sc['ci_high']:.1%}",
                     fmt_p(sc["p_value"])))
    return (f"<p>Chance level {chance:.1%} (most frequent validation class).</p>"
            + _table(rows, ("subject", "accuracy", "trials", "95% CI", "against chance")))


def _provenance_rows(meta: dict[str, Any]) -> list[tuple[str, Any]]:
    prov, cal = meta.get("provenance") or {}, _calibration(meta)
    pop = cal.get("population") or {}
    val = validation_score(meta)
    rows = [("command", cal.get("command") or prov.get("command") or "unavailable (made from Python or "
             "not stored)"),
            ("date", fmt_date(cal.get("created") or prov.get("created")) or "not stored"),
            ("subject", cal.get("subject") if meta.get("adaptation") else fmt_list(prov.get("subjects"))),
            ("model", meta["model"]["name"]), ("classes", meta["classes"]),
            ("dataset", prov.get("dataset") or prov.get("manifest")),
            ("population bundle", pop.get("path") or prov.get("parent") if meta.get("adaptation") else None),
            ("population validation subjects", prov.get("validation_subjects")),
            ("population validation accuracy", _score_sentence(val, "accuracy") if val else None),
            ("pretraining seed", prov.get("seed")), ("pretraining device", prov.get("device")),
            ("versions", prov.get("versions"))]
    return [(k, v) for k, v in rows if v not in (None, "", []) or k in ("date", "command")]


def build_report(meta: dict[str, Any], *, title: str | None = None) -> mne.Report:
    """The trust report of one bundle, from its ``bundle.json`` dict.

    Parameters
    ----------
    meta : dict
        :func:`eegtransfer.bundle.read_meta` of a bundle folder, or ``Bundle.to_meta()``.
    title : str | None

    Returns
    -------
    report : mne.Report
        Sections in this order: verdict and warnings, the score (held-out or validation),
        calibration, training, channels, recordings, provenance.
    """
    import mne

    patient = bool(meta.get("adaptation"))
    kind = "calibration" if patient else "population"
    report = mne.Report(title=title or f"eegtransfer {kind} report", image_format="png", verbose="error")
    add = report.add_html
    add(_verdict_html(meta, findings(meta)), title="Verdict and warnings", tags=("verdict",))
    if patient:
        add(_heldout_html(meta), title="Held-out accuracy", tags=("score",))
        held = _calibration(meta).get("heldout")
        if held:
            report.add_figure(confusion_figure(held), title="Confusion matrix (held-out, normalised)",
                              tags=("score",))
        add(_calibration_html(meta), title="Calibration", tags=("calibration",))
    else:
        add(_validation_html(meta), title="Validation subjects", tags=("score",))
    _add_training(report, meta, kind)
    _add_channels(report, meta)
    if patient:
        add(_recordings_html(meta), title="Recordings", tags=("data",))
    add(_table(_provenance_rows(meta)), title="Provenance", tags=("provenance",))
    return report


def _add_training(report: mne.Report, meta: dict[str, Any], kind: str) -> None:
    history = meta.get("history") or {}
    fig = curve_figure(history, "adaptation training curve" if kind == "calibration" else "learning curves")
    text = html.escape(_training_text(history))
    if fig is None:
        report.add_html(f"<p>{text}</p>", title="Training", tags=("training",))
    else:
        report.add_figure(fig, title="Training", caption=text, tags=("training",))


def _add_channels(report: mne.Report, meta: dict[str, Any]) -> None:
    chans = list(meta["ch_names"])
    interp = list(_calibration(meta).get("interpolated") or [])
    text = (f"{len(interp)} of {len(chans)} model channels interpolated: {fmt_list(interp)}." if interp
            else f"All {len(chans)} model channels were recorded.") + f" Model order: {fmt_list(chans)}."
    fig, note = sensor_figure(chans, interp)
    text = html.escape(f"{text} {note}".strip())
    if fig is None:
        report.add_html(f"<p>{text}</p>", title="Channels", tags=("channels",))
    else:
        report.add_figure(fig, title="Channels", caption=text, tags=("channels",))


# --- writing ----------------------------------------------------------------------------

def render_html(meta: dict[str, Any], *, title: str | None = None) -> str:
    """:func:`build_report` as one self-contained HTML document (figures embedded as PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # figures are made off-screen, never shown
    report = build_report(meta, title=title)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.html"
        report.save(path, open_browser=False, overwrite=True, verbose="error")
        return path.read_text(encoding="utf-8")


def check_report_path(path: str | Path, *, overwrite: bool = False,
                      protect: list[str | Path] | None = None, what: str = "--report") -> Path:
    """Refuse a report path whose folder is missing, that exists (without ``overwrite``), that is not
    ``.html``, or that is inside an input or output bundle. Called before any work is done."""
    from .bundle import check_output_path

    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise EEGTransferError(f"{what} {path}: the report is HTML; name it with .html")
    check_output_path(path, overwrite=overwrite, protect=list(protect or []), what=what)  # folder, existence
    return path


def write_report(meta: dict[str, Any], path: str | Path, *, overwrite: bool = False) -> Path:
    """Render the report of ``meta`` and write it atomically (a temporary sibling, then a rename).

    The parent folder must exist: a mistyped folder is an error rather than a new folder.
    """
    from .bundle import check_output_path, write_file_atomic

    path = Path(path)
    check_output_path(path, overwrite=overwrite, what="report")  # its folder exists; no silent replace
    text = render_html(meta)
    return write_file_atomic(path, text, overwrite=True)


def report_of(bundle: str | Path | Bundle) -> mne.Report:
    """The report of a bundle folder or a :class:`~eegtransfer.bundle.Bundle`, for a notebook.

    Examples
    --------
    >>> report_of("subject-01").save("subject-01.html", open_browser=False)  # doctest: +SKIP
    """
    from .bundle import read_meta

    meta = read_meta(bundle) if isinstance(bundle, str | os.PathLike) else bundle.to_meta()
    return build_report(meta)
