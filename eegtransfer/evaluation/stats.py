"""Paired per-subject statistics for benchmark tables.

Every comparison is paired over the same subjects (one score per subject and method, the
same calibration and test trials): a Wilcoxon signed-rank test (exact for small ``n``), the
mean difference with its spread, and the matched-pairs rank-biserial correlation as the
effect size (+1: the first method wins on every subject, -1: loses on every subject).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def paired_comparison(a: pd.Series, b: pd.Series) -> dict[str, Any]:
    """Compare two methods' per-subject scores, paired by index (subject).

    Parameters
    ----------
    a, b : pandas.Series
        Scores indexed by subject; only subjects with a finite score in both count.

    Returns
    -------
    dict
        ``n``, ``mean_diff``, ``std_diff``, ``wins``, ``ties``, ``losses``, ``p``
        (two-sided Wilcoxon signed-rank; NaN below 2 non-zero differences) and
        ``effect`` (rank-biserial correlation).
    """
    from scipy.stats import rankdata, wilcoxon

    both = pd.concat([a.rename("a"), b.rename("b")], axis=1).dropna()
    d = (both["a"] - both["b"]).to_numpy(dtype=float)
    out: dict[str, Any] = {"n": int(len(d)), "mean_diff": float(d.mean()) if len(d) else float("nan"),
                           "std_diff": float(d.std(ddof=1)) if len(d) > 1 else float("nan"),
                           "wins": int((d > 0).sum()), "ties": int((d == 0).sum()),
                           "losses": int((d < 0).sum()), "p": float("nan"), "effect": float("nan")}
    nz = d[d != 0]
    if len(nz) >= 2:
        out["p"] = float(wilcoxon(nz).pvalue)
        ranks = rankdata(np.abs(nz))
        out["effect"] = float((ranks[nz > 0].sum() - ranks[nz < 0].sum()) / ranks.sum())
    elif len(nz) == 1:
        out["effect"] = float(np.sign(nz[0]))
    return out


def per_subject(results: pd.DataFrame, *, cell: dict[str, Any], score: str = "accuracy") -> pd.DataFrame:
    """One row per subject, one column per method, for the rows of ``results`` in ``cell``.

    ``results`` is the tidy per-subject table (columns ``subject``, ``method``, ``score`` and the
    keys of ``cell``).
    """
    sel = results
    for key, value in cell.items():
        sel = sel[sel[key] == value]
    return sel.pivot_table(index="subject", columns="method", values=score, aggfunc="first")


def format_p(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def _fmt(mean: float, std: float) -> str:
    return "n/a" if not np.isfinite(mean) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def _window_name(w: str) -> str:
    """A column's name: ``"2"`` is minutes, ``"run"`` the first run, anything else as given."""
    if w == "run":
        return "first run"
    try:
        float(w)
    except ValueError:
        return w
    return f"{w} min"


def benchmark_markdown(results: pd.DataFrame, *, reference: str, alpha: float = 0.05,
                       harm_points: float = 5.0, primary: str | None = None, primary_label: str = "default") -> str:
    """The tables of a benchmark, all made from its per-subject results.

    Parameters
    ----------
    results : pandas.DataFrame
        One row per subject, ``window`` and ``method``, with ``accuracy`` and ``family``
        (``"ours"``, ``"baseline"`` or ``"reference"``).
    reference : str
        The method every method is also compared with (zero-shot in the loso runner).
    alpha : float
        Level of the paired tests; ours is bold only where it beats both the reference and the
        best baseline at this level.
    harm_points : float
        A subject more than this many points below its ``reference`` accuracy counts as harmed.
    primary : str | None
        The method users get by default (``auto`` in the loso runner): its per-subject
        differences are listed beside those of the best of ours by mean.
    primary_label : str
        What ``primary`` is called there.

    Returns
    -------
    text : str
        Markdown: mean ± std with n per cell; per window, every method against the reference
        and against the best baseline (named), with Wilcoxon p, effect size and wins/ties/losses;
        every method of ours with the subjects it harms; the per-subject differences of
        ``primary`` and of the best of ours.
    """
    windows = list(dict.fromkeys(results["window"].astype(str)))
    fam = results.drop_duplicates("method").set_index("method")["family"]
    order = sorted(fam.index, key=lambda m: (["reference", "ours", "baseline"].index(fam[m]), m))
    wide = {w: per_subject(results.assign(window=results["window"].astype(str)), cell={"window": w})
            for w in windows}
    best_base = {w: wide[w][[m for m in wide[w] if fam[m] == "baseline"]].mean().idxmax() for w in windows}
    tests = {w: {m: (paired_comparison(wide[w][m], wide[w][reference]),
                     paired_comparison(wide[w][m], wide[w][best_base[w]])) for m in wide[w]} for w in windows}
    lines = ["Accuracy (%) on the later runs, mean ± std over subjects (n in brackets). **Bold**: ours, "
             f"above both {reference} and the best baseline of its column by a paired Wilcoxon test at p < {alpha}.",
             "", "| method | family | " + " | ".join(_window_name(w) for w in windows) + " |",
             "|---|---|" + "---|" * len(windows)]
    for m in order:
        cells = []
        for w in windows:
            col = wide[w].get(m, pd.Series(dtype=float)).dropna()
            text = f"{_fmt(col.mean(), col.std())} ({len(col)})" if len(col) else "n/a"
            z, b = tests[w].get(m, ({"p": np.nan}, {"p": np.nan}))
            win = (fam[m] == "ours" and z["p"] < alpha and b["p"] < alpha and z["mean_diff"] > 0
                   and b["mean_diff"] > 0)
            cells.append(f"**{text}**" if win else text)
        lines.append(f"| {m} | {fam[m]} | " + " | ".join(cells) + " |")
    for w in windows:
        lines += ["", f"### {_window_name(w)}: paired differences (points), best baseline "
                  f"= {best_base[w]}", "",
                  f"| method | n | vs {reference}: mean diff, p, effect, W/T/L | vs {best_base[w]}: mean diff, p, "
                  "effect, W/T/L |", "|---|---|---|---|"]
        for m in order:
            if m == reference:
                continue
            z, b = tests[w][m]
            lines.append(f"| {m} | {z['n']} | " + " | ".join(
                f"{100 * t['mean_diff']:+.1f}, p={format_p(t['p'])}, r={t['effect']:+.2f}, "
                f"{t['wins']}/{t['ties']}/{t['losses']}" for t in (z, b)) + " |")
    lines += ["", _harm_lines(wide, fam, reference, windows, harm_points, primary, primary_label)]
    return "\n".join(lines)


def harmed_list(diff: pd.Series, harm_points: float) -> str:
    """The subjects more than ``harm_points`` below the reference, as ``"2: -6.2, 8: -9.4"`` or ``"none"``.

    ``diff`` is in points, indexed by subject; the margin absorbs rounding (a drop of exactly
    ``harm_points`` is not harm).
    """
    return ", ".join(f"{s}: {v:+.1f}" for s, v in diff.items() if v < -harm_points - 1e-9) or "none"


def _harm_lines(wide: dict[str, pd.DataFrame], fam: pd.Series, reference: str, windows: list[str],
                harm_points: float, primary: str | None = None, primary_label: str = "default") -> str:
    """Who each method of ours harms, then per subject ``primary`` and the best of ours minus the reference.

    Every method is listed, not only the best by mean: a reader looks for the harm of the
    method they will run, and the best by mean is chosen on these very test trials.
    """
    ours = sorted(m for m in fam.index if fam[m] == "ours" and all(m in wide[w] for w in windows))
    if not ours:
        return ""
    diff = {w: 100 * wide[w][ours].sub(wide[w][reference], axis=0) for w in windows}
    rows = [f"Subjects more than {harm_points:g} points below {reference} (the difference in points):", "",
            "| method | " + " | ".join(_window_name(w) for w in windows) + " |", "|---|" + "---|" * len(windows)]
    for m in ours:
        rows.append(f"| {m} | " + " | ".join(harmed_list(diff[w][m], harm_points) for w in windows) + " |")
    rows += ["", f"| window | method | per-subject difference to {reference} (points) |", "|---|---|---|"]
    for w in windows:
        named: dict[str, list[str]] = {primary: [primary_label]} if primary in diff[w] else {}
        named.setdefault(wide[w][ours].mean().idxmax(), []).append("best of ours by mean")
        for m, what in named.items():
            rows.append(f"| {_window_name(w)} | {m} ({'; '.join(what)}) | "
                        + ", ".join(f"{s}: {v:+.0f}" for s, v in diff[w][m].items()) + " |")
    return "\n".join(rows)
